"""``relidar bench train`` end to end on a small synthetic dataset: the JSON has every stage, the compact
modes are smaller than the exact one, the bottleneck is one of the measured stages."""

from __future__ import annotations

import json

import pytest
import torch
from support.tiny_dataset import write_synthetic_kitti
from typer.testing import CliRunner

pytest.importorskip("open_clip")


def test_bench_train_json(tmp_path) -> None:
    from relidar.cli.app import build_app

    dataset = write_synthetic_kitti(tmp_path / "kitti", frames=1)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(build_app(), [
        "bench", "train", "--dataset", str(dataset), "--copies", "3", "--batch-size", "2", "--steps", "2",
        "--workers", "0,1", "--model", "ViT-S-16", "--image-size", "48", "--projection-dim", "8", "--pairs", "64",
        "--voxel-size", "0.5", "--threads", "1", "--json", str(out), "--out", str(tmp_path / "runs")],
        env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    sizes = {mode: entry["bytes_per_frame"] for mode, entry in r["cache"].items()}
    assert list(sizes) == ["pairs float16", "grid float16", "grid int8, PCA 8-d"]
    assert sizes["grid int8, PCA 8-d"] < sizes["grid float16"] < sizes["pairs float16"]
    assert set(r["batch_preparation"]["phases_ms_p50"]) == {"read_augment_draw", "voxelize", "kernel_maps", "tensors", "pack"}
    assert set(r["loader"]) == {"cpu/workers=0", "cpu/workers=1"}
    assert r["forward_backward"]["cpu"]["scans_per_s"] > 0 and r["online_teacher"]["cpu"]["images_per_s"] > 0
    loop = r["training_loop"]["cpu/workers=1"]
    assert 0 <= loop["data_wait_fraction"] <= 1 and loop["step_mean_ms"] > 0
    cache = r["bottleneck"]["cpu/cache"]
    assert cache["stage"] in cache["scans_per_s"] and cache["scans_per_s"][cache["stage"]] == min(cache["scans_per_s"].values())
    assert r["devices_skipped"] == ([] if torch.cuda.is_available() else ["cuda"])
