"""``relidar bench segment`` and ``relidar segment`` end to end on a small scan (CLI, JSON, pictures)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from support.bundle_support import shared_bundle

from relidar.bench.segment import resize_scan
from relidar.cli.app import build_app


def _scan_file(tmp_path, n: int = 4000):
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-15, 15, (n, 3))
    xyz[:, 2] = rng.uniform(-2, 1, n)
    pts = np.concatenate([xyz, rng.random((n, 1))], axis=1).astype(np.float32)
    path = tmp_path / "scan.bin"
    pts.tofile(path)
    return path, pts


def test_bench_segment_json(tmp_path_factory, tmp_path) -> None:
    pytest.importorskip("spconv")
    scan, _ = _scan_file(tmp_path)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(build_app(), [
        "bench", "segment", "--bundle", str(shared_bundle(tmp_path_factory)), "--scan", str(scan),
        "--backend", "onnxruntime", "--repeat", "2", "--sweep", "--sweep-sizes", "1500,6000", "--sweep-repeat", "1",
        "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for key in ("points", "preprocess_ms_p50", "network_ms_p50", "total_ms_p50", "total_ms_p90", "peak_rss_mb",
                "spconv_total_ms_p50", "ratio", "network_vs_spconv", "network_vs_pytorch", "spconv_label_agreement"):
        assert key in data and data[key] is not None, key
    assert data["points"] == 4000 and data["backend"] == "onnxruntime"
    assert data["total_ms_p90"] >= data["total_ms_p50"] > 0 and data["peak_rss_mb"] > 10
    assert data["ratio"] == pytest.approx(data["total_ms_p50"] / data["spconv_total_ms_p50"])
    # every side in the same rounds: ours, the PyTorch forward of the same graph, spconv; one thread count
    entries = data["entries"]
    assert {"onnxruntime-pairs", "torch-pairs", "spconv"} <= set(entries) and data["pytorch_entry"] == "torch-pairs"
    assert entries["spconv"]["kind"] == entries["torch-pairs"]["kind"] == "reference"
    assert entries["onnxruntime-pairs"]["kind"] == "ours" and data["load_errors"] == {}
    assert entries["onnxruntime-pairs"]["total_ms_p50"] == data["total_ms_p50"]
    assert data["network_vs_pytorch"] == pytest.approx(data["network_ms_p50"] / entries["torch-pairs"]["network_ms_p50"])
    assert data["network_vs_spconv"] == pytest.approx(data["network_ms_p50"] / data["spconv_network_ms_p50"])
    # the references ran on the same scan, weights and classes: they label it as ours does
    assert entries["torch-pairs"]["label_agreement"] >= 0.999 and data["spconv_label_agreement"] >= 0.99
    machine = data["machine"]
    assert data["threads"] == machine["threads"] == machine["torch"]["threads"] == 1
    assert machine["cpu_model"] and machine["usable_cpus"] >= 1 and machine["logical_cpus"] >= machine["usable_cpus"]
    assert "numpy_blas" in machine and machine["torch"]["blas"] and "gpu" in machine
    assert [s["points"] for s in data["sweep"]] == [1500, 6000]
    assert data["sweep"][1]["voxels"] > data["sweep"][0]["voxels"]
    assert (tmp_path / "bench_sweep.png").stat().st_size > 1000


def test_bench_segment_compares_the_two_graphs_in_one_run(tmp_path_factory, tmp_path) -> None:
    scan, _ = _scan_file(tmp_path)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(build_app(), [
        "bench", "segment", "--bundle", str(shared_bundle(tmp_path_factory)), "--scan", str(scan),
        "--backend", "onnxruntime", "--repeat", "2", "--no-spconv", "--compare-formulations", "--threads", "1",
        "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["formulation"] == "pairs" and set(data["formulations"]) == {"pairs", "table"}
    # every available backend in both graphs, and torch with both pipelines, in the same rounds
    assert {"onnxruntime-pairs", "onnxruntime-table", "torch-pairs", "torch-table", "torch-pairs-resident",
            "torch-table-resident"} <= set(data["entries"]) and "spconv" not in data["entries"]
    assert all(e["label_agreement"] >= 0.999 for e in data["entries"].values())
    for entry in data["formulations"].values():
        assert entry["network_ms_p50"] > 0 and entry["total_ms_p50"] >= entry["network_ms_p50"]
        assert entry["label_agreement"] >= 0.999  # the same network in another graph
    assert data["formulations"]["pairs"]["label_agreement"] == 1.0


def test_bench_segment_measures_lanes_against_single_calls(tmp_path_factory, tmp_path) -> None:
    """--lanes 2: the node's way (two calls at once on one Segmenter) next to calls one at a time."""
    from relidar.core.segmenter import lane_threads

    scan, _ = _scan_file(tmp_path)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(build_app(), [
        "bench", "segment", "--bundle", str(shared_bundle(tmp_path_factory)), "--scan", str(scan),
        "--backend", "onnxruntime", "--repeat", "2", "--no-spconv", "--lanes", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    lanes = json.loads(out.read_text())["lanes"]
    assert lanes["lanes"] == 2 and lanes["threads_per_call"] == lane_threads(2)
    assert lanes["single_scans_per_s"] > 0 and lanes["lanes_scans_per_s"] > 0 and lanes["lanes_call_total_ms_p50"] > 0
    assert lanes["label_agreement"] == 1.0  # concurrent calls label as single ones


def test_machine_info_reads_this_machine_and_leaves_torch_unloaded(monkeypatch) -> None:
    import os
    import sys

    from relidar.bench import machine

    cpus = len(os.sched_getaffinity(0))
    cores = machine.physical_cores()
    assert cores is None or 1 <= cores <= cpus
    assert machine.default_threads() == (cores or cpus)
    info = machine.machine_info(3)
    assert info["threads"] == 3 and info["usable_cpus"] == cpus and info["cpu_model"]
    lscpu = {line.split(":", 1)[0]: line.split(":", 1)[1].strip()
             for line in os.popen("lscpu 2>/dev/null").read().splitlines() if ":" in line}
    if "Model name" in lscpu:  # an independent reading of the CPU's name
        assert info["cpu_model"] == lscpu["Model name"]
    import numpy as np

    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    assert info["numpy_blas"].startswith(blas)
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # a run that never imported torch
    assert machine.torch_build() is None and machine.gpu_name() is None


def test_resize_scan_subsamples_and_duplicates() -> None:
    pts = np.random.default_rng(1).random((100, 4)).astype(np.float32)
    small = resize_scan(pts, 40)
    assert small.shape == (40, 4) and len({tuple(r) for r in small} - {tuple(r) for r in pts}) == 0
    big = resize_scan(pts, 250)
    assert big.shape == (250, 4) and np.array_equal(big[:100], pts)
    assert np.abs(big[100:, :3] - pts[:, :3].mean(0)).max() < 2.0  # copies stay near the scan


def test_segment_cli_writes_ply_and_bev(tmp_path_factory, tmp_path) -> None:
    from relidar.core.scan_io import read_scan

    scan, pts = _scan_file(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(build_app(), ["segment", str(scan), "--bundle", str(shared_bundle(tmp_path_factory)),
                                              "--out", str(out), "--backend", "onnxruntime",
                                              "--classes", "car,road,tree"])
    assert result.exit_code == 0, result.output
    back = read_scan(out / "scan.ply")
    np.testing.assert_allclose(back[:, :3], pts[:, :3])
    raw = (out / "scan.ply").read_bytes()
    assert b"property int label" in raw and b"property float score" in raw
    assert (out / "scan_bev.png").stat().st_size > 1000
    assert "tree" in result.output or "car" in result.output or "road" in result.output


def test_segment_cli_reports_bad_bundle(tmp_path) -> None:
    scan, _ = _scan_file(tmp_path, 100)
    result = CliRunner().invoke(build_app(), ["segment", str(scan), "--bundle", str(tmp_path / "nope"),
                                              "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output == f"error: {tmp_path / 'nope'}: bundle folder not found (write one with `relidar export bundle`)\n"
