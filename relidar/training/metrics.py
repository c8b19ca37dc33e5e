"""Segmentation metrics: confusion matrix, per-class IoU, mIoU (over all classes present, or a subset) (numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(target: np.ndarray, prediction: np.ndarray, num_classes: int,
                     ignore_index: int | None = -1) -> np.ndarray:
    """[C, C] int64 counts, rows = ground truth, columns = prediction; ``ignore_index`` targets skipped.

    Targets or predictions outside 0..C-1 (other than ``ignore_index``) are errors, not silently
    dropped: they mean the label and class lists disagree.
    """
    t = np.asarray(target, dtype=np.int64).reshape(-1)
    p = np.asarray(prediction, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"target {t.shape} and prediction {p.shape} differ in length")
    if ignore_index is not None:
        keep = t != ignore_index
        t, p = t[keep], p[keep]
    for name, a in (("target", t), ("prediction", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} has class ids outside 0..{num_classes - 1} (min {a.min()}, max {a.max()})")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class SegmentationScores:
    """Per-class IoU (NaN where a class is absent from both truth and prediction) and their mean."""

    iou: np.ndarray
    miou: float
    accuracy: float
    confusion: np.ndarray

    def as_dict(self, class_names: tuple[str, ...] | list[str]) -> dict:
        return {
            "miou": self.miou,
            "accuracy": self.accuracy,
            "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, self.iou)},
        }


def scores_from_confusion(confusion: np.ndarray) -> SegmentationScores:
    """IoU_c = TP / (TP + FP + FN). mIoU averages the classes present in the ground truth (the usual
    benchmark convention); a class predicted but never present still lowers others' IoU through FP."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    gt = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    present = gt > 0
    miou = float(np.mean(iou[present])) if present.any() else float("nan")
    total = cm.sum()
    acc = float(tp.sum() / total) if total > 0 else float("nan")
    return SegmentationScores(iou=iou, miou=miou, accuracy=acc, confusion=confusion.astype(np.int64))


def miou_over(scores: SegmentationScores, classes: np.ndarray) -> float:
    """mIoU over the classes ``classes`` (a boolean mask [C]) selects, among those present in the ground
    truth (the convention of :func:`scores_from_confusion`); NaN when none is left."""
    present = scores.confusion.sum(axis=1) > 0
    keep = present & np.asarray(classes, dtype=bool)
    return float(np.mean(scores.iou[keep])) if keep.any() else float("nan")
