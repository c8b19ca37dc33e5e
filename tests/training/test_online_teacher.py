"""Batch preparation in DataLoader workers (same batches, packed transfers) and the online teacher (the
teacher in the training step gives the student an exact per-pair cache gives; each DDP rank its own copy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from support.tiny_dataset import write_synthetic_kitti
from support.tiny_distill import tiny_config_tree, write_config

from relidar.core.config import load_config
from relidar.training.config import DistillConfig, LoaderConfig
from relidar.training.data import (
    DistillDataset,
    PackedBatch,
    StepBatches,
    ensure_cache,
    split_data,
    step_loader,
)
from relidar.training.distill import distill
from relidar.training.feature_cache import CacheReader, CacheSettings, CacheStorage, prepare_cache
from relidar.training.readers.base import open_dataset
from relidar.training.teachers.online import OnlineFrames, OnlineSource, online_pair_features

pytest.importorskip("open_clip")

from support.tiny_clip import build_tiny_teacher

REPO = Path(__file__).resolve().parents[2]


def _assert_batches_equal(a, b) -> None:
    ta, tb = a.tensors(), b.tensors()
    assert len(ta) == len(tb) and a.num_scans == b.num_scans
    for i, (x, y) in enumerate(zip(ta, tb)):
        assert (x is None) == (y is None), i
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), i


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> DistillConfig:
    tmp = tmp_path_factory.mktemp("tiny")
    tree = tiny_config_tree(tmp / "cache", frames=5)
    tree["train"].update({"batch_size": 2, "epochs": 2})
    cfg = load_config(write_config(tmp / "tiny.yaml", tree), DistillConfig)
    ensure_cache(cfg.data)
    return cfg


def test_workers_prepare_the_same_batches_and_packing_round_trips(tiny_cfg) -> None:
    split = split_data(tiny_cfg.data)
    cache = split.train_cache
    dataset = DistillDataset(cache, split.train, tiny_cfg.sampling, tiny_cfg.augment, tiny_cfg.train.seed)
    steps = StepBatches(dataset, tiny_cfg.student, 2, total=4)
    serial = [steps.batch(s) for s in range(1, 4)]
    for b in serial:
        packed = PackedBatch.pack(b)
        assert set(packed.buffers) == {"float32", "int64"}  # ~100 tensors in two buffers
        assert len([t for t in b.tensors() if t is not None]) > 50
        _assert_batches_equal(packed.to("cpu"), b)
    got = list(step_loader(steps, 1, 4, LoaderConfig(workers=2, prefetch=1), torch.device("cpu")))
    assert len(got) == 3
    for packed, ref in zip(got, serial):
        _assert_batches_equal(packed.to("cpu"), ref)


def test_distill_with_loader_workers_matches_serial(tiny_cfg, tmp_path) -> None:
    serial = distill(tiny_cfg.model_copy(update={"data": tiny_cfg.data.model_copy(update={"loader": LoaderConfig(workers=0)})}),
                     out=tmp_path / "serial")
    workers = distill(tiny_cfg.model_copy(update={"data": tiny_cfg.data.model_copy(update={"loader": LoaderConfig(workers=2)})}),
                      out=tmp_path / "workers")
    a, b = load_file(str(serial.weights)), load_file(str(workers.weights))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    summary = json.loads((workers.run_dir / "summary.json").read_text())
    assert summary["loader_workers"] == 2
    timing = summary["timing"]
    assert 0 <= timing["data_wait_fraction"] <= 1 and timing["step_mean_ms"] > 0
    rows = (workers.run_dir / "metrics.csv").read_text().splitlines()
    assert "data_wait_ms" in rows[0]


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> Path:
    return write_synthetic_kitti(tmp_path_factory.mktemp("kitti"), frames=5, beams=16)


def _online_tree(cache: Path, dataset: Path, online: bool) -> dict:
    tree = tiny_config_tree(cache)
    del tree["data"]["synthetic"]
    del tree["data"]["val"]  # held out: the dataset's own tail (the synthetic street's classes are not KITTI's)
    tree["data"]["val_fraction"] = 0.2
    if online:
        tree["data"]["online"] = {"dataset": str(dataset), "min_depth": 0.1}
    tree["student"]["out_dim"] = 32
    tree["train"].update({"batch_size": 2, "epochs": 2})
    tree["optimizer"] = {"name": "sgd", "lr": 0.05}
    return tree


def test_online_teacher_trains_the_student_an_exact_cache_trains(kitti, tmp_path) -> None:
    teacher = build_tiny_teacher(seed=7, image_size=64)
    exact = tmp_path / "exact"
    prepare_cache(open_dataset(kitti), exact, teacher, settings=CacheSettings(storage=CacheStorage(dtype="float32")))
    from_cache = load_config(write_config(tmp_path / "cache.yaml", _online_tree(exact, kitti, False)), DistillConfig)
    online = load_config(write_config(tmp_path / "online.yaml", _online_tree(exact, kitti, True)), DistillConfig)

    # The step's features: the batched ViT sampled on the device against the cache's rows.
    cache = CacheReader(exact)
    frames = OnlineFrames(online.data.online, teacher.feature_dim)
    assert len(frames) == len(cache) and frames.frame_ids == cache.frame_ids
    split = split_data(from_cache.data)
    for src, grid in ((cache, None), (frames, teacher.patch_grid)):
        ds = DistillDataset(src, split.train, online.sampling, online.augment, online.train.seed)
        batch = StepBatches(ds, online.student, 2, patch_grid=grid).batch(1)
        if grid is None:
            want = batch
        else:
            assert batch.pair_features is None and len(batch.teacher_inputs.images) == 2
            got = online_pair_features(teacher, batch.teacher_inputs, "cpu")
            torch.testing.assert_close(got, want.pair_features, rtol=0, atol=2e-6)
            assert torch.equal(batch.pair_point, want.pair_point) and torch.equal(batch.pair_voxel, want.pair_voxel)

    a = distill(from_cache, out=tmp_path / "a")
    b = distill(online, out=tmp_path / "b", teacher=teacher)
    wa, wb = load_file(str(a.weights)), load_file(str(b.weights))
    moved = 0.0
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    torch.manual_seed(from_cache.train.seed)
    from relidar.model.network import Student

    init = Student(from_cache.student).state_dict()
    moved = max(float((init[k] - wa[k]).abs().max()) for k in wa if wa[k].is_floating_point())
    assert moved > 1e-3  # trained, so the match is not two untouched students
    summary = json.loads((b.run_dir / "summary.json").read_text())
    assert summary["timing"]["teacher_mean_ms"] > 0


def test_online_refuses_balanced_sampling(kitti, tmp_path) -> None:
    from relidar.training.augment import AugmentConfig
    from relidar.training.data import DataError
    from relidar.training.sampling import SamplingConfig

    frames = OnlineFrames(OnlineSource(dataset=str(kitti)), 32)
    with pytest.raises(DataError) as err:
        DistillDataset(frames, [0, 1], SamplingConfig(mode="balanced"), AugmentConfig(), 0)
    assert err.value.field == "sampling.mode"


def test_ddp_ranks_each_run_their_own_teacher(kitti, tmp_path) -> None:
    """Two CPU ranks (gloo), each building its own ViT-S/16 (random weights, built under a fixed seed),
    reach the weights one process reaches with the whole global batch online."""
    tree = _online_tree(tmp_path / "unused_cache", kitti, True)
    tree["data"]["online"]["teacher"] = {"model": "ViT-S-16", "pretrained": "none", "image_size": 48}
    tree["student"]["out_dim"] = 384
    tree["train"]["epochs"] = 1
    # Batch-scope pairs are drawn per rank (another objective than one process), as in test_distill_ddp.
    tree["sampling"]["scope"] = "scan"
    path = write_config(tmp_path / "online.yaml", tree)
    single = distill(load_config(path, DistillConfig), out=tmp_path / "single")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "relidar.cli.distill", "--config", str(path), "--out", str(tmp_path / "ddp"), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = load_file(str(tmp_path / "ddp" / "student.safetensors"))
    ref = load_file(str(single.weights))
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-3, atol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
    assert np.isfinite(single.final_loss)
