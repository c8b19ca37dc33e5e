"""Pair sampling: counts, distinctness, cluster balance; k-means recovers separated clusters."""

from __future__ import annotations

import numpy as np

from relidar.training.sampling import SamplingConfig, balanced_draw, batch_counts, kmeans, sample_pairs


def test_uniform_draws_distinct_pairs() -> None:
    rng = np.random.default_rng(0)
    idx = sample_pairs(1000, SamplingConfig(pairs_per_scan=100), rng)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100 and idx.max() < 1000
    assert sorted(sample_pairs(50, SamplingConfig(pairs_per_scan=100), rng).tolist()) == list(range(50))


def test_balanced_equal_counts_and_spill_over() -> None:
    groups = np.array([0] * 900 + [1] * 90 + [2] * 10)
    rng = np.random.default_rng(0)
    idx = balanced_draw(groups, 30, rng)
    assert len(set(idx.tolist())) == 30
    assert np.bincount(groups[idx]).tolist() == [10, 10, 10]
    # group 2 has only 10: its unused quota goes to the others equally
    idx = balanced_draw(groups, 90, rng)
    assert np.bincount(groups[idx]).tolist() == [40, 40, 10]
    idx = balanced_draw(groups, 91, rng)
    counts = np.bincount(groups[idx]).tolist()
    assert sum(counts) == 91 and counts[2] == 10 and sorted(counts[:2]) == [40, 41]


def test_kmeans_separates_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4]
    truth = rng.integers(0, 4, size=2000)
    x = centres[truth] + 0.05 * rng.standard_normal((2000, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    found = kmeans(x.astype(np.float32), 4, 10, np.random.default_rng(1))
    # every found cluster is pure: a bijection between found and true ids
    pairs = set(zip(found.tolist(), truth.tolist()))
    assert len(pairs) == 4


def test_balanced_sampling_evens_out_rare_features() -> None:
    rng = np.random.default_rng(0)
    truth = np.array([0] * 5000 + [1] * 100)
    x = np.eye(4)[truth] + 0.05 * rng.standard_normal((5100, 4))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cfg = SamplingConfig(pairs_per_scan=200, mode="balanced", clusters=2)
    clusters = kmeans(x.astype(np.float32), 2, 10, rng)
    idx = sample_pairs(5100, cfg, rng, clusters)
    assert np.bincount(truth[idx], minlength=2).tolist() == [100, 100]
    uniform = sample_pairs(5100, SamplingConfig(pairs_per_scan=200), rng)
    assert np.bincount(truth[uniform], minlength=2)[1] < 20


def test_batch_counts_match_a_uniform_draw_over_the_union() -> None:
    sizes = np.array([5000, 1000, 200, 0])
    n = 600
    rng = np.random.default_rng(0)
    draws = np.stack([batch_counts(sizes, n, rng) for _ in range(3000)])
    assert (draws.sum(axis=1) == n).all() and (draws <= sizes).all() and (draws[:, 3] == 0).all()
    # the reference: draw n distinct pairs from the concatenated pairs, count per scan
    owner = np.repeat(np.arange(4), sizes)
    ref = np.stack([np.bincount(owner[rng.choice(len(owner), n, replace=False)], minlength=4) for _ in range(3000)])
    np.testing.assert_allclose(draws.mean(axis=0), ref.mean(axis=0), atol=1.5)
    np.testing.assert_allclose(draws.std(axis=0), ref.std(axis=0), rtol=0.1, atol=0.2)
    np.testing.assert_allclose(draws.mean(axis=0), n * sizes / sizes.sum(), atol=1.5)
    # fewer pairs than asked: all of them
    assert batch_counts([3, 4], 100, rng).tolist() == [3, 4]
    assert sample_pairs(10, SamplingConfig(), rng, n=0).size == 0
