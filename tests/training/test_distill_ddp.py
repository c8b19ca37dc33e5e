"""Two CPU processes under torchrun (gloo) reach the weights one process reaches on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from support.tiny_distill import tiny_config_tree, write_config

from relidar.core.config import load_config
from relidar.training.config import DistillConfig
from relidar.training.data import ensure_cache
from relidar.training.distill import distill
from relidar.training.distributed import update_ratios

REPO = Path(__file__).resolve().parents[2]


def test_two_processes_match_one(tmp_path: Path) -> None:
    # 2 frames, global batch 2, 2 epochs: step 1 and step 2 (a new epoch: new order, new augmentation and
    # pair draws), one scan per rank under torchrun; the run keeps both steps' checkpoints.
    tree = tiny_config_tree(tmp_path / "cache", frames=2)
    tree["train"].update({"batch_size": 2, "epochs": 2})
    # Per-scan losses: a rank's mean over its scans, averaged by DDP, is the one process's mean over all.
    # (Batch-scope losses are applied per rank, as SLidR does per GPU: another objective than one process.)
    tree["sampling"]["scope"] = "scan"
    # SGD keeps the update linear in the gradient: the comparison measures the data-parallel arithmetic,
    # not Adam's sign-like first steps.
    tree["optimizer"] = {"name": "sgd", "lr": 0.05}
    tree["augment"] = {"enabled": True}
    path = write_config(tmp_path / "ddp.yaml", tree)
    cfg = load_config(path, DistillConfig)
    ensure_cache(cfg.data)

    single = distill(cfg, out=tmp_path / "single")
    assert single.steps == 2

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(REPO)
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "relidar.cli.distill", "--config", str(path), "--out", str(tmp_path / "ddp"), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "ddp"  # --out is exactly the run folder, made by rank 0 alone
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["device"], summary["backend"], summary["world_size"]) == ("cpu", "gloo", 2)

    torch.manual_seed(cfg.train.seed)
    from relidar.model.network import Student

    init = Student(cfg.student).state_dict()
    # Not bit-equal, and not meant to be: BatchNorm statistics reduced over two ranks are float32 sums in
    # another order than ATen's kernel in one process, and this tiny student amplifies that (its deep
    # levels hold a handful of voxels: ill-conditioned statistics). Measured (fraction of each tensor's
    # update): step 1 median 0.0014, worst 0.024; step 2 median 0.018, worst 0.09 -- deterministic, the
    # same on every run. A data-parallel defect is of the order of the update itself: BatchNorm left per
    # rank measured median 0.75 (worst 2.2) at both steps; gradients summed instead of averaged, or
    # another scan or draw on a rank, give ~1.
    for step, median_bound, worst_bound in ((1, 0.02, 0.1), (2, 0.1, 0.5)):
        got = load_file(str(run / "checkpoints" / f"step_{step:07d}.safetensors"))
        ref = load_file(str(tmp_path / "single" / "checkpoints" / f"step_{step:07d}.safetensors"))
        ratios = update_ratios(got, ref, init)
        values = sorted(ratios.values())
        worst = max(ratios, key=ratios.get)
        assert values[len(values) // 2] <= median_bound, f"step {step}: median {values[len(values) // 2]:.3g} of the update"
        assert ratios[worst] <= worst_bound, f"step {step}: {worst} is {ratios[worst]:.3g} of its update away"
    # the runs did move the weights (a vacuous match of two untrained students is no test)
    assert max(float((init[k] - ref[k]).abs().max()) for k in ref if ref[k].is_floating_point()) > 1e-3
