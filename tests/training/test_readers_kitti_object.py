"""KITTI object reader (real frame and folder layout) and format detection in ``open_dataset``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from relidar.training.readers import DatasetError, detect_format, open_dataset
from relidar.training.readers.kitti_object import KittiObject


def test_real_frame(kitti_frame_dir: Path) -> None:
    reader = open_dataset(kitti_frame_dir)
    assert reader.name == "kitti_object" and len(reader) == 1 and reader.class_names == ()
    frame = reader[0]
    assert frame.points.shape == (115384, 4) and frame.labels is None
    cam = frame.cameras[0]
    assert cam.name == "image_2" and cam.image.shape == (370, 1224, 3)
    (ped,) = reader.objects(0)
    assert ped.type == "Pedestrian"
    assert ped.bbox == (712.40, 143.00, 810.73, 307.92)
    assert ped.dimensions == (1.89, 0.48, 1.20) and ped.location == (1.84, 1.47, 8.41)
    assert ped.rotation_y == pytest.approx(0.01)


def test_folder_layout_and_missing_parts(kitti_frame_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "training"
    for sub, src, ext in (("velodyne", "velodyne.bin", "bin"), ("image_2", "image_2.png", "png"), ("calib", "calib.txt", "txt")):
        (root / sub).mkdir(parents=True)
        for fid in ("000000", "000007"):
            shutil.copy(kitti_frame_dir / src, root / sub / f"{fid}.{ext}")
    (root / "label_2").mkdir()
    shutil.copy(kitti_frame_dir / "label_2.txt", root / "label_2" / "000000.txt")
    reader = open_dataset(root)
    assert reader.frame_ids == ["000000", "000007"]
    assert len(reader.objects(0)) == 1 and reader.objects(1) == []  # no label file: no boxes
    np.testing.assert_array_equal(reader[-1].points, open_dataset(kitti_frame_dir)[0].points)
    assert [f.frame_id for f in reader] == ["000000", "000007"]
    with pytest.raises(IndexError) as err:  # an IndexError, and a DatasetError naming the dataset and the field
        reader[2]
    assert isinstance(err.value, DatasetError) and (err.value.path, err.value.field) == (root, "frame")

    (root / "calib" / "000007.txt").unlink()
    with pytest.raises(DatasetError, match=r"000007\.txt missing"):
        open_dataset(root)
    shutil.rmtree(root / "calib")
    with pytest.raises(DatasetError) as err:
        open_dataset(root)
    assert err.value.path == root / "calib" and "velodyne/, image_2/, calib/" in err.value.hint


def test_box_containment_follows_rotation() -> None:
    # A 4 m long, 2 m wide car turned 90 degrees: its length now runs along camera z.
    car = KittiObject("Car", 0.0, 0, 0.0, (0, 0, 1, 1), (1.5, 2.0, 4.0), (0.0, 1.0, 10.0), np.pi / 2)
    pts = np.array([[0.0, 0.5, 11.8], [1.5, 0.5, 10.0], [0.0, 1.2, 10.0], [0.0, -0.6, 10.0]])
    assert car.contains(pts).tolist() == [True, False, False, False]


def test_detection_and_wrong_paths(tmp_path: Path) -> None:
    def refused(path: Path) -> DatasetError:
        with pytest.raises(DatasetError) as err:
            open_dataset(path)
        assert err.value.path == path and "nuScenes root" in err.value.hint
        return err.value

    refused(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    assert "'.txt'" in refused(tmp_path / "notes.txt").message
    (tmp_path / "images").mkdir()
    assert "images/, notes.txt" in refused(tmp_path).message
    flat = tmp_path / "flat"
    flat.mkdir()
    np.zeros((3, 4), np.float32).tofile(flat / "velodyne.bin")
    assert detect_format(flat) == "kitti_object"
    with pytest.raises(DatasetError, match=r"no image_2\.png in .*flat; expected a KITTI single-frame folder"):
        open_dataset(flat)
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "metadata.yaml").write_text("")
    assert detect_format(tmp_path / "bag") == "rosbag"
    (tmp_path / "log.mcap").touch()
    assert detect_format(tmp_path / "log.mcap") == "rosbag"
    (tmp_path / "sk" / "sequences").mkdir(parents=True)
    assert detect_format(tmp_path / "sk") == "semantickitti"
    (tmp_path / "ns" / "v1.0-trainval").mkdir(parents=True)
    assert detect_format(tmp_path / "ns") == "nuscenes"
    with pytest.raises(DatasetError) as err:
        open_dataset(flat, fmt="kitty")
    assert err.value.field == "format" and "kitti_object" in err.value.hint
