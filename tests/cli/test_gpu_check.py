"""scripts/gpu_check.sh: the one-line refusal where there is no GPU, and its harness run on the CPU (the
sections take a device so everything but CUDA itself is exercised here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.bundle_support import shared_bundle

from relidar.bench import gpu_check
from relidar.bench.spconv_reference import torch_threads
from relidar.synthetic import lidar_sweep
from relidar.synthetic.lidar import LidarConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script would run the whole check")
def test_refuses_in_one_line_without_a_gpu(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no NVIDIA GPU" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(gpu_check.GpuCheckError):
        gpu_check.run_gpu_check(gpu_check.GpuCheckOptions(out=tmp_path / "lib"))


@pytest.mark.slow
def test_harness_on_the_cpu(tmp_path: Path, tmp_path_factory) -> None:
    scan = lidar_sweep(lidar=LidarConfig(beams=8, horizontal_resolution_deg=360 / 384)).points
    report = gpu_check.GpuCheckReport(started="test", gpus=["none (CPU harness test)"])
    bundle = shared_bundle(tmp_path_factory)
    with torch_threads(1):  # small tensors: threads only add contention on a shared box
        gpu_check._record(report, "kernel_maps", lambda: gpu_check.kernel_maps_check(scan, device="cpu"), None)
        gpu_check._record(report, "student", lambda: gpu_check.student_checks(scan, ("fast",), ("off", "bf16"), 1,
                                                                               device="cpu"), None)
        gpu_check._record(report, "backends", lambda: gpu_check.backend_checks(tmp_path / "b", scan, 3000, 1,
                                                                               device="cpu", engines=False,
                                                                               bundle_dir=bundle), None)
        gpu_check._record(report, "ddp", lambda: gpu_check.ddp_check(tmp_path / "ddp", device="cpu", amps=("off",)), None)
        gpu_check._record(report, "broken", lambda: 1 / 0, None)
    sections = report.sections
    assert [n for n, s in sections.items() if not s["ok"]] == ["broken"]
    assert "ZeroDivisionError" in sections["broken"]["error"]
    ddp = sections["ddp"]["result"]
    assert ddp["ok"] and ddp["expected_backend"] == "gloo" and ddp["runs"]["off"]["within_bounds"], ddp
    assert ddp["runs"]["off"]["step_1_update_ratio"]["median"] <= 0.02
    maps = sections["kernel_maps"]["result"]
    assert maps["maps_identical"] and maps["tables_identical"]
    rows = sections["student"]["result"]
    assert {(r["formulation"], r["amp"]) for r in rows} == {(f, a) for f in ("pairs", "table") for a in ("off", "bf16")}
    assert all(r["forward_finite"] and r["grads_finite"] and r["matches_cpu"] for r in rows)
    cases = sections["backends"]["result"]["cases"]
    assert set(cases) == {"scan", "scan_1_class", "scan_256_classes", "tiny", "max_size"}
    assert cases["tiny"]["empty_pair_lists"] > 0 and cases["max_size"]["voxels"] > 2500
    for case in cases.values():
        for name, entry in case["backends"].items():
            assert "error" not in entry, (name, entry)
            assert entry["label_agreement"] >= 0.999 and entry["max_feature_error"] <= 1e-4, (name, entry)
    json_path, md_path = gpu_check.write_report(report, tmp_path, "synthetic")
    assert json.loads(json_path.read_text())["sections"]["student"]["ok"]
    summary = md_path.read_text()
    assert "## broken: FAILED" in summary and "| fast | table | bf16 |" in summary


def test_segmenter_section_on_the_cpu(tmp_path: Path, tmp_path_factory) -> None:
    """The GPU-resident Segmenter's section, run with the same code on the CPU: the device's voxels are numpy's,
    its labels the reference's, and the end-to-end timing covers the whole call."""
    scan = lidar_sweep(lidar=LidarConfig(beams=8, horizontal_resolution_deg=360 / 384)).points
    with torch_threads(1):
        result = gpu_check.segmenter_check(tmp_path, scan, 2, device="cpu", bundle_dir=shared_bundle(tmp_path_factory))
    assert result["device"] == "cpu" and result["gpu"] is None and result["points"] == len(scan)
    assert result["voxels_identical"] and result["point_to_voxel_identical"] and result["max_feature_diff"] <= 4e-6
    assert result["formulation"] == "pairs" and result["voxels"] > 100
    for name in ("resident", "host"):
        entry = result[name]
        assert entry["label_agreement"] >= 0.999, (name, entry)  # vs ONNX Runtime on the CPU
        assert entry["end_to_end_ms_p90"] >= entry["end_to_end_ms_p50"] >= entry["total_ms_p50"] > 0, entry
        assert set(entry) >= {"preprocess_ms_p50", "network_ms_p50"}
    assert result["meets_target"] == (result["resident"]["end_to_end_ms_p50"] <= 10.0)
    summary = gpu_check.summary_markdown({"started": "test", "gpus": [], "sections": {
        "segmenter": {"ok": True, "seconds": 1.0, "result": result, "error": None}}})
    assert "## segmenter: ok" in summary and "end_to_end_ms_p50" in summary
