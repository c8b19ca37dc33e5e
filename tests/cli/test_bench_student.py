"""`relidar bench student` runs end to end on a small cloud and writes sane JSON (no timing asserts)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from relidar.bench.spconv_reference import spconv_available
from relidar.cli.app import build_app

pytestmark = pytest.mark.skipif(not spconv_available(), reason="spconv (the reference) is not installed")


def test_bench_student_command_writes_sane_json(tmp_path) -> None:
    rng = np.random.default_rng(0)
    scan = tmp_path / "small.npy"
    np.save(scan, np.c_[rng.uniform(-15, 15, (3000, 2)), rng.uniform(-2, 1, (3000, 1)), rng.uniform(0, 1, (3000, 1))].astype(np.float32))
    out_json = tmp_path / "result.json"
    result = CliRunner().invoke(build_app(), [
        "bench", "student", "--profile", "fast", "--scan", str(scan), "--repeat", "2", "--warmup", "1",
        "--voxel-size", "0.4", "--out-dim", "16", "--threads", "1", "--json", str(out_json), "--out", str(tmp_path / "runs"),
    ])
    assert result.exit_code == 0, result.output
    data = json.loads(out_json.read_text())
    for key in ("points", "voxels", "ours_ms_p50", "spconv_ms_p50", "ratio", "max_abs_diff", "threads", "params",
                "kernel_maps_numpy_ms", "kernel_maps_torch_ms", "profile", "voxel_size"):
        assert key in data, key
    assert data["points"] == 3000
    assert 0 < data["voxels"] <= 3000 and data["voxels_per_level"][0] == data["voxels"]
    assert data["profile"] == "fast" and data["voxel_size"] == 0.4
    assert data["max_abs_diff"] <= 1e-4
    assert data["ours_ms_p50"] > 0 and data["spconv_ms_p50"] > 0 and data["ratio"] > 0
    assert len(data["ours_ms"]) == len(data["spconv_ms"]) == 2
    assert data["threads"] == 1 == data["machine"]["threads"] == data["machine"]["torch"]["threads"]
    assert data["machine"]["cpu_model"] and data["machine"]["usable_cpus"] >= 1
    # the same network every way it runs here, in the same rounds: the exported graph on every backend of the
    # registry, the PyTorch forward in both formulations, spconv; each against the PyTorch forward's output
    entries = data["entries"]
    assert {"pytorch-pairs", "pytorch-table", "spconv", "onnxruntime-pairs", "onnxruntime-table"} <= set(entries)
    assert data["load_errors"] == {}
    assert entries["pytorch-pairs"]["ms_p50"] == data["ours_forward_ms_p50"] and entries["pytorch-pairs"]["vs_pytorch"] == 1
    assert entries["spconv"]["ms_p50"] == data["spconv_ms_p50"] and entries["spconv"]["kind"] == "reference"
    for name, entry in entries.items():
        assert entry["ms_p50"] > 0 and entry["vs_pytorch"] == pytest.approx(entry["ms_p50"] / data["ours_forward_ms_p50"])
        assert entry["max_abs_diff"] <= 1e-4, name  # the same weights on the same scan
    assert entries["onnxruntime-pairs"]["kind"] == "ours"
    # --out is exactly the run folder (relidar.core.rundir), and every file written is named
    assert (tmp_path / "runs" / "student.yaml").is_file() and (tmp_path / "runs" / "bench_student.json").is_file()
    assert "bench_student.json" in result.output


def test_bench_student_rejects_unknown_profile(tmp_path) -> None:
    result = CliRunner().invoke(build_app(), ["bench", "student", "--profile", "huge", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: --profile: 'huge'") and result.output.count("\n") == 1


def test_bench_student_uses_the_weights_file_config(tmp_path) -> None:
    import torch

    from relidar.model.network import Student, StudentConfig
    from relidar.model.weights import save_student

    torch.manual_seed(0)
    weights = save_student(Student(StudentConfig(profile="fast", voxel_size=0.5, out_dim=8)), tmp_path / "s.safetensors")
    rng = np.random.default_rng(1)
    scan = tmp_path / "small.npy"
    np.save(scan, rng.uniform(-10, 10, (1500, 4)).astype(np.float32))
    out_json = tmp_path / "result.json"
    result = CliRunner().invoke(build_app(), [
        "bench", "student", "--weights", str(weights), "--scan", str(scan), "--repeat", "1", "--warmup", "0",
        "--threads", "1", "--json", str(out_json), "--out", str(tmp_path / "runs"),
    ])
    assert result.exit_code == 0, result.output
    data = json.loads(out_json.read_text())
    assert data["profile"] == "fast" and data["voxel_size"] == 0.5
    assert data["max_abs_diff"] <= 1e-4
