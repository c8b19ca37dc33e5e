"""The named random streams (relidar.core.seeds) against the literal seed sequences their call sites
used before: a changed tag or key order would change every recorded number."""

from __future__ import annotations

import numpy as np
import pytest

from relidar.core.seeds import Purpose, stream

SEED = 7

# Each purpose with example keys and the entropy list its call site used to spell out.
LITERAL = {
    Purpose.ORDER: ((3,), [SEED, 3, 0x0D15]),
    Purpose.SAMPLE: ((3, 11), [SEED, 3, 11, 0x5A4E]),
    Purpose.CLUSTER: ((11,), [SEED, 11, 0xC1A5]),
    Purpose.BATCH: ((3, 5, 1), [SEED, 3, 5, 1, 0xBA7C]),
    Purpose.PROBE: ((11,), [SEED, 11, 0x9B0E]),
    Purpose.FINETUNE: ((), [SEED, 0x9B0E, 1]),
    Purpose.GAP: ((11,), [SEED, 11, 0x6A9]),
    Purpose.BALANCE: ((), [SEED, 0xBA1]),
    Purpose.ORACLE: ((42,), [SEED, 42, 0x0AC1]),
    Purpose.SUN: ((), [SEED, 0x50A]),
    Purpose.SWEEP: ((9,), [SEED, 9, 0xF7A3]),
    Purpose.BLOCK: ((2**32 - 1,), [SEED, 2**32 - 1, 0x5C3E]),
}


def _draw(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 2**63, 8)


def test_every_purpose_has_a_literal_reference() -> None:
    assert set(LITERAL) == set(Purpose)


@pytest.mark.parametrize("purpose", list(Purpose), ids=lambda p: p.name)
def test_stream_is_the_old_seed_sequence(purpose: Purpose) -> None:
    keys, entropy = LITERAL[purpose]
    expected = np.random.default_rng(np.random.SeedSequence(entropy))
    np.testing.assert_array_equal(_draw(stream(SEED, purpose, *keys)), _draw(expected))


def test_purposes_give_distinct_streams() -> None:
    assert len(Purpose.__members__) == len({p.value for p in Purpose})  # no alias hides a duplicated tag
    draws = {tuple(_draw(stream(SEED, p, 3))) for p in Purpose}
    assert len(draws) == len(Purpose)
    # the keys and the seed select the stream too
    assert not np.array_equal(_draw(stream(SEED, Purpose.GAP, 3)), _draw(stream(SEED, Purpose.GAP, 4)))
    assert not np.array_equal(_draw(stream(SEED, Purpose.GAP, 3)), _draw(stream(SEED + 1, Purpose.GAP, 3)))
