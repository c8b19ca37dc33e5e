"""`relidar segment`: every kind of input, every output read back by the tools users open them with
(plyfile, the SemanticKITTI layout, rosbags and the `mcap` library with its ROS 2 decoder, as Foxglove
decodes), the --out rule, and bad inputs as one line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from support.bundle_support import shared_bundle
from support.scan_support import street_scan

from relidar.cli.app import build_app
from relidar.core.scan_io import labels_to_raw_ids, read_label_file, read_scan
from relidar.core.segmenter import Segmenter
from relidar.export.labelled import LEGEND_TOPIC, POINTS_TOPIC


def _run(*args: str):
    result = CliRunner().invoke(build_app(), [str(a) for a in args])
    return result, " ".join(result.output.split())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return shared_bundle(tmp_path_factory)


def test_one_scan_every_output_read_back(bundle: Path, tmp_path: Path) -> None:
    import plyfile
    import yaml
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rosbags.highlevel import AnyReader

    pts = street_scan(3000)
    pts[:5, 3] = np.nan  # repaired and reported
    np.save(tmp_path / "scan.npy", pts)
    out = tmp_path / "out"
    result, text = _run("segment", tmp_path / "scan.npy", "--bundle", bundle, "--out", out, "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    seg = Segmenter(bundle, backend="onnxruntime")
    expected = seg(pts)
    names, colours = seg.vocabulary.class_names, seg.vocabulary.colors
    for name in ("scan.ply", "scan.label", "labels.yaml", "scan_bev.png", "bag"):
        assert f"wrote {out / name}" in text, name
    assert "repaired: 5 point(s) with NaN/inf intensity" in text
    # PLY: intensity kept (NaN as given), labels and scores as the Segmenter's
    rows = plyfile.PlyData.read(str(out / "scan.ply"))["vertex"].data
    np.testing.assert_array_equal(rows["intensity"][5:], pts[5:, 3])
    np.testing.assert_array_equal(rows["label"], expected.labels)
    np.testing.assert_array_equal(rows["score"], expected.scores)
    # .label: SemanticKITTI raw ids, readable with the config beside it
    raw = read_label_file(out / "scan.label", len(pts))
    np.testing.assert_array_equal(raw, labels_to_raw_ids(expected.labels, names))
    config = yaml.safe_load((out / "labels.yaml").read_text())
    assert {config["labels"][int(i)] for i in np.unique(raw)} <= set(names) | {"unlabeled"}
    assert config["labels"][40] == "road" and config["color_map"][40] == [int(c) for c in colours[names.index("road")][::-1]]
    # the bag, read by rosbags ...
    with AnyReader([out / "bag"]) as reader:
        conns = {c.topic: c for c in reader.connections}
        assert set(conns) == {POINTS_TOPIC, LEGEND_TOPIC}
        from rosbags.interfaces import QosDurability

        assert [q.durability for q in conns[LEGEND_TOPIC].ext.offered_qos_profiles] == [QosDurability.TRANSIENT_LOCAL]
        clouds = [reader.deserialize(raw_msg, c.msgtype) for c, _, raw_msg in reader.messages([conns[POINTS_TOPIC]])]
    from relidar.core.pointcloud2 import read_cloud

    assert len(clouds) == 1
    cloud = read_cloud(clouds[0])
    c = len(names)
    np.testing.assert_array_equal(cloud["label"], np.where(expected.labels >= 0, expected.labels, c))
    np.testing.assert_array_equal(cloud["x"], pts[:, 0])
    # ... and by the mcap library with its ROS 2 decoder (what Foxglove uses: the schemas in the file)
    with open(out / "bag" / "bag.mcap", "rb") as fh:
        decoded = {ch.topic: msg for _, ch, _, msg in make_reader(fh, decoder_factories=[DecoderFactory()])
                   .iter_decoded_messages()}
    assert [f.name for f in decoded[POINTS_TOPIC].fields] == ["x", "y", "z", "intensity", "label", "score", "rgb"]
    assert decoded[POINTS_TOPIC].width == len(pts) and decoded[POINTS_TOPIC].header.frame_id == "lidar"
    legend = [m.text for m in decoded[LEGEND_TOPIC].markers if m.text]
    assert legend == [*names, "unknown"]


def test_folder_with_a_broken_scan_writes_the_rest_and_exits_1(bundle: Path, tmp_path: Path) -> None:
    data = tmp_path / "scans"
    data.mkdir()
    street_scan(500, 1).tofile(data / "a.bin")
    street_scan(400, 2).tofile(data / "b.bin")
    (data / "c.bin").write_bytes(b"1234567")
    out = tmp_path / "out"
    result, text = _run("segment", data, "--bundle", bundle, "--out", out, "--write", "ply,label")
    assert result.exit_code == 1
    assert f"{data / 'c.bin'}: 7 bytes is not a multiple of 16" in text and "1 of 3 scan(s) could not be read" in text
    assert read_scan(out / "a.ply").shape == (500, 4) and read_label_file(out / "b.label", 400).shape == (400,)
    assert not (out / "bag").exists()


def test_semantickitti_sequence_and_bag_from_synth(bundle: Path, tmp_path: Path) -> None:
    from rosbags.highlevel import AnyReader

    log = tmp_path / "log"
    result, _ = _run("synth", "--frames", "2", "--format", "semantickitti", "--width", "32", "--height", "32",
                     "--cameras", "front", "--out", log)
    assert result.exit_code == 0, result.output
    # the README's `relidar synth ... --out log && relidar prepare log`: --out is exactly the log
    result, text = _run("prepare", log, "--out", tmp_path / "cache", "--teacher", "synthetic", "--superpixels", "20")
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'cache'}" in text and (tmp_path / "cache" / "manifest.json").is_file()
    out = tmp_path / "seg_kitti"
    result, text = _run("segment", log, "--bundle", bundle, "--out", out, "--write", "label,ply", "--pictures", "0")
    assert result.exit_code == 0, result.output
    for stem in ("000000", "000001"):
        n = len(read_scan(log / "sequences" / "00" / "velodyne" / f"{stem}.bin"))
        assert read_label_file(out / "sequences" / "00" / "predictions" / f"{stem}.label", n).shape == (n,)
        assert (out / "sequences" / "00" / "ply" / f"{stem}.ply").is_file()

    bag = tmp_path / "bag"
    result, _ = _run("synth", "--frames", "2", "--format", "bag", "--width", "32", "--height", "32",
                     "--cameras", "front", "--out", bag)
    assert result.exit_code == 0, result.output
    out = tmp_path / "seg_bag"
    result, text = _run("segment", bag, "--bundle", bundle, "--out", out, "--write", "bag")
    assert result.exit_code == 0, result.output
    with AnyReader([bag]) as reader:
        stamps_in = [t for c, t, _ in reader.messages([c for c in reader.connections if c.topic == "/lidar/points"])]
    with AnyReader([out / "bag"]) as reader:
        stamps_out = [t for c, t, _ in reader.messages([c for c in reader.connections if c.topic == POINTS_TOPIC])]
    assert stamps_out == stamps_in and len(stamps_in) == 2


def test_out_rule_and_bad_inputs(bundle: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", street_scan(200))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result, text = _run("segment", tmp_path / "s.npy", "--bundle", bundle, "--out", tmp_path / "full")
    assert result.exit_code == 1 and f"{tmp_path / 'full'}: --out: exists and is not empty" in text
    for bad in ("car,,road", "", " , "):
        result, text = _run("segment", tmp_path / "s.npy", "--bundle", bundle, "--out", tmp_path / "o", "--classes", bad)
        assert result.exit_code == 1 and "--classes" in text and "non-empty names" in text, (bad, text)
        assert not (tmp_path / "o").exists(), "a refused option writes nothing"
    np.save(tmp_path / "nan.npy", np.full((50, 4), np.nan, np.float32))
    result, text = _run("segment", tmp_path / "nan.npy", "--bundle", bundle, "--out", tmp_path / "n")
    assert result.exit_code == 1 and "no scan had a finite point" in text and "none finite" in text
    assert "RuntimeWarning" not in result.output
    # a folder of scans is an input; its all-NaN scan is warned about and makes the exit code 1, the other is written
    result, text = _run("segment", tmp_path, "--bundle", bundle, "--out", tmp_path / "d", "--write", "ply")
    assert result.exit_code == 1 and f"wrote {tmp_path / 'd' / 's.ply'}" in text, text
    assert "1 of 2 scan(s) had nothing labelled" in text


def test_formulation_option_gives_the_same_labels(bundle: Path, tmp_path: Path) -> None:
    """--formulation table runs the neighbour-table graph (one gather and one GEMM per conv) on the CPU:
    the labels are the pair-list graph's; a misspelt value is one line and exit 1, nothing written."""
    pts = street_scan(3000, 3)
    np.save(tmp_path / "scan.npy", pts)
    labels = {}
    for formulation in ("pairs", "table"):
        out = tmp_path / formulation
        result, _ = _run("segment", tmp_path / "scan.npy", "--bundle", bundle, "--out", out, "--backend", "onnxruntime",
                         "--formulation", formulation, "--write", "label")
        assert result.exit_code == 0, result.output
        labels[formulation] = read_label_file(out / "scan.label")
    assert np.array_equal(labels["pairs"], labels["table"])
    result, text = _run("segment", tmp_path / "scan.npy", "--bundle", bundle, "--out", tmp_path / "bad",
                        "--formulation", "tables")
    assert result.exit_code == 1 and "--formulation" in text and "choose from auto, pairs, table" in text
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_lanes_write_what_one_lane_writes(bundle: Path, tmp_path: Path) -> None:
    """--lanes 2 labels two scans at a time with one Segmenter: the same labels, the same bag in input order,
    the same report of an unreadable scan, as one scan at a time."""
    from rosbags.highlevel import AnyReader

    data = tmp_path / "scans"
    data.mkdir()
    for i, n in enumerate((900, 300, 700, 200, 800)):  # sizes in turn, so lanes finish out of order
        street_scan(n, 10 + i).tofile(data / f"{i:02d}.bin")
    (data / "02b.bin").write_bytes(b"1234567")
    labels, stamps = {}, {}
    for lanes in ("1", "2"):
        out = tmp_path / f"lanes{lanes}"
        result, text = _run("segment", data, "--bundle", bundle, "--out", out, "--write", "label,bag", "--lanes", lanes)
        assert result.exit_code == 1 and "1 of 6 scan(s) could not be read" in text, text
        labels[lanes] = {f.name: read_label_file(f) for f in sorted(out.glob("*.label"))}
        with AnyReader([out / "bag"]) as reader:
            stamps[lanes] = [t for c, t, _ in reader.messages([c for c in reader.connections if c.topic == POINTS_TOPIC])]
    assert list(labels["1"]) == [f"{i:02d}.label" for i in range(5)]
    assert labels["1"].keys() == labels["2"].keys()
    for name in labels["1"]:
        assert np.array_equal(labels["1"][name], labels["2"][name]), name
    assert stamps["2"] == stamps["1"] == sorted(stamps["1"]) and len(stamps["1"]) == 5
