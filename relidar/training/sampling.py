"""Which point-pixel pairs a training step uses: N over the whole batch (the literature's way) or N per
scan; uniform or class-balanced.

Batch scope draws ``pairs_per_batch`` pairs uniformly without replacement from the union of the
batch's pairs, as PPKT/SLidR draw their ``num_matches`` = 4096 (SLidR ``config/slidr_minkunet.yaml``;
ST-SLidR ``config/pretrain/nuscenes/slidr/base_slidr.yaml``). It is done in two stages that give
exactly that distribution: how many pairs each scan gives is one multivariate hypergeometric draw
over the scans' pair counts, then each scan draws its count (uniformly, or balanced as below).

Driving scenes are mostly road, building and vegetation; uniform draws let those dominate every
relation matrix (the class imbalance the relational-distillation paper names). Without labels,
the teacher's own features tell the classes apart: ``balanced`` clusters them with k-means and
draws the same number of pairs from every cluster (the leftover quota of small clusters goes to
the others), without replacement.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from relidar.core.config import StrictModel


class SamplingConfig(StrictModel):
    scope: Literal["batch", "scan"] = Field(
        "batch", description="batch: N pairs drawn over the whole batch, one loss over them (PPKT/SLidR/ScaLR); "
                             "scan: N pairs per scan, loss per scan, averaged")
    pairs_per_batch: int = Field(4096, ge=2, description="scope batch: pairs drawn over the batch per step "
                                                          "(SLidR/ST-SLidR num_matches = 4096); per process under DDP")
    pairs_per_scan: int = Field(2048, ge=2, description="scope scan: pairs drawn from each scan per step")
    mode: Literal["uniform", "balanced"] = Field("uniform", description="uniform draws, or equal draws per teacher-feature cluster")
    clusters: int = Field(16, ge=1, description="balanced: k-means clusters of the teacher features")
    kmeans_iterations: int = Field(10, ge=1)


def kmeans(features: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster ids [M] of rows of ``features`` under spherical k-means (cosine), k-means++ seeding.

    Runs on at most 4096 rows for the centres, then assigns every row; a scan has tens of thousands
    of pairs and the centres do not need them all.
    """
    m = features.shape[0]
    k = min(k, m)
    if k <= 1:
        return np.zeros(m, dtype=np.int64)
    x = features.astype(np.float32, copy=False)
    fit = x[rng.choice(m, size=min(m, 4096), replace=False)] if m > 4096 else x
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    centres[0] = fit[rng.integers(fit.shape[0])]
    dist = 1.0 - fit @ centres[0]
    for c in range(1, k):
        w = np.maximum(dist, 0.0).astype(np.float64) ** 2  # D² seeding (k-means++)
        total = w.sum()
        idx = rng.choice(fit.shape[0], p=w / total) if total > 0 else rng.integers(fit.shape[0])
        centres[c] = fit[idx]
        dist = np.minimum(dist, 1.0 - fit @ centres[c])
    for _ in range(iterations):
        assign = np.argmax(fit @ centres.T, axis=1)
        for c in range(k):
            members = fit[assign == c]
            if len(members):
                mean = members.sum(axis=0)
                centres[c] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return np.argmax(x @ centres.T, axis=1).astype(np.int64)


def balanced_draw(groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``min(n, len(groups))`` distinct indices with as equal a count per group as the group sizes allow."""
    m = groups.shape[0]
    if n >= m:
        return rng.permutation(m)
    ids, counts = np.unique(groups, return_counts=True)
    quota = np.zeros(len(ids), dtype=np.int64)
    remaining = n
    open_ = counts > 0
    # Water-filling: share what is left equally among groups that still have members.
    while remaining > 0:
        slots = np.flatnonzero(open_)
        share = remaining // len(slots)
        if share == 0:
            extra = rng.choice(slots, size=remaining, replace=False)
            quota[extra] += 1
            break
        add = np.minimum(share, counts[slots] - quota[slots])
        quota[slots] += add
        remaining -= int(add.sum())
        open_ = quota < counts
    chosen = []
    for g, q in zip(ids, quota):
        if q:
            members = np.flatnonzero(groups == g)
            chosen.append(rng.choice(members, size=int(q), replace=False))
    return rng.permutation(np.concatenate(chosen))


def batch_counts(num_pairs: list[int] | np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """How many of ``n`` pairs drawn without replacement from the union of the scans' pairs fall in each
    scan (multivariate hypergeometric); every pair of the batch when there are no more than ``n``."""
    counts = np.asarray(num_pairs, dtype=np.int64)
    if counts.sum() <= n:
        return counts.copy()
    return rng.multivariate_hypergeometric(counts, n).astype(np.int64)


def sample_pairs(num_pairs: int, config: SamplingConfig, rng: np.random.Generator,
                 clusters: np.ndarray | None = None, n: int | None = None) -> np.ndarray:
    """Indices (into a scan's pairs) of the pairs to train on: ``n`` of them (default
    ``pairs_per_scan``); ``clusters`` [num_pairs] for balanced mode."""
    n = config.pairs_per_scan if n is None else n
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if config.mode == "uniform":
        if num_pairs <= n:
            return rng.permutation(num_pairs)
        return rng.choice(num_pairs, size=n, replace=False)
    if clusters is None or clusters.shape != (num_pairs,):
        raise ValueError("sampling.mode 'balanced' needs a cluster id per pair (see kmeans)")
    return balanced_draw(clusters, n, rng)
