"""The one timing loop and percentile rule of every benchmark (``relidar bench …`` and the node benchmark).

Numpy only, so the ROS package's benchmark uses it too. Percentiles are numpy's (linear interpolation);
an empty sample gives NaN, so a benchmark that labelled nothing still writes every key. Keys are
``<name>_p<q>`` (``total_ms_p50``, ``latency_ms_p99``), the names the benchmarks' JSON has always used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``samples`` (NaN when there are none)."""
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q)) if len(samples) else float("nan")


def percentiles(samples: Sequence[float], qs: Sequence[int] = (50, 90, 99), name: str = "ms") -> dict[str, float]:
    """``{f"{name}_p{q}": percentile}`` for each ``q``: ``percentiles(latencies, name="latency_ms")``."""
    return {f"{name}_p{q}": percentile(samples, q) for q in qs}


@dataclass(frozen=True)
class Timing:
    """Wall-clock milliseconds of each timed call, in call order."""

    samples_ms: tuple[float, ...]

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def min(self) -> float:
        return min(self.samples_ms) if self.samples_ms else float("nan")

    def percentiles(self, qs: Sequence[int] = (50, 90, 99), name: str = "ms") -> dict[str, float]:
        return percentiles(self.samples_ms, qs, name)


def time_interleaved(calls: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 0,
                     sync: Callable[[], None] | None = None,
                     on_round: Callable[[int, int], None] | None = None) -> dict[str, Timing]:
    """Each call once per round, in turn, so they all see the same machine (its load, clocks, caches):
    ``warmup`` rounds untimed, then ``repeats`` timed. ``sync`` (e.g. ``torch.cuda.synchronize``) runs
    before and after each timed call, so queued GPU work is neither charged to the next call nor left out.
    ``on_round(done, total)`` after every round, warm-up included."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    total = warmup + repeats
    for done in range(total):
        for name, fn in calls.items():
            if sync is not None:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync is not None:
                sync()
            if done >= warmup:
                samples[name].append((time.perf_counter() - t0) * 1e3)
        if on_round is not None:
            on_round(done + 1, total)
    return {name: Timing(tuple(ms)) for name, ms in samples.items()}


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 0,
               sync: Callable[[], None] | None = None) -> Timing:
    """``fn`` called ``warmup`` times untimed, then ``repeats`` times timed (see :func:`time_interleaved`)."""
    return time_interleaved({"": fn}, repeats, warmup, sync)[""]
