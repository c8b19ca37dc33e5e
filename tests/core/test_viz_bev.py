"""Bird's-eye-view rendering: pixel placement by hand, top-most point wins, PNG with legend written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from relidar.core.viz.bev import BevError, BevView, rasterize_bev, render_bev


def test_points_land_where_computed_by_hand():
    view = BevView((-10.0, 10.0), (-5.0, 5.0), 0.5, point_radius=0)
    assert view.shape == (40, 20)
    xyz = np.array([[9.9, 4.9, 0.0], [0.25, -0.25, 0.0], [-9.9, -4.9, 0.0], [50.0, 0.0, 0.0]])
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)
    img = rasterize_bev(xyz, rgb, view, background=(0, 0, 0))
    # x forward is up, y left is left: row = (x_max - x)/res, col = (y_max - y)/res.
    assert img[0, 0].tolist() == [255, 0, 0]
    assert img[19, 10].tolist() == [0, 255, 0]
    assert img[39, 19].tolist() == [0, 0, 255]
    assert (img.reshape(-1, 3).sum(axis=1) > 0).sum() == 3  # the point outside the view is dropped


def test_highest_point_is_drawn():
    view = BevView((-1.0, 1.0), (-1.0, 1.0), 0.5, point_radius=0)
    xyz = np.array([[0.1, 0.1, 2.0], [0.1, 0.1, -1.0]])
    img = rasterize_bev(xyz, np.array([[255, 0, 0], [0, 0, 255]], np.uint8), view)
    assert img[1, 1].tolist() == [255, 0, 0]


def test_render_bev_png(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-20, 20, (500, 3))
    path = render_bev(tmp_path / "bev.png", xyz, labels=rng.integers(0, 3, 500), palette=np.eye(3, dtype=np.uint8) * 255,
                      class_names=("a", "b", "c"), view=BevView((-20, 20), (-20, 20), 0.2), title="test")
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[0] >= 200 and img.shape[1] > 200
    assert ((img[..., 0] > 200) & (img[..., 1] < 50) & (img[..., 2] < 50)).any()


def test_render_bev_argument_errors(tmp_path):
    xyz = np.zeros((3, 3))
    with pytest.raises(BevError, match="exactly one"):
        render_bev(tmp_path / "x.png", xyz)
    with pytest.raises(BevError, match="palette"):
        render_bev(tmp_path / "x.png", xyz, labels=np.zeros(3, int))
    with pytest.raises(BevError, match="colours"):
        rasterize_bev(xyz, np.zeros((2, 3), np.uint8))


def test_value_picture_has_a_colour_bar_and_non_finite_points_are_skipped(tmp_path):
    xyz = np.array([[1.0, 1.0, 0.0], [np.nan, 0.0, 0.0], [2.0, np.inf, 0.0]] * 50)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning from the NaN/inf points
        path = render_bev(tmp_path / "s.png", xyz, values=np.zeros(len(xyz)), value_label="score",
                          view=BevView((-5, 5), (-5, 5), 0.05))
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # every point scores 0 (viridis' dark purple): viridis' yellow end can only come from the colour bar
    yellow = (np.abs(img - np.array([253, 231, 37])).sum(axis=2) < 30)
    assert yellow.sum() > 20 and yellow.any(axis=0).nonzero()[0].min() > img.shape[1] * 0.7
