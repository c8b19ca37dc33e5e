"""SemanticKITTI reader on a miniature sequence written in the real on-disk layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from relidar.training.readers import DatasetError, open_dataset
from relidar.training.readers.semantickitti import CLASS_NAMES

# calib.txt of an odometry sequence: P2 = K [I | t], Tr = velodyne -> rectified camera 0.
P2 = np.array([[100.0, 0.0, 40.0, 10.0], [0.0, 100.0, 30.0, -2.0], [0.0, 0.0, 1.0, 0.01]])
TR = np.array([[0.0, -1.0, 0.0, 0.02], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27]])


def _fmt(m: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in m.ravel())


def write_sequence(root: Path, seq: str = "08", n: int = 2, labels: bool = True) -> Path:
    d = root / "sequences" / seq
    for sub in ("velodyne", "labels", "image_2") if labels else ("velodyne", "image_2"):
        (d / sub).mkdir(parents=True)
    P0 = P2.copy()
    P0[:, 3] = 0
    (d / "calib.txt").write_text(
        f"P0: {_fmt(P0)}\nP1: {_fmt(P0)}\nP2: {_fmt(P2)}\nP3: {_fmt(P0)}\nTr: {_fmt(TR)}\n"
    )
    # camera 0 moves 1 m forward (its z) per scan
    (d / "poses.txt").write_text(
        "".join(_fmt(np.c_[np.eye(3), [0.0, 0.0, float(k)]]) + "\n" for k in range(n))
    )
    rng = np.random.default_rng(0)
    for k in range(n):
        pts = np.c_[rng.uniform(2, 20, (50, 1)), rng.uniform(-3, 3, (50, 2)), rng.uniform(0, 1, (50, 1))].astype(np.float32)
        pts.tofile(d / "velodyne" / f"{k:06d}.bin")
        if labels:
            raw = np.array([0, 10, 252, 40, 60, 52, 99, 81, 259, 48] * 5, dtype=np.uint32)
            raw |= np.uint32(7) << np.uint32(16)  # instance id in the upper half must not matter
            raw.tofile(d / "labels" / f"{k:06d}.label")
        Image.fromarray(np.full((60, 80, 3), 30 * k, np.uint8)).save(d / "image_2" / f"{k:06d}.png")
    return root


def test_frames_labels_and_camera(tmp_path: Path) -> None:
    reader = open_dataset(write_sequence(tmp_path))
    assert reader.name == "semantickitti"
    assert len(reader) == 2 and reader.frame_ids == ["08/000000", "08/000001"]
    assert reader.class_names == CLASS_NAMES and len(CLASS_NAMES) == 19
    frame = reader[1]
    assert frame.points.shape == (50, 4) and frame.points.dtype == np.float32
    np.testing.assert_array_equal(frame.points, np.fromfile(tmp_path / "sequences/08/velodyne/000001.bin", np.float32).reshape(-1, 4))
    ign = reader.ignore_index
    idx = CLASS_NAMES.index
    expected = [ign, idx("car"), idx("car"), idx("road"), idx("road"), ign, ign, idx("traffic-sign"), idx("other-vehicle"), idx("sidewalk")]
    assert frame.labels.tolist() == expected * 5
    assert frame.class_names == CLASS_NAMES

    cam = frame.cameras[0]
    assert cam.name == "image_2" and cam.image.shape == (60, 80, 3) and int(cam.image[0, 0, 0]) == 30
    # Reference: the odometry devkit's projection, P2 @ Tr on homogeneous points.
    X = np.c_[frame.points[:, :3].astype(np.float64), np.ones(50)]
    p = (P2 @ np.r_[TR, [[0, 0, 0, 1]]] @ X.T).T
    proj = cam.project(frame.points[:, :3])
    np.testing.assert_allclose(proj.uv, p[:, :2] / p[:, 2:3], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(proj.depth, p[:, 2], rtol=1e-5)


def test_lidar_pose_from_camera_poses(tmp_path: Path) -> None:
    reader = open_dataset(write_sequence(tmp_path))
    pose = reader.lidar_pose(1)
    # camera 0 moved 1 m along its z, which is the lidar's x: the lidar moved 1 m forward.
    np.testing.assert_allclose(pose[:3, 3], [1.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(pose[:3, :3], np.eye(3), atol=1e-9)


def test_sequence_selection_and_errors(tmp_path: Path) -> None:
    write_sequence(tmp_path, "08", n=2)
    write_sequence(tmp_path, "11", n=3, labels=False)
    both = open_dataset(tmp_path)
    assert len(both) == 5 and both.class_names == CLASS_NAMES
    only11 = open_dataset(tmp_path, sequences=[11])
    assert len(only11) == 3 and only11.class_names == () and only11[0].labels is None
    single = open_dataset(tmp_path / "sequences" / "08")  # one sequence folder given directly
    assert single.frame_ids == ["08/000000", "08/000001"]
    with pytest.raises(DatasetError, match=r"sequence\(s\) 05 not found.*available: 08, 11"):
        open_dataset(tmp_path, sequences="05")
    with pytest.raises(DatasetError, match="no option 'sequence'.*sequences"):
        open_dataset(tmp_path, sequence="08")
    (tmp_path / "sequences" / "08" / "calib.txt").unlink()
    with pytest.raises(DatasetError, match="no calib.txt in .*08"):
        open_dataset(tmp_path)
