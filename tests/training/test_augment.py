"""Augmentation moves points rigidly (plus scale), keeps order, intensity and therefore pairs."""

from __future__ import annotations

import numpy as np

from relidar.training.augment import AugmentConfig, augment_points, random_transform


def test_preserves_order_and_pairwise_geometry() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(-20, 20, size=(500, 4)).astype(np.float32)
    cfg = AugmentConfig(scale=(0.9, 1.1))
    out = augment_points(pts, cfg, np.random.default_rng(5))
    m = random_transform(cfg, np.random.default_rng(5))
    assert out.shape == pts.shape
    np.testing.assert_array_equal(out[:, 3], pts[:, 3])
    np.testing.assert_allclose(out[:, :3], pts[:, :3] @ m.T, rtol=1e-5, atol=1e-4)
    # point i stays point i: distances between indexed points scale by one factor
    s = abs(np.linalg.det(m)) ** (1 / 3)
    d_in = np.linalg.norm(pts[:100, :3] - pts[100:200, :3], axis=1)
    d_out = np.linalg.norm(out[:100, :3] - out[100:200, :3], axis=1)
    np.testing.assert_allclose(d_out, s * d_in, rtol=1e-4)
    # z only scales (rotation about z, flips in x/y)
    np.testing.assert_allclose(out[:, 2], s * pts[:, 2], rtol=1e-4, atol=1e-4)


def test_flips_and_rotation_cover_the_circle() -> None:
    cfg = AugmentConfig(scale=(1.0, 1.0))
    dets = [np.linalg.det(random_transform(cfg, np.random.default_rng(i))) for i in range(40)]
    assert any(d < 0 for d in dets) and any(d > 0 for d in dets)
    np.testing.assert_allclose(np.abs(dets), 1.0, atol=1e-9)


def test_disabled_is_identity() -> None:
    pts = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = augment_points(pts, AugmentConfig(enabled=False), np.random.default_rng(0))
    np.testing.assert_array_equal(out, pts)
    assert out is not pts
