"""The benchmarks' one timing loop and percentile rule (relidar.core.timing): numpy's percentiles, the JSON
key names, warm-up and interleaving. Nothing here asserts a duration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from relidar.core.timing import Timing, percentile, percentiles, time_calls, time_interleaved

SAMPLES = [12.0, 3.5, 7.25, 100.0, 0.5, 9.0, 9.0, 41.0, 2.0, 18.5, 6.0]


@pytest.mark.parametrize("q", [0, 25, 50, 90, 99, 100])
def test_percentile_is_numpys(q: int) -> None:
    assert percentile(SAMPLES, q) == float(np.percentile(SAMPLES, q))


def test_percentiles_give_the_benchmarks_keys() -> None:
    assert percentiles(SAMPLES) == {f"ms_p{q}": float(np.percentile(SAMPLES, q)) for q in (50, 90, 99)}
    latency = percentiles(SAMPLES, (50, 90, 99), "latency_ms")
    assert list(latency) == ["latency_ms_p50", "latency_ms_p90", "latency_ms_p99"]
    assert list(percentiles(SAMPLES, (50, 90), "total_ms")) == ["total_ms_p50", "total_ms_p90"]


def test_no_samples_give_nan_for_every_key() -> None:
    assert math.isnan(percentile([], 50))
    assert all(math.isnan(v) for v in percentiles([], name="latency_ms").values())
    assert math.isnan(Timing(()).min)


def test_timing_summaries() -> None:
    timing = Timing(tuple(SAMPLES))
    assert timing.p50 == float(np.median(SAMPLES)) and timing.min == 0.5
    assert timing.percentiles((90,), "x_ms") == {"x_ms_p90": float(np.percentile(SAMPLES, 90))}


def test_time_calls_warms_up_untimed_and_syncs_around_each_timed_call() -> None:
    events: list[str] = []
    timing = time_calls(lambda: events.append("call"), 3, warmup=2, sync=lambda: events.append("sync"))
    assert len(timing.samples_ms) == 3 and all(ms >= 0 for ms in timing.samples_ms)
    assert events == ["sync", "call", "sync"] * 5


def test_time_interleaved_runs_each_call_once_per_round_in_turn() -> None:
    order: list[str] = []
    rounds: list[tuple[int, int]] = []
    timed = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 2, warmup=1,
                             on_round=lambda done, total: rounds.append((done, total)))
    assert order == ["a", "b"] * 3
    assert rounds == [(1, 3), (2, 3), (3, 3)]
    assert {name: len(t.samples_ms) for name, t in timed.items()} == {"a": 2, "b": 2}
