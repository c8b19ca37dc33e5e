"""Distillation losses between student features K and teacher features Q of N point-pixel pairs.

Every loss takes K [N, D] and Q [N, D] (row i of each belongs to pair i), normalises the rows and
returns a scalar. ``batch_loss`` applies it in one of two scopes:

* ``batch`` (the default, as the literature does it): one loss over all pairs drawn from the batch,
  so a point's negatives (contrastive) and relations (relational) include other scans' pixels.
  PPKT/SLidR draw their ``num_matches`` = 4096 pairs from the pairs of the whole batch and apply the
  loss to them at once (SLidR ``pretrain/lightning_trainer.py``, ``loss``: ``np.random.choice`` over
  ``pairing_points`` of the batch); ScaLR concatenates the pairs of every scan of the batch before its
  loss (``utils/distiller.py``). Under data parallelism each process applies it to its share, as
  SLidR and ST-SLidR do ("each loss is applied independently on each GPU").
* ``scan``: the loss of each scan's pairs alone, averaged over the batch's scans (an ablation).

* contrastive (PPKT / SLidR): cross-entropy of ``K Qᵀ / τ`` against the diagonal -- each point must
  pick its own pixel among the scan's pixels; optionally K and Q are first averaged within each
  superpixel (SLidR), so that points of one object are not pushed away from each other's pixels.
* similarity (ScaLR / OpenScene): mean of ``1 - cos(k_i, q_i)``.
* relational (Mahmoud, Harakeh, Waslander, ECCV 2024, arXiv 2409.00845): intra-modal mean over
  i≠j of ``|KKᵀ - QQᵀ|`` and cross-modal mean over i of ``|k_i·q_i - 1|`` (the diagonal of
  ``|KQᵀ - QQᵀ|``, since ``q_i·q_i = 1``) plus mean over i≠j of ``|KQᵀ - QQᵀ|``. The paper sums
  them (L = L_intra + L_cross); each of the three terms has its own weight here, so that a term can
  be ablated (``intra_weight``, ``cross_diag_weight``, ``cross_offdiag_weight``, all 1 by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from relidar.core.config import StrictModel
from relidar.core.errors import RelidarError

LossName = Literal["contrastive", "similarity", "relational"]
LOSS_NAMES: tuple[str, ...] = ("contrastive", "similarity", "relational")


class LossError(RelidarError, ValueError):
    """Inputs a loss cannot take; the message names the argument."""


class LossConfig(StrictModel):
    """Which loss, and its knobs. ``type: combined`` sums ``weights[name] * loss(name)``."""

    type: Literal["contrastive", "similarity", "relational", "combined"] = "relational"
    weights: dict[LossName, float] = Field(
        default_factory=dict, description="per-loss weights, used when type is 'combined'"
    )
    temperature: float = Field(0.07, gt=0.0, description="softmax temperature of the contrastive loss")
    superpixel_pooling: bool = Field(
        False, description="contrastive: average K and Q within each superpixel before the loss (SLidR)"
    )
    intra_weight: float = Field(1.0, ge=0.0, description="relational: weight of the intra-modal term, mean_i≠j |KKᵀ-QQᵀ|")
    cross_diag_weight: float = Field(1.0, ge=0.0, description="relational: weight of the cross-modal diagonal, mean_i |k_i·q_i-1|")
    cross_offdiag_weight: float = Field(1.0, ge=0.0, description="relational: weight of the cross-modal off-diagonal, "
                                                                 "mean_i≠j |KQᵀ-QQᵀ|")

    @model_validator(mode="after")
    def _check(self) -> "LossConfig":
        if self.type == "relational" and self.intra_weight + self.cross_diag_weight + self.cross_offdiag_weight == 0:
            raise ValueError("relational: at least one of intra_weight, cross_diag_weight, cross_offdiag_weight must be > 0")
        if self.type == "combined":
            if not self.weights or not any(w > 0 for w in self.weights.values()):
                raise ValueError("type 'combined' needs weights, e.g. {relational: 1.0, similarity: 0.5}")
            if any(w < 0 for w in self.weights.values()):
                raise ValueError("weights must be >= 0")
        return self

    def terms(self) -> dict[str, float]:
        """name -> weight of every loss that contributes."""
        if self.type == "combined":
            return {name: float(w) for name, w in self.weights.items() if w > 0}
        return {self.type: 1.0}


def _check_pair(k: Tensor, q: Tensor) -> None:
    if k.ndim != 2 or q.ndim != 2 or k.shape != q.shape:
        raise LossError(f"K and Q must both be [N, D] of the same shape, got {tuple(k.shape)} and {tuple(q.shape)}")


def _normalise(x: Tensor) -> Tensor:
    return F.normalize(x.float(), dim=1, eps=1e-12)


def _offdiag_mean(m: Tensor) -> Tensor:
    n = m.shape[0]
    if n < 2:
        return m.new_zeros(())
    return (m.sum() - m.diagonal().sum()) / (n * (n - 1))


def pool_superpixels(k: Tensor, q: Tensor, superpixels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of the (normalised) rows of K and of Q within each superpixel id; ids < 0 are dropped."""
    keep = superpixels >= 0
    ids, inverse = torch.unique(superpixels[keep], return_inverse=True)
    kn, qn = _normalise(k[keep]), _normalise(q[keep])
    count = torch.zeros(ids.shape[0], device=k.device, dtype=kn.dtype).index_add_(
        0, inverse, torch.ones_like(inverse, dtype=kn.dtype))
    pk = torch.zeros(ids.shape[0], kn.shape[1], device=k.device, dtype=kn.dtype).index_add_(0, inverse, kn)
    pq = torch.zeros(ids.shape[0], qn.shape[1], device=k.device, dtype=qn.dtype).index_add_(0, inverse, qn)
    return pk / count[:, None], pq / count[:, None]


