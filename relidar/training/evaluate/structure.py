"""Structural measures of the student's space against the teacher's (numpy): the paper's gap, mean over
i≠j of ``|KKᵀ - QQᵀ|`` (the relational loss's intra term: relational distillation minimises it by
construction), and measures no loss optimises: linear CKA of K and Q, the gap on pairs drawn equally
from every ground-truth class (:func:`balanced_pick`: no loss sees labels), and the k-NN label agreement
(the share of a point's k nearest neighbours in a feature space that carry its label, class-balanced)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from relidar.core.rows import unit_rows


@dataclass(frozen=True)
class PairStructure:
    """The structure of one set of pairs: the paper's gap and linear CKA (:func:`structural_gap`)."""

    gap: float
    cka: float


def structural_gap(k: np.ndarray, q: np.ndarray) -> PairStructure:
    """Mean over i≠j of |KKᵀ - QQᵀ| (rows normalised) and linear CKA between K and Q."""
    kn, qn = unit_rows(np.array(k, dtype=np.float64)), unit_rows(np.array(q, dtype=np.float64))
    n = kn.shape[0]
    diff = np.abs(kn @ kn.T - qn @ qn.T)
    gap = float((diff.sum() - np.trace(diff)) / max(n * (n - 1), 1))
    return PairStructure(gap=gap, cka=linear_cka(kn, qn))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019): ||Xcᵀ Yc||²_F / (||Xcᵀ Xc||_F ||Ycᵀ Yc||_F), columns centred."""
    xc = (x - x.mean(axis=0)).astype(np.float64)
    yc = (y - y.mean(axis=0)).astype(np.float64)
    num = np.linalg.norm(xc.T @ yc) ** 2
    den = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(num / den) if den > 0 else float("nan")


def balanced_pick(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``per_class`` indices of each label >= 0, drawn without replacement (sorted)."""
    chosen = []
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        chosen.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def knn_label_agreement(features: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Class-balanced share of each row's ``k`` nearest other rows (cosine) that carry its label: per
    class, the mean share over its rows; then the mean over classes. Classes with no more than ``k``
    rows are left out (their share could not reach 1); NaN when none is left."""
    classes, counts = np.unique(labels, return_counts=True)
    if not (counts > k).any():
        return float("nan")
    f = unit_rows(np.array(features, dtype=np.float64))
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    neighbours = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    share = (labels[neighbours] == labels[:, None]).mean(axis=1)
    return float(np.mean([share[labels == c].mean() for c, n in zip(classes, counts) if n > k]))
