"""Parity between two backends on one scan: the numbers the export acceptance criteria name."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FEATURE_TOLERANCE_FP32 = 1e-4
LABEL_AGREEMENT_MIN = 0.999


@dataclass(frozen=True)
class ParityReport:
    reference: str
    candidate: str
    points: int
    max_abs_feature: float   # over per-point unit features (the bundle head applied)
    max_abs_score: float
    label_agreement: float   # fraction of points with the same label

    def ok(self, feature_tolerance: float = FEATURE_TOLERANCE_FP32, min_agreement: float = LABEL_AGREEMENT_MIN) -> bool:
        return self.max_abs_feature <= feature_tolerance and self.label_agreement >= min_agreement

    def as_dict(self) -> dict:
        return asdict(self)


def compare_backends(bundle: str | Path, points: np.ndarray, reference: str = "torch", candidate: str = "onnxruntime",
                     device: str = "cpu", formulation: str | None = None) -> ParityReport:
    """Run the bundle on ``points`` with both backends (features requested; ``formulation`` for both, None:
    each backend's default on ``device``) and compare."""
    from relidar.core.segmenter import Segmenter

    ref = Segmenter(bundle, backend=reference, device=device, formulation=formulation)(points, return_features=True)
    cand = Segmenter(bundle, backend=candidate, device=device, formulation=formulation)(points, return_features=True)
    return ParityReport(reference=reference, candidate=candidate, points=int(len(points)),
                        max_abs_feature=float(np.abs(ref.features - cand.features).max(initial=0.0)),
                        max_abs_score=float(np.abs(ref.scores - cand.scores).max(initial=0.0)),
                        label_agreement=float((ref.labels == cand.labels).mean()) if len(points) else 1.0)
