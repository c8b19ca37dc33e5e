"""Zero-shot scores: each point takes the vocabulary class whose text embedding is closest (cosine) to its
student embedding; scored on all points inside the student's crop and on the camera-visible ones
(points with a pixel pair). The teacher's own 2D zero-shot IoU on the held-out pairs marks the classes
it sees (``eval.teacher_seen_iou``): a student cannot be asked to find what its teacher never finds.
The structural measures are taken on the same pass over the held-out pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from relidar.core.seeds import Purpose, stream
from relidar.core.vocabulary import Vocabulary
from relidar.model.network import Student
from relidar.training.evaluate.labelled import LabelledSet
from relidar.training.evaluate.outputs import ScanOutput, scan_output
from relidar.training.evaluate.results import KeptScan, StructureResult, ZeroShotResult
from relidar.training.evaluate.structure import PairStructure, balanced_pick, knn_label_agreement, structural_gap
from relidar.training.feature_cache import CachedFrame
from relidar.training.metrics import confusion_matrix, scores_from_confusion


@dataclass
class ZeroShotAccumulator:
    num_classes: int
    all_points: np.ndarray = field(init=False)
    visible: np.ndarray = field(init=False)
    inside_fraction: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.all_points = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.visible = np.zeros_like(self.all_points)

    def add(self, prediction: np.ndarray, target: np.ndarray, inside: np.ndarray, visible_points: np.ndarray) -> None:
        keep = inside & (target >= 0)
        self.all_points += confusion_matrix(target[keep], prediction[keep], self.num_classes)
        vis = np.zeros_like(inside)
        vis[visible_points] = True
        keep_v = keep & vis
        self.visible += confusion_matrix(target[keep_v], prediction[keep_v], self.num_classes)
        self.inside_fraction.append(float(inside.mean()) if inside.size else 0.0)


def zero_shot_predict(embedding: np.ndarray, text: np.ndarray) -> np.ndarray:
    return np.argmax(embedding @ text.T, axis=1)


def evaluate_zero_shot(model: Student | None, data: LabelledSet, vocabulary: Vocabulary, device: torch.device,
                       keep_predictions: int = 0, gap_pairs: int = 1024, seed: int = 0, knn: int = 10,
                       teacher_seen_iou: float = 0.05, on_scan: Callable[[], None] | None = None,
                       outputs: Callable[[CachedFrame, np.ndarray], ScanOutput] | None = None) -> ZeroShotResult:
    """Zero-shot scores over the held-out scans, the structural measures on their pairs, and the first
    ``keep_predictions`` scans' points, labels and predictions (for pictures). ``outputs(frame, labels)``
    replaces the student's forward pass (the oracle control: ``relidar.training.oracle``)."""
    text = vocabulary.embeddings.astype(np.float32)
    acc = ZeroShotAccumulator(vocabulary.num_classes)
    teacher_cm = np.zeros((vocabulary.num_classes, vocabulary.num_classes), dtype=np.int64)
    gaps: list[PairStructure] = []
    pool_k, pool_q, pool_y = [], [], []
    kept: list[KeptScan] = []
    for i, frame in enumerate(data.val):
        cached = data.val_cache[frame]
        target = data.labels(cached)
        out = outputs(cached, target) if outputs is not None else scan_output(model, cached.points, device)
        pred = zero_shot_predict(out.embedding, text)
        acc.add(pred, target, out.inside, cached.pair_point.astype(np.int64))
        # The teacher's own zero-shot labels of the paired points: the ceiling distillation aims at.
        pair_target = target[cached.pair_point]
        ok_t = pair_target >= 0
        teacher_cm += confusion_matrix(pair_target[ok_t],
                                       zero_shot_predict(cached.pair_features[ok_t].astype(np.float32), text),
                                       vocabulary.num_classes)
        # The paper's gap on uniformly drawn pairs of this scan whose point the student sees.
        rng = stream(seed, Purpose.GAP, frame)
        ok = np.flatnonzero(out.inside[cached.pair_point])
        if len(ok) >= 4:
            pick = rng.choice(ok, size=min(gap_pairs, len(ok)), replace=False)
            gaps.append(structural_gap(out.embedding[cached.pair_point[pick]],
                                       cached.pair_features[pick].astype(np.float32)))
        # A labelled pool for the measures that use classes.
        lab = np.flatnonzero(out.inside[cached.pair_point] & ok_t)
        if len(lab):
            pick = rng.choice(lab, size=min(gap_pairs, len(lab)), replace=False)
            pool_k.append(out.embedding[cached.pair_point[pick]])
            pool_q.append(cached.pair_features[pick].astype(np.float32))
            pool_y.append(pair_target[pick])
        if i < keep_predictions:
            kept.append(KeptScan(frame_id=cached.frame_id, points=cached.points, target=target, prediction=pred,
                                 inside=out.inside))
        if on_scan:
            on_scan()
    teacher = scores_from_confusion(teacher_cm)
    seen = np.nan_to_num(teacher.iou, nan=0.0) >= teacher_seen_iou
    gap_balanced = knn_agreement = teacher_knn_agreement = float("nan")
    if pool_y:
        y = np.concatenate(pool_y)
        classes = len(np.unique(y))
        rng = stream(seed, Purpose.BALANCE)
        pick = balanced_pick(y, max(2, gap_pairs // classes), rng)
        k_b, q_b, y_b = np.concatenate(pool_k)[pick], np.concatenate(pool_q)[pick], y[pick]
        if len(pick) >= 4:
            gap_balanced = structural_gap(k_b, q_b).gap
            knn_agreement = knn_label_agreement(k_b, y_b, knn)
            teacher_knn_agreement = knn_label_agreement(q_b, y_b, knn)
    structure = StructureResult(
        gap=float(np.mean([g.gap for g in gaps])) if gaps else float("nan"),
        gap_balanced=gap_balanced,
        cka=float(np.mean([g.cka for g in gaps])) if gaps else float("nan"),
        knn_agreement=knn_agreement,
        teacher_knn_agreement=teacher_knn_agreement,
    )
    return ZeroShotResult(
        all_points=scores_from_confusion(acc.all_points),
        visible=scores_from_confusion(acc.visible),
        teacher=teacher,
        seen=seen,
        inside_fraction=float(np.mean(acc.inside_fraction)) if acc.inside_fraction else 0.0,
        scans=len(data.val),
        structure=structure,
        kept=tuple(kept),
    )
