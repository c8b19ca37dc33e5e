"""Scan files: one strict reader per format (plyfile, pypcd4, numpy), errors naming the file and the fix,
writers that other tools read back (Open3D as the independent reference where it imports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relidar.core.errors import RelidarError
from relidar.core.scan_io import (
    ScanFormatError,
    labels_to_raw_ids,
    read_label_file,
    read_scan,
    write_label_file,
    write_ply,
)


def _points(n: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 10, (n, 4)).astype(np.float32)


def _open3d():
    try:
        import open3d as o3d
    except ImportError as exc:  # an optional reference: some machines lack its system libraries
        pytest.skip(f"Open3D is not importable here ({exc})")
    return o3d


@pytest.mark.parametrize("size", [7, 17, 33])
def test_bin_size_errors_name_the_real_size_and_the_multiple(tmp_path: Path, size: int) -> None:
    path = tmp_path / "scan.bin"
    path.write_bytes(b"\x01" * size)
    with pytest.raises(ScanFormatError) as info:
        read_scan(path)
    err = info.value
    assert isinstance(err, RelidarError) and err.path == path
    assert f"{size} bytes" in err.message and "multiple of 16" in err.message


def test_bin_reads_exactly_and_empty_is_zero_points(tmp_path: Path) -> None:
    pts = _points()
    pts.tofile(tmp_path / "a.bin")
    np.testing.assert_array_equal(read_scan(tmp_path / "a.bin"), pts)
    (tmp_path / "empty.bin").write_bytes(b"")
    assert read_scan(tmp_path / "empty.bin").shape == (0, 4)


def test_npy_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "text.npy", np.array([["a", "b", "c"]]))
    np.save(tmp_path / "flat.npy", np.zeros(12, np.float32))
    for name, words in (("empty.npy", "not a readable numpy"), ("text.npy", "not real numbers"), ("flat.npy", "[N, >=3]")):
        with pytest.raises(ScanFormatError) as info:
            read_scan(tmp_path / name)
        assert info.value.path == tmp_path / name and words in info.value.message, info.value.one_line()
    np.save(tmp_path / "xyz.npy", _points()[:, :3].astype(np.float64))
    got = read_scan(tmp_path / "xyz.npy")
    np.testing.assert_allclose(got[:, :3], _points()[:, :3])
    np.testing.assert_array_equal(got[:, 3], 0)


def test_directory_and_missing_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ScanFormatError, match="is a directory"):
        read_scan(tmp_path)
    with pytest.raises(ScanFormatError, match="not found"):
        read_scan(tmp_path / "nope.bin")
    (tmp_path / "scan.las").write_bytes(b"x")
    with pytest.raises(ScanFormatError, match="unknown scan format"):
        read_scan(tmp_path / "scan.las")


def test_ply_round_trip_keeps_intensity_and_fields_and_open3d_reads_it(tmp_path: Path) -> None:
    pts = _points(200)
    labels = np.arange(200, dtype=np.int32) % 5
    scores = np.linspace(0, 1, 200, dtype=np.float32)
    rgb = np.random.default_rng(1).integers(0, 255, (200, 3)).astype(np.uint8)
    path = write_ply(tmp_path / "out.ply", pts[:, :3], rgb, intensity=pts[:, 3], label=labels, score=scores)
    np.testing.assert_array_equal(read_scan(path), pts)
    import plyfile

    rows = plyfile.PlyData.read(str(path))["vertex"].data
    np.testing.assert_array_equal(rows["label"], labels)
    np.testing.assert_array_equal(rows["score"], scores)
    np.testing.assert_array_equal(np.stack([rows["red"], rows["green"], rows["blue"]], 1), rgb)
    o3d = _open3d()
    cloud = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(cloud.points), pts[:, :3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(cloud.colors) * 255, rgb, atol=0.5)


def test_truncated_ply_and_ply_without_z_are_refused(tmp_path: Path) -> None:
    path = write_ply(tmp_path / "full.ply", _points(1000)[:, :3], np.zeros((1000, 3), np.uint8))
    data = path.read_bytes()
    (tmp_path / "cut.ply").write_bytes(data[: len(data) - 100])
    with pytest.raises(ScanFormatError, match="not a readable PLY") as info:
        read_scan(tmp_path / "cut.ply")
    assert info.value.path == tmp_path / "cut.ply"
    (tmp_path / "noz.ply").write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                                      "end_header\n1 2\n3 4\n")
    with pytest.raises(ScanFormatError, match="no z field"):
        read_scan(tmp_path / "noz.ply")


@pytest.mark.parametrize("encoding", ["ascii", "binary", "binary_compressed"])
def test_pcd_every_encoding(tmp_path: Path, encoding: str) -> None:
    from pypcd4 import Encoding, PointCloud

    pts = _points(300)
    path = tmp_path / f"{encoding}.pcd"
    PointCloud.from_xyzi_points(pts).save(path, encoding=Encoding[encoding.upper()])
    np.testing.assert_allclose(read_scan(path), pts, rtol=1e-6 if encoding == "ascii" else 0)
    if encoding != "ascii":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 32])  # two whole points short
        with pytest.raises(ScanFormatError) as info:
            read_scan(path)
        assert info.value.path == path and ("truncated" in info.value.one_line())


def test_pcd_written_by_open3d_binary_compressed(tmp_path: Path) -> None:
    o3d = _open3d()
    pts = _points(500)
    cloud = o3d.t.geometry.PointCloud(o3d.core.Tensor(pts[:, :3]))
    cloud.point["intensity"] = o3d.core.Tensor(pts[:, 3:4])
    path = tmp_path / "o3d.pcd"
    assert o3d.t.io.write_point_cloud(str(path), cloud, write_ascii=False, compressed=True)
    assert b"DATA binary_compressed" in path.read_bytes()[:400]
    np.testing.assert_array_equal(read_scan(path), pts)


def test_pcd_hand_written_ascii_and_bad_headers(tmp_path: Path) -> None:
    head = "VERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\nWIDTH 2\nHEIGHT 1\n"
    (tmp_path / "ok.pcd").write_text(head + "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\n1 2 3 0.5\n4 5 6 0.25\n")
    np.testing.assert_allclose(read_scan(tmp_path / "ok.pcd"), [[1, 2, 3, 0.5], [4, 5, 6, 0.25]])
    (tmp_path / "junk.pcd").write_text("hello\n")
    with pytest.raises(ScanFormatError, match="header lacks"):
        read_scan(tmp_path / "junk.pcd")


def test_label_files(tmp_path: Path) -> None:
    names = ("car", "my-robot", "road")
    raw = labels_to_raw_ids(np.array([0, 1, 2, -1, 3]), names)
    assert raw.tolist() == [10, 1001, 40, 0, 0]  # SemanticKITTI ids; custom 1000+k; unknown 0
    path = write_label_file(tmp_path / "000000.label", raw)
    assert path.stat().st_size == 20
    np.testing.assert_array_equal(read_label_file(path, 5), raw)
    with pytest.raises(ScanFormatError, match="5 labels for a scan of 6 points"):
        read_label_file(path, 6)
    (tmp_path / "bad.label").write_bytes(b"123")
    with pytest.raises(ScanFormatError, match="multiple of 4"):
        read_label_file(tmp_path / "bad.label")
