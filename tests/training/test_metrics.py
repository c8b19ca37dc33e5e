"""Confusion matrix and IoU against hand-counted values."""

from __future__ import annotations

import numpy as np
import pytest

from relidar.training.metrics import confusion_matrix, scores_from_confusion


def test_confusion_and_iou_by_hand() -> None:
    target = np.array([0, 0, 0, 1, 1, 2, -1, -1])
    pred = np.array([0, 0, 1, 1, 2, 2, 0, 2])
    cm = confusion_matrix(target, pred, 4)
    expected = np.zeros((4, 4), int)
    for (i, j), count in {(0, 0): 2, (0, 1): 1, (1, 1): 1, (1, 2): 1, (2, 2): 1}.items():
        expected[i, j] = count
    np.testing.assert_array_equal(cm, expected)
    s = scores_from_confusion(cm)
    # class 0: 2/(3+2-2)=2/3 ; class 1: 1/(2+2-1)=1/3 ; class 2: 1/(1+2-1)=1/2 ; class 3 absent -> NaN
    np.testing.assert_allclose(s.iou[:3], [2 / 3, 1 / 3, 1 / 2])
    assert np.isnan(s.iou[3])
    assert s.miou == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert s.accuracy == pytest.approx(4 / 6)


def test_out_of_range_ids_are_errors() -> None:
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 5]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)


def test_perfect_prediction() -> None:
    t = np.random.default_rng(0).integers(0, 5, 1000)
    s = scores_from_confusion(confusion_matrix(t, t, 5))
    assert s.miou == 1.0 and s.accuracy == 1.0
