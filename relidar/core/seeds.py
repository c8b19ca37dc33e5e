"""Named random streams: every random draw of training, evaluation and the synthetic world comes from
``(seed, purpose, keys)``.

Randomness is stateless: a draw is a function of the run's seed, what it is for (a :class:`Purpose`)
and where it happens (epoch, frame, step...), never of how many draws came before. Resumed runs and
data-parallel ranks therefore reproduce every draw from counters alone, and two purposes never share
a stream. Each purpose's suffix is the tag its call site used before this module existed, so the
streams (and every recorded number) are unchanged: the entropy is ``[seed, *keys, *suffix]``.
"""

from __future__ import annotations

from enum import Enum, unique

import numpy as np


@unique
class Purpose(Enum):
    """What a random stream draws; the value is the suffix appended to ``[seed, *keys]``."""

    ORDER = (0x0D15,)  # the frame order of an epoch; keys (epoch,)
    SAMPLE = (0x5A4E,)  # one scan's augmentation and pair draw; keys (epoch, frame)
    CLUSTER = (0xC1A5,)  # k-means of one scan's teacher features; keys (frame,)
    BATCH = (0xBA7C,)  # each scan's share of a batch-scope step's pairs; keys (epoch, step in epoch, rank)
    PROBE = (0x9B0E,)  # the linear probe's labelled points of one scan; keys (frame,)
    FINETUNE = (0x9B0E, 1)  # the fine-tuning loop's point draws; no keys
    GAP = (0x6A9,)  # the structural gap's pairs of one held-out scan; keys (frame,)
    BALANCE = (0xBA1,)  # the class-balanced pick over the pooled held-out pairs; no keys
    ORACLE = (0x0AC1,)  # the oracle control's batch of one step; keys (step,)
    SUN = (0x50A,)  # the synthetic world's sun direction; no keys (seed: the world's)
    SWEEP = (0xF7A3,)  # one synthetic sweep's sensor noise and dynamic objects; keys (sweep index,)
    BLOCK = (0x5C3E,)  # the objects of one street block; keys (block index mod 2**32,)


def stream(seed: int, purpose: Purpose, *keys: int) -> np.random.Generator:
    """The generator of ``purpose`` at ``keys`` (epoch, frame, step...) for the run seeded ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys, *purpose.value]))
