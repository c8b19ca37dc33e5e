"""Camera overlays: z-buffered splatting, depth/label colouring, and ``relidar render overlay``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from relidar.cli.app import build_app
from relidar.core.frame import Camera, Frame
from relidar.core.viz.overlay import OverlayError, depth_colors, overlay_frame, splat
from relidar.core.viz.palette import palette_for

K = np.array([[50.0, 0.0, 120.0], [0.0, 50.0, 100.0], [0.0, 0.0, 1.0]])
T_CAM_FROM_LIDAR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def _frame(labels: np.ndarray | None = None) -> Frame:
    cam = Camera("front", np.full((160, 200, 3), 7, np.uint8), K, T_CAM_FROM_LIDAR)
    # (10, 0, 0) -> pixel (120, 100); (5, 1, 0) -> (110, 100); (-3, 0, 0) behind; (2, -10, 0) outside.
    pts = np.array([[10.0, 0.0, 0.0, 0.1], [5.0, 1.0, 0.0, 0.2], [-3.0, 0.0, 0.0, 0.3], [2.0, -10.0, 0.0, 0.4]])
    names = ("road", "car") if labels is not None else ()
    return Frame("f0", pts, [cam], labels=labels, class_names=names)


def test_splat_nearest_point_wins_and_clips_at_border() -> None:
    img = np.zeros((10, 10, 3), np.uint8)
    uv = np.array([[5.2, 5.7], [5.9, 5.1], [0.0, 9.5]])
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    for order in ([0, 1, 2], [1, 0, 2]):
        out = splat(img, uv[order], np.array([9.0, 3.0, 1.0])[order], colors[order], radius=1)
        assert out[5, 5].tolist() == [0, 255, 0]  # depth 3 beats depth 9 on the shared pixels
        assert out[9, 0].tolist() == [0, 0, 255] and out[8, 1].tolist() == [0, 0, 255]
        # 3x3 squares: the two points cover 4..6 x 4..6; the corner one is clipped to 2x2
        assert int((out.sum(axis=2) > 0).sum()) == 9 + 4
    assert img.sum() == 0  # the input is not modified


def test_depth_overlay_colours_projected_points() -> None:
    ov = overlay_frame(_frame(), color="depth", max_depth=20.0, radius=0)
    assert ov.camera == "front" and ov.num_points == 4 and ov.num_drawn == 2
    expected = depth_colors(np.array([10.0, 5.0]), 20.0)
    assert ov.image[100, 120].tolist() == expected[0].tolist()
    assert ov.image[100, 110].tolist() == expected[1].tolist()
    assert ov.image[150, 190].tolist() == [7, 7, 7]  # untouched background (away from the legend)


def test_label_overlay_and_errors() -> None:
    ov = overlay_frame(_frame(np.array([1, -1, 0, 0])), color="label", radius=0)
    pal = palette_for(("road", "car"))
    assert ov.image[100, 120].tolist() == pal[1].tolist()  # car
    assert ov.image[100, 110].tolist() == [128, 128, 128]  # ignored
    with pytest.raises(OverlayError, match="no per-point labels"):
        overlay_frame(_frame(), color="label")
    with pytest.raises(OverlayError, match=r"no camera 'rear' \(cameras: front\)"):
        overlay_frame(_frame(), camera="rear")


def test_cli_on_real_kitti_frame(kitti_frame_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "overlay.png"
    result = CliRunner().invoke(build_app(), ["render", "overlay", str(kitti_frame_dir), "--out", str(out), "--max-depth", "30"])
    assert result.exit_code == 0, result.output
    drawn = np.asarray(Image.open(out).convert("RGB"))
    original = np.asarray(Image.open(kitti_frame_dir / "image_2.png").convert("RGB"))
    assert drawn.shape == original.shape
    changed = (drawn != original).any(axis=2)
    # Lidar covers the lower ~2/3 of a KITTI image: many pixels change there, none in the sky rows.
    assert changed[200:].mean() > 0.3
    assert changed[:100, 200:].mean() < 0.01

    bad = CliRunner().invoke(build_app(), ["render", "overlay", str(kitti_frame_dir), "--out", str(out), "--color", "label"])
    assert bad.exit_code == 1 and bad.output.startswith("error: ") and bad.output.count("\n") == 1
    missing = CliRunner().invoke(build_app(), ["render", "overlay", str(tmp_path / "nope"), "--out", str(out)])
    # one line, whatever the terminal width: the path is never wrapped
    assert missing.exit_code == 1 and missing.output.startswith(f"error: {tmp_path / 'nope'}: does not exist")
