"""`relidar demo` end to end on a tiny budget: every stage's output exists and is valid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from relidar.demo.pipeline import DemoConfig, run_demo


def test_demo_tiny_budget(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    cfg = DemoConfig(frames=4, beams=16, horizontal_resolution_deg=1.5, camera_width=160, camera_height=90,
                     feature_dim=16, steps=2, pairs_per_scan=64, voxel_size=0.4, few_shot_scans=2, probe_steps=10,
                     finetune_steps=1, threads=1)
    stages: list[str] = []
    res = run_demo(tmp_path / "demo", cfg, on_stage=stages.append)
    assert len(stages) == 6
    out = res.out_dir
    assert (out / "log" / "sequences" / "00" / "velodyne" / "000003.bin").is_file()
    assert (out / "cache" / "manifest.json").is_file()
    # The demo's teacher is the version-2 simulated MaskCLIP, and the demo says its bundle is synthetic-only.
    assert "-v2." in json.loads((out / "cache" / "manifest.json").read_text())["teacher"]
    assert any("not a model for real sensors" in note for note in res.notes)
    assert (res.paths["run"] / "student.safetensors").is_file()
    report = json.loads((out / "report" / "report.json").read_text())
    for key in ("zero_shot_miou", "few_shot_miou", "gap", "cka", "finetune_miou"):
        assert 0.0 <= report["summary"][key] <= 1.0 or key == "gap", key
    assert (out / "bundle" / "manifest.json").is_file()
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["student"]["voxel_size"] == 0.4 and manifest["student"]["out_dim"] == 16
    for name in ("segmented_bundle.png", "ground_truth.png", "scores_bundle.png"):
        img = np.asarray(Image.open(out / "pictures" / name))
        assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0, name
    seg = json.loads((out / "pictures" / "segmentation.json").read_text())
    assert seg["points"] > 0 and 0.0 <= seg["accuracy_vs_truth"] <= 1.0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert set(summary["seconds"]) >= {"log", "prepare", "distill", "evaluate", "export", "segment", "total"}
