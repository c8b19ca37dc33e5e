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
    cfg = DemoConfig(frames=3, val_frames=1, beams=16, horizontal_resolution_deg=1.5, camera_width=160,
                     camera_height=90, feature_dim=16, steps=2, pairs_per_batch=64, voxel_size=0.4, few_shot_scans=2,
                     probe_steps=10, finetune_steps=1, threads=1)
    stages: list[str] = []
    res = run_demo(tmp_path / "demo", cfg, on_stage=stages.append)
    assert len(stages) == 6
    out = res.out_dir
    assert (out / "log" / "sequences" / "00" / "velodyne" / "000002.bin").is_file()
    # the held-out street: another world seed, SemanticKITTI's validation sequence number
    assert (out / "log" / "sequences" / "08" / "velodyne" / "000000.bin").is_file()
    train_ids = json.loads((out / "cache" / "manifest.json").read_text())["frame_ids"]
    val_ids = json.loads((out / "cache_val" / "manifest.json").read_text())["frame_ids"]
    assert len(train_ids) == 3 and len(val_ids) == 1 and not set(train_ids) & set(val_ids)
    # The demo's teacher is the version-2 simulated MaskCLIP, and the demo says its bundle is synthetic-only.
    assert "-v2." in json.loads((out / "cache" / "manifest.json").read_text())["teacher"]
    assert any("not a model for real sensors" in note for note in res.notes)
    assert (res.paths["run"] / "student.safetensors").is_file()
    report = json.loads((out / "report" / "report.json").read_text())
    for key in ("zero_shot_miou", "zero_shot_miou_seen", "probe_miou", "gap", "cka", "finetune_miou_1pct"):
        assert 0.0 <= report["summary"][key] <= 1.0 or key == "gap", key
    assert (out / "bundle" / "manifest.json").is_file()
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["student"]["voxel_size"] == 0.4 and manifest["student"]["out_dim"] == 16
    for name in ("segmented_bundle.png", "ground_truth.png", "scores_bundle.png"):
        img = np.asarray(Image.open(out / "pictures" / name))
        assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0, name
    seg = json.loads((out / "pictures" / "segmentation.json").read_text())
    assert seg["points"] > 0 and 0.0 <= seg["accuracy_vs_truth"] <= 1.0
    from relidar.viewer import load_view_data  # what `relidar view OUT/pictures` opens

    view = load_view_data(out / "pictures")
    assert len(view.scans[0].points) == seg["points"] and view.class_names
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["summary"]["student_over_teacher_visible"] == pytest.approx(
        report["summary"]["zero_shot_miou_visible"] / report["summary"]["teacher_miou_visible"])
    assert set(summary["seconds"]) >= {"log", "prepare", "distill", "evaluate", "export", "segment", "total"}
