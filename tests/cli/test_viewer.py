"""`relidar view`: what it opens (labelled PLY, a segment folder, a labelled bag), the click pick, and
the page itself in a real headless Chromium: a screenshot whose pixels show the class colours."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from relidar.core.viz.palette import palette_for
from relidar.export.labelled import LabelledBagWriter, LabelledScan, write_labelled_ply, write_labels_yaml
from relidar.viewer import ViewerError, load_view_data, nearest_to_ray, serve

NAMES = ("car", "road", "vegetation")


def _scan(n: int = 6000) -> LabelledScan:
    rng = np.random.default_rng(0)
    xyz = np.c_[rng.uniform(0, 30, n), rng.uniform(-15, 15, n), rng.uniform(-1.5, 0.5, n)]
    labels = np.where(xyz[:, 1] > 0, 0, 1)  # car on the left, road on the right
    labels[:50] = -1
    return LabelledScan("000000", np.c_[xyz, rng.random(n)].astype(np.float32), labels, rng.random(n).astype(np.float32))


def _folder(tmp_path: Path) -> Path:
    out = tmp_path / "seg"
    out.mkdir()
    write_labelled_ply(out / "000000.ply", _scan(), palette_for(NAMES))
    write_labels_yaml(out / "labels.yaml", NAMES, palette_for(NAMES))
    return out


def test_opens_folder_ply_and_bag(tmp_path: Path) -> None:
    scan = _scan()
    data = load_view_data(_folder(tmp_path))
    assert data.class_names == NAMES and np.array_equal(data.colours, palette_for(NAMES))
    np.testing.assert_array_equal(data.scans[0].labels, scan.labels)
    np.testing.assert_array_equal(data.scans[0].scores, scan.scores)
    assert load_view_data(tmp_path / "seg" / "000000.ply").class_names == NAMES
    with LabelledBagWriter(tmp_path / "bag", NAMES, palette_for(NAMES)) as bag:
        bag.write(scan)
    data = load_view_data(tmp_path / "bag")
    assert data.class_names == NAMES and np.array_equal(data.colours, palette_for(NAMES))
    np.testing.assert_array_equal(data.scans[0].labels, scan.labels)  # the node's unknown (C) comes back as -1
    with pytest.raises(ViewerError, match="no such file"):
        load_view_data(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ViewerError, match="cannot show"):
        load_view_data(tmp_path / "x.txt")


def test_nearest_to_ray() -> None:
    pts = np.array([[10.0, 0.0, 0.0], [10.0, 0.3, 0.0], [20.0, 0.0, 0.1], [np.nan, 0, 0]])
    assert nearest_to_ray(pts, (0, 0, 0), (1, 0, 0)) == 0  # nearest to the camera among those on the ray
    assert nearest_to_ray(pts, (0, 0, 0), (0, 1, 0)) is None
    assert nearest_to_ray(pts, (0, 0.3, 0), (1, 0, 0)) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_page_in_headless_chromium_shows_the_class_colours(tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs the Debian package where apt-get runs as root)")
    from PIL import Image

    server = serve(load_view_data(_folder(tmp_path)), port=_free_port(), point_size=0.3)
    try:
        shot = tmp_path / "view.png"
        proc = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1000,700",
             "--virtual-time-budget=40000", "--run-all-compositor-stages-before-draw", f"--screenshot={shot}", f"http://127.0.0.1:{server.get_port()}"],
            capture_output=True, text=True, timeout=120)
        assert shot.is_file(), proc.stderr[-2000:]
    finally:
        server.stop()
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    for name, rgb in zip(NAMES[:2], palette_for(NAMES[:2])):
        near = (np.abs(pixels - rgb.astype(int)).sum(axis=1) < 30).sum()
        assert near > 500, f"{name} {rgb.tolist()}: {near} pixels"  # the cloud (and its legend swatch)
