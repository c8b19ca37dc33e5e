"""What an evaluation measured, as typed results: what ``relidar evaluate``'s report, ``relidar compare``
and the oracle control read, and the one place that turns them into the summary's keys and
``report.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from relidar.core.vocabulary import Vocabulary
from relidar.training.metrics import SegmentationScores, miou_over


def fraction_tag(fraction: float) -> str:
    """0.01 -> '1pct', 0.1 -> '10pct', 0.005 -> '0.5pct' (summary keys)."""
    return f"{100 * fraction:g}pct"


def _scores_json(scores: SegmentationScores, names: Sequence[str]) -> dict[str, Any]:
    return {**scores.as_dict(names), "confusion": scores.confusion.tolist()}


@dataclass(frozen=True)
class StructureResult:
    """The structural measures on held-out pairs (NaN where too few pairs): the paper's gap on uniform
    pairs and CKA (means over scans), the gap on class-balanced pairs, and the k-NN label agreement of
    the student's and of the teacher's features. Fields in the order of ``report.json``'s ``structure``."""

    gap: float
    gap_balanced: float
    cka: float
    knn_agreement: float
    teacher_knn_agreement: float

    def summary(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{name}": value for name, value in asdict(self).items()}


@dataclass(frozen=True)
class KeptScan:
    """One held-out scan's points, labels and zero-shot predictions, kept for pictures."""

    frame_id: str
    points: np.ndarray
    target: np.ndarray
    prediction: np.ndarray
    inside: np.ndarray


@dataclass(frozen=True)
class ZeroShotResult:
    """Zero-shot scores over the held-out scans: on all points inside the crop, on the camera-visible
    ones, and the teacher's own on its pairs; ``seen`` [C] marks the classes the teacher sees."""

    all_points: SegmentationScores
    visible: SegmentationScores
    teacher: SegmentationScores
    seen: np.ndarray
    inside_fraction: float
    scans: int
    structure: StructureResult
    kept: tuple[KeptScan, ...] = ()

    @property
    def miou(self) -> float:
        return self.all_points.miou

    @property
    def miou_seen(self) -> float:
        return miou_over(self.all_points, self.seen)

    @property
    def miou_visible(self) -> float:
        return self.visible.miou

    @property
    def miou_visible_seen(self) -> float:
        return miou_over(self.visible, self.seen)

    def seen_names(self, names: Sequence[str]) -> list[str]:
        return [n for n, s in zip(names, self.seen) if s]

    def summary(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}zero_shot_miou": self.miou,
            f"{prefix}zero_shot_miou_seen": self.miou_seen,
            f"{prefix}zero_shot_miou_visible": self.miou_visible,
            f"{prefix}zero_shot_miou_visible_seen": self.miou_visible_seen,
            f"{prefix}teacher_miou_visible": self.teacher.miou,
            f"{prefix}teacher_seen_classes": float(self.seen.sum()),
        }

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {"all": _scores_json(self.all_points, names), "visible": _scores_json(self.visible, names),
                "teacher_visible": _scores_json(self.teacher, names), "teacher_seen": self.seen_names(names),
                "inside_fraction": self.inside_fraction, "scans": self.scans}


@dataclass(frozen=True)
class ProbeResult:
    """The linear probe's scores on the held-out scans, trained on ``train_points`` points of ``scans`` scans."""

    scores: SegmentationScores
    scans: int
    train_points: int

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {"scans": self.scans, "train_points": self.train_points, **_scores_json(self.scores, names)}


@dataclass(frozen=True)
class FinetuneResult:
    """Scores on the held-out scans after fine-tuning ``steps`` steps on ``fraction`` (``scans`` scans)."""

    scores: SegmentationScores
    scans: int
    fraction: float
    steps: int

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {"fraction": self.fraction, "scans": self.scans, "steps": self.steps,
                **_scores_json(self.scores, names)}


@dataclass(frozen=True)
class SetResult:
    """Everything measured on one labelled set (in-distribution, or out-of-distribution)."""

    zero_shot: ZeroShotResult
    linear_probe: ProbeResult
    finetune: tuple[FinetuneResult, ...]

    def summary(self, prefix: str = "") -> dict[str, float]:
        zs, probe = self.zero_shot, self.linear_probe.scores
        out = {
            **zs.summary(prefix),
            f"{prefix}probe_miou": probe.miou,
            f"{prefix}probe_miou_seen": miou_over(probe, zs.seen),
            **zs.structure.summary(prefix),
        }
        for ft in self.finetune:
            out[f"{prefix}finetune_miou_{fraction_tag(ft.fraction)}"] = ft.scores.miou
        return out

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {
            "zero_shot": self.zero_shot.to_json(names),
            "structure": asdict(self.zero_shot.structure),
            "linear_probe": self.linear_probe.to_json(names),
            "finetune": [ft.to_json(names) for ft in self.finetune],
        }


@dataclass(frozen=True)
class EvaluationResult:
    """Everything a report shows; ``to_json`` drops the arrays kept for pictures."""

    vocabulary: Vocabulary
    in_distribution: SetResult
    ood: SetResult | None

    @property
    def zero_shot(self) -> ZeroShotResult:
        return self.in_distribution.zero_shot

    def summary(self) -> dict[str, float]:
        """The headline numbers (what `relidar compare` tabulates); out-of-distribution ones prefixed ``ood_``."""
        out = self.in_distribution.summary()
        if self.ood is not None:
            out.update(self.ood.summary("ood_"))
        return out

    def to_json(self) -> dict[str, Any]:
        names = self.vocabulary.class_names
        out: dict[str, Any] = {"summary": self.summary(), "classes": list(names),
                               **self.in_distribution.to_json(names)}
        if self.ood is not None:
            out["ood"] = self.ood.to_json(names)
        return out
