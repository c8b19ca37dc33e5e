"""The oracle control: a "student" that knows every point's true class and has one free vector per class.

Trained with a distillation loss against the teacher's features of the training pairs, it shows the
best that loss can do from this teacher when geometry is solved: whatever it still gets wrong
zero-shot comes from the teacher's features and the loss, not from the 3D network. Each class
vector is fitted to the teacher features of that class's pairs; under the similarity loss it
becomes their mean direction, under the relational loss it must also reproduce the teacher's
similarities between classes, under the contrastive loss it must tell its pixels apart from the
other pixels of the batch, which one vector per class cannot (the self-similarity the
relational-distillation paper blames).

Pairs are drawn as distillation draws them (``sampling.scope``, ``pairs_per_batch`` / ``pairs_per_scan``,
``train.batch_size`` scans a step); only pairs whose point carries a label take part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from relidar.core.config import StrictModel
from relidar.core.seeds import Purpose, stream
from relidar.core.vocabulary import Vocabulary
from relidar.training.config import DistillConfig
from relidar.training.evaluate import LabelledSet, ScanOutput, ZeroShotResult, evaluate_zero_shot
from relidar.training.feature_cache import CachedFrame
from relidar.training.losses import batch_loss
from relidar.training.sampling import batch_counts


class OracleConfig(StrictModel):
    steps: int = Field(300, ge=1, description="optimizer steps fitting the class vectors")
    lr: float = Field(0.05, gt=0.0, description="Adam learning rate of the class vectors")


@dataclass(frozen=True)
class _ScanPairs:
    labels: np.ndarray  # [m] vocabulary ids of the paired points (all >= 0)
    features: np.ndarray  # [m, D] float32 teacher features
    superpixels: np.ndarray  # [m] int64


def _labelled_pairs(data: LabelledSet) -> list[_ScanPairs]:
    out = []
    for frame in data.train:
        cached = data.train_cache[frame]
        labels = data.labels(cached)[cached.pair_point]
        ok = labels >= 0
        if ok.sum() >= 2:
            out.append(_ScanPairs(labels[ok], cached.pair_features[ok].astype(np.float32),
                                  cached.superpixels[cached.pair_point[ok]].astype(np.int64)))
    return out


def fit_oracle(data: LabelledSet, config: DistillConfig, num_classes: int, oracle: OracleConfig) -> np.ndarray:
    """[C, D] unit class vectors fitted with ``config.loss`` on the labelled training pairs."""
    scans = _labelled_pairs(data)
    if not scans:
        raise ValueError(f"{data.name}: no labelled pairs to fit the oracle on")
    seed = config.train.seed
    torch.manual_seed(seed)
    vectors = torch.randn(num_classes, scans[0].features.shape[1]).requires_grad_(True)
    opt = torch.optim.Adam([vectors], lr=oracle.lr)
    sampling, batch_size = config.sampling, min(config.train.batch_size, len(scans))
    with torch.enable_grad():
        for step in range(oracle.steps):
            rng = stream(seed, Purpose.ORACLE, step)
            chosen = rng.choice(len(scans), size=batch_size, replace=False)
            if sampling.scope == "batch":
                counts = batch_counts([len(scans[c].labels) for c in chosen], sampling.pairs_per_batch, rng)
            else:
                counts = [min(sampling.pairs_per_scan, len(scans[c].labels)) for c in chosen]
            picks = [rng.choice(len(scans[c].labels), size=int(n), replace=False) for c, n in zip(chosen, counts)]
            labels = torch.from_numpy(np.concatenate([scans[c].labels[p] for c, p in zip(chosen, picks)]))
            q = torch.from_numpy(np.concatenate([scans[c].features[p] for c, p in zip(chosen, picks)]))
            sp = torch.from_numpy(np.concatenate([scans[c].superpixels[p] for c, p in zip(chosen, picks)]))
            scan_of = torch.from_numpy(np.repeat(np.arange(len(chosen)), [len(p) for p in picks]))
            losses = batch_loss(config.loss, vectors[labels], q, scan_of, len(chosen), sp, sampling.scope)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            opt.step()
    return F.normalize(vectors.detach(), dim=1).numpy()


def oracle_outputs(vectors: np.ndarray, config: DistillConfig):
    """The oracle's per-point outputs: its class's vector for labelled points inside the student's crop."""
    lo = np.asarray(config.student.crop_min, dtype=np.float32)
    hi = np.asarray(config.student.crop_max, dtype=np.float32)

    def outputs(cached: CachedFrame, labels: np.ndarray) -> ScanOutput:
        xyz = cached.points[:, :3]
        inside = np.all((xyz >= lo) & (xyz < hi), axis=1)
        emb = np.zeros((len(labels), vectors.shape[1]), dtype=np.float32)
        known = inside & (labels >= 0)
        emb[known] = vectors[labels[known]]
        return ScanOutput(backbone=emb, embedding=emb, inside=inside)

    return outputs


def evaluate_oracle(data: LabelledSet, config: DistillConfig, vocabulary: Vocabulary,
                    oracle: OracleConfig) -> ZeroShotResult:
    """Fit the oracle with ``config.loss`` and score it zero-shot on the held-out scans."""
    vectors = fit_oracle(data, config, vocabulary.num_classes, oracle)
    ev = config.eval
    return evaluate_zero_shot(None, data, vocabulary, torch.device("cpu"), gap_pairs=ev.gap_pairs,
                              seed=config.train.seed, knn=ev.knn, teacher_seen_iou=ev.teacher_seen_iou,
                              outputs=oracle_outputs(vectors, config))
