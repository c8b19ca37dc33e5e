"""The labelled scans an evaluation scores: training scans (few-shot) and held-out ones, their labels
mapped to vocabulary classes by name (labels of classes the vocabulary lacks are ignored)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from relidar.core.errors import RelidarError
from relidar.core.vocabulary import Vocabulary
from relidar.training.config import DataConfig
from relidar.training.data import split_data
from relidar.training.feature_cache import CachedFrame, CacheReader


class EvaluationError(RelidarError, ValueError):
    """An evaluation that cannot run (no labels, no vocabulary, mismatched dims); names the fix."""


def label_map(dataset_classes: Sequence[str], vocabulary: Vocabulary) -> np.ndarray:
    """[len(dataset_classes)] vocabulary index of each dataset class, -1 where the vocabulary lacks it."""
    index = {n: i for i, n in enumerate(vocabulary.class_names)}
    return np.array([index.get(n, -1) for n in dataset_classes], dtype=np.int64)


def to_vocabulary_labels(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    out = np.full(labels.shape, -1, dtype=np.int64)
    ok = (labels >= 0) & (labels < len(lut))
    out[ok] = lut[labels[ok]]
    return out


@dataclass(frozen=True)
class LabelledSet:
    """Labelled scans for evaluation: training scans (for few-shot) and held-out ones (scored), labels
    mapped to vocabulary ids."""

    name: str
    train_cache: CacheReader
    train: tuple[int, ...]
    val_cache: CacheReader
    val: tuple[int, ...]
    lut: np.ndarray

    def labels(self, cached: CachedFrame) -> np.ndarray:
        if cached.labels is None:
            raise EvaluationError(f"{self.name}: frame {cached.frame_id} has no labels; evaluation needs labelled data",
                                  path=self.train_cache.root)
        return to_vocabulary_labels(cached.labels.astype(np.int64), self.lut)


def labelled_set(name: str, data: DataConfig, vocabulary: Vocabulary, max_scans: int | None) -> LabelledSet:
    split = split_data(data)
    if not split.val:
        raise EvaluationError("no held-out scans", path=data.cache, field="data.val",
                              hint="set data.val (the validation split's cache, or another synthetic street)")
    lut = label_map(split.train_cache.class_names, vocabulary)
    if (lut < 0).all():
        raise EvaluationError(f"{data.cache}: none of its classes {list(split.train_cache.class_names)} is in the "
                              f"vocabulary {list(vocabulary.class_names)}")
    val = split.val[:max_scans] if max_scans else split.val
    return LabelledSet(name=name, train_cache=split.train_cache, train=split.train, val_cache=split.val_cache, val=val,
                       lut=lut)


def spread(frames: Sequence[int], count: int) -> list[int]:
    """``count`` of ``frames`` evenly spread over them (consecutive sweeps are near-duplicates)."""
    count = max(1, min(count, len(frames)))
    return [frames[int(i)] for i in np.linspace(0, len(frames) - 1, count).round().astype(int)]