def contrastive_loss(k: Tensor, q: Tensor, temperature: float = 0.07,
                     superpixels: Tensor | None = None) -> Tensor:
    """InfoNCE: cross-entropy of ``K Qᵀ / τ`` (rows = points, columns = pixels) against the diagonal."""
    _check_pair(k, q)
    if superpixels is not None:
        k, q = pool_superpixels(k, q, superpixels)
    kn, qn = _normalise(k), _normalise(q)
    logits = kn @ qn.T / temperature
    target = torch.arange(kn.shape[0], device=kn.device)
    return F.cross_entropy(logits, target)


def similarity_loss(k: Tensor, q: Tensor) -> Tensor:
    """Mean over pairs of ``1 - cos(k_i, q_i)``."""
    _check_pair(k, q)
    return (1.0 - (_normalise(k) * _normalise(q)).sum(dim=1)).mean()


@dataclass(frozen=True)
class RelationalTerms:
    intra: Tensor  # mean over i≠j of |KKᵀ - QQᵀ|
    cross_diag: Tensor  # mean over i of |k_i·q_i - 1|
    cross_offdiag: Tensor  # mean over i≠j of |KQᵀ - QQᵀ|


def relational_terms(k: Tensor, q: Tensor) -> RelationalTerms:
    _check_pair(k, q)
    kn, qn = _normalise(k), _normalise(q)
    qq = qn @ qn.T
    kq = kn @ qn.T
    return RelationalTerms(
        intra=_offdiag_mean((kn @ kn.T - qq).abs()),
        cross_diag=(kq.diagonal() - 1.0).abs().mean(),
        cross_offdiag=_offdiag_mean((kq - qq).abs()),
    )


def relational_loss(k: Tensor, q: Tensor, intra_weight: float = 1.0, cross_diag_weight: float = 1.0,
                    cross_offdiag_weight: float = 1.0) -> Tensor:
    t = relational_terms(k, q)
    return intra_weight * t.intra + cross_diag_weight * t.cross_diag + cross_offdiag_weight * t.cross_offdiag


def scan_loss(config: LossConfig, k: Tensor, q: Tensor, superpixels: Tensor | None = None) -> dict[str, Tensor]:
    """Every contributing loss of one set of pairs (a scan's, or a whole batch's), unweighted, by name, plus
    ``total`` (weighted sum). ``superpixels`` must be unique over the set (see :func:`batch_superpixels`)."""
    out: dict[str, Tensor] = {}
    total = k.new_zeros((), dtype=torch.float32)
    for name, weight in config.terms().items():
        if name == "contrastive":
            value = contrastive_loss(k, q, config.temperature, superpixels if config.superpixel_pooling else None)
        elif name == "similarity":
            value = similarity_loss(k, q)
        else:
            value = relational_loss(k, q, config.intra_weight, config.cross_diag_weight, config.cross_offdiag_weight)
        out[name] = value
        total = total + weight * value
    out["total"] = total
    return out


def batch_superpixels(superpixels: Tensor, pair_scan: Tensor) -> Tensor:
    """Superpixel ids made unique over a batch (each scan's ids are unique only within it); -1 stays -1."""
    span = int(superpixels.max().item()) + 1 if superpixels.numel() else 1
    return torch.where(superpixels >= 0, pair_scan * span + superpixels, superpixels)


def batch_loss(config: LossConfig, k: Tensor, q: Tensor, pair_scan: Tensor, num_scans: int,
               superpixels: Tensor | None = None, scope: Literal["batch", "scan"] = "batch") -> dict[str, Tensor]:
    """The loss of a batch's pairs; ``pair_scan`` [N] says which scan of the batch each pair is from.

    ``scope="batch"``: one :func:`scan_loss` over all pairs (negatives and relations across scans).
    ``scope="scan"``: the mean over scans of each scan's :func:`scan_loss`. Sets with fewer than two
    pairs are skipped (no relation, no negative); if none is left the result is a zero connected to
    K, so a backward pass still runs in every data-parallel rank.
    """
    _check_pair(k, q)
    if scope == "batch":
        if k.shape[0] < 2:
            zero = k.sum() * 0.0
            return {name: zero for name in (*config.terms(), "total")}
        sp = batch_superpixels(superpixels, pair_scan) if superpixels is not None else None
        return scan_loss(config, k, q, sp)
    per_scan: list[dict[str, Tensor]] = []
    for s in range(num_scans):
        sel = torch.nonzero(pair_scan == s, as_tuple=False).squeeze(1)
        if sel.numel() < 2:
            continue
        sp = superpixels.index_select(0, sel) if superpixels is not None else None
        per_scan.append(scan_loss(config, k.index_select(0, sel), q.index_select(0, sel), sp))
    if not per_scan:
        zero = k.sum() * 0.0
        return {name: zero for name in (*config.terms(), "total")}
    return {name: torch.stack([d[name] for d in per_scan]).mean() for name in per_scan[0]}
