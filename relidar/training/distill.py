"""The distillation loop: student features at paired points are pulled towards the teacher's.

One process or several under ``torchrun`` (see ``relidar.training.distributed``). Outputs in the run
folder: ``config.yaml`` (effective config), ``metrics.csv`` (losses and learning rate per logged
step), ``tensorboard/``, ``checkpoints/`` (see ``relidar.training.checkpoint``), ``student.safetensors``
(final weights, config in its metadata) and ``summary.json``.

Batches come from DataLoader workers (``relidar.training.data.step_loader``); the loop records how long
it waits for each (``data_wait_ms`` in the metrics, ``timing`` in the summary). With ``data.online`` the
teacher runs in the step on the batch's images (``relidar.training.teachers.online``), this rank's own copy.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from relidar.core.config import save_config
from relidar.core.errors import RelidarError
from relidar.core.graph import resolve_formulation
from relidar.core.rundir import run_dir as new_run_dir
from relidar.model.kernel_maps_torch import build_neighbour_tables_torch
from relidar.model.network import Student
from relidar.training.checkpoint import (
    TrainPosition,
    final_weights_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_run_student,
)
from relidar.training.config import DistillConfig
from relidar.training.data import (
    Batch,
    DistillDataset,
    Split,
    StepBatches,
    loader_workers,
    split_data,
    step_loader,
    steps_per_epoch,
)
from relidar.training.distributed import (
    DistContext,
    PlacementError,
    all_reduce_mean,
    barrier,
    broadcast_object,
    globalise_batchnorm,
    place_rank,
)
from relidar.training.losses import batch_loss
from relidar.training.teachers.base import BatchTeacher
from relidar.training.teachers.online import OnlineFrames, build_online_teacher, online_pair_features

CONFIG_NAME = "config.yaml"
METRICS_CSV = "metrics.csv"


class DistillError(RelidarError, RuntimeError):
    """A run that cannot start or continue; the message names the setting or file to fix."""


@dataclass(frozen=True)
class DistillResult:
    run_dir: Path
    weights: Path
    steps: int
    final_loss: float
    seconds: float


def pick_device(config: DistillConfig, ctx: DistContext) -> torch.device:
    """A rank of a process group trains where :func:`~relidar.training.distributed.init_from_env` placed it
    (its group is bound to that device); a single process places itself the same way."""
    if ctx.enabled:
        return torch.device(ctx.device)
    try:
        return torch.device(place_rank(config.train.device, 0, 1, torch.cuda.device_count()).device)
    except PlacementError as exc:
        raise DistillError(exc.message, field=exc.field, hint=exc.hint) from exc


def build_optimizer(model: nn.Module, config: DistillConfig) -> torch.optim.Optimizer:
    """The optimizer of ``config.loss.type``: ``optimizer`` with its ``per_loss`` overrides applied, so each
    loss can be trained as its own paper trains it (SLidR: SGD lr 0.5; ScaLR: AdamW lr 2e-3)."""
    opt = config.optimizer.for_loss(config.loss.type)
    if opt.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum, dampening=opt.dampening,
                               weight_decay=opt.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)


def lr_factor(step: int, total: int, config: DistillConfig) -> float:
    """Multiplier of the peak lr after ``step`` steps: linear warm-up, then constant or cosine decay."""
    sched = config.schedule
    if sched.warmup_steps and step < sched.warmup_steps:
        return (step + 1) / sched.warmup_steps
    if sched.name == "constant":
        return 1.0
    span = max(1, total - sched.warmup_steps)
    t = min(1.0, (step - sched.warmup_steps) / span)
    return sched.min_lr_ratio + (1 - sched.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def autocast_context(config: DistillConfig, device: torch.device):
    """Mixed precision on CUDA only. Its numerics (fp32 sums in the sparse convs and the all-reduce
    BatchNorm) are tested under CPU autocast; the CUDA kernels themselves only on a GPU (gpu_check)."""
    if device.type != "cuda" or config.train.amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if config.train.amp == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def sparse_formulation(config: DistillConfig, device: torch.device) -> str:
    """``train.formulation`` on ``device``; auto = neighbour tables on CUDA (a few large kernels per convolution
    instead of ~80 small ones), pair lists on the CPU, where tables measured 1.6-1.7x slower per training step
    (README; the rule is relidar.core.graph.resolve_formulation)."""
    return resolve_formulation(config.train.formulation, device.type)


def pair_features(model: nn.Module, batch: Batch, formulation: str = "pairs") -> torch.Tensor:
    """Student embeddings [M, D] at the batch's paired points, the kernel maps in ``formulation``."""
    maps = batch.inputs.maps if formulation == "pairs" else build_neighbour_tables_torch(batch.inputs.maps)
    voxel_out = model(batch.inputs.features, maps)
    return voxel_out.index_select(0, batch.pair_voxel)


@dataclass
class StepTimes:
    """Where the training loop's time went, per step: waiting for the next batch from the loader
    (``wait``; ~0 when batch preparation keeps up), the online teacher (``teacher``) and the rest."""

    wait: list[float]
    teacher: list[float]
    total: list[float]

    def summary(self) -> dict[str, float]:
        """Milliseconds; the first step (which also starts the workers) is reported apart."""
        def stats(name: str, xs: list[float]) -> dict[str, float]:
            rest = np.asarray(xs[1:] or xs, dtype=np.float64) * 1e3
            return {f"{name}_first_ms": xs[0] * 1e3 if xs else float("nan"),
                    f"{name}_mean_ms": float(rest.mean()) if rest.size else float("nan"),
                    f"{name}_p90_ms": float(np.percentile(rest, 90)) if rest.size else float("nan")}

        out = {**stats("data_wait", self.wait), **stats("teacher", self.teacher), **stats("step", self.total)}
        out["data_wait_fraction"] = float(sum(self.wait[1:]) / max(sum(self.total[1:]), 1e-12)) if len(self.total) > 1 else 0.0
        return out


def total_steps(config: DistillConfig, num_train: int) -> int:
    spe = steps_per_epoch(num_train, config.train.batch_size)
    if spe == 0:
        raise DistillError(f"{config.train.batch_size} exceeds the {num_train} training frames", field="train.batch_size",
                           hint="lower train.batch_size or add frames")
    steps = config.train.epochs * spe
    return min(steps, config.train.max_steps) if config.train.max_steps else steps


class _Logger:
    """CSV rows and TensorBoard scalars (rank 0 only)."""

    def __init__(self, run_dir: Path, config: DistillConfig, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS_CSV
        self.writer = None
        self.fields: list[str] | None = None
        if not enabled:
            return
        if self.path.exists():
            # Resuming: drop rows logged after the checkpoint (they will be logged again).
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
            if rows:
                self.fields = list(rows[0].keys())
                with open(self.path, "w", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=self.fields)
                    w.writeheader()
                    w.writerows(rows)
            else:
                self.path.unlink()
        if config.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **values}
        new = self.fields is None
        if new:
            self.fields = list(row.keys())
        with open(self.path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.fields)
            if new:
                w.writeheader()
            w.writerow(row)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def prepare_run_dir(config: DistillConfig, out: Path | None, resume: Path | None, ctx: DistContext, name: str) -> Path:
    if resume is not None:
        if not (Path(resume) / CONFIG_NAME).is_file():
            raise DistillError(f"not a distillation run folder ({CONFIG_NAME} missing)", path=resume,
                               hint="pass the run folder `relidar distill` wrote")
        return Path(resume)
    run_dir = new_run_dir(out, name) if ctx.is_main else None
    run_dir = Path(str(broadcast_object(ctx, str(run_dir) if run_dir else None)))
    if ctx.is_main:
        save_config(config, run_dir / CONFIG_NAME)
    return run_dir


def distill(
    config: DistillConfig,
    out: Path | str | None = None,
    resume: Path | str | None = None,
    ctx: DistContext = DistContext(),
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
    run_name: str | None = None,
    teacher: BatchTeacher | None = None,
) -> DistillResult:
    """Train the student on ``config`` into the run folder ``out`` (exactly that folder, new or empty;
    default ``runs/<run_name>_<stamp>``, ``run_name`` defaulting to ``distill_<loss>``). A resumed run passes
    the run folder as ``resume`` and the config saved in it. ``on_step(step, total, losses)`` is called on
    rank 0 after every step (progress bars). ``teacher``: with ``data.online``, an already built teacher to
    use instead of the one the config names (tests, custom checkpoints); each rank passes its own."""
    threads_before = torch.get_num_threads()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    try:
        return _distill(config, Path(out) if out is not None else None, Path(resume) if resume else None, ctx, on_step,
                        run_name, teacher)
    finally:
        torch.set_num_threads(threads_before)


def _training_split(config: DistillConfig, ctx: DistContext, device: torch.device, teacher: BatchTeacher | None
                    ) -> tuple[Split, BatchTeacher | None]:
    """The training and held-out scans (with ``data.online`` the training ones are the dataset's, and the
    teacher this rank's own); rank 0 builds missing caches first."""
    online = config.data.online
    frames = None
    if online is not None:
        teacher = teacher or build_online_teacher(online.teacher, device)
        frames = OnlineFrames(online, teacher.feature_dim, superpixels=config.loss.superpixel_pooling)
    if ctx.is_main:
        split = split_data(config.data, online=frames)
    barrier(ctx)
    if not ctx.is_main:
        split = split_data(config.data, online=frames)
    return split, teacher


def _distill(config: DistillConfig, out: Path | None, resume: Path | None, ctx: DistContext,
             on_step: Callable[[int, int, dict[str, float]], None] | None, run_name: str | None,
             teacher: BatchTeacher | None) -> DistillResult:
    start_time = time.perf_counter()
    device = pick_device(config, ctx)
    if config.train.batch_size % ctx.world_size:
        raise DistillError(f"{config.train.batch_size} must be a multiple of the {ctx.world_size} data-parallel "
                           "processes", field="train.batch_size")

    split, teacher = _training_split(config, ctx, device, teacher)
    cache = split.train_cache
    if cache.feature_dim != config.student.out_dim:
        where = config.data.online.dataset if config.data.online else config.data.cache
        raise DistillError(f"{config.student.out_dim} but the teacher features of {where} are "
                           f"{cache.feature_dim}-d", field="student.out_dim", hint=f"set student.out_dim={cache.feature_dim}")
    dataset = DistillDataset(cache, split.train, config.sampling, config.augment, config.train.seed)
    spe = steps_per_epoch(len(dataset), config.train.batch_size)
    n_steps = total_steps(config, len(dataset))

    # Same initial weights on every rank (DDP also broadcasts them); RNG streams seeded before anything draws.
    torch.manual_seed(config.train.seed)
    random.seed(config.train.seed)
    np.random.seed(config.train.seed % (2**32))
    model = Student(config.student).to(device)
    if ctx.enabled:
        globalise_batchnorm(model)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, n_steps, config))

    name = run_name or f"distill_{config.loss.type}"
    run_dir = prepare_run_dir(config, out, resume, ctx, name)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and config.train.amp == "fp16" else None
    position = TrainPosition(0, 0, 0)
    if resume is not None and latest_checkpoint(run_dir) is not None:
        position = load_checkpoint(run_dir, model, optimizer, scheduler, scaler, device)
    train_model: nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    formulation = sparse_formulation(config, device)
    logger = _Logger(run_dir, config, position.step, ctx.is_main)
    last: dict[str, float] = {}
    step = position.step
    steps = StepBatches(dataset, config.student, config.train.batch_size, ctx.rank, ctx.world_size,
                        teacher.patch_grid if teacher is not None else None, total=n_steps)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    batches = step_loader(steps, step, n_steps, config.data.loader, device, local_world)
    times = StepTimes([], [], [])
    since_log: list[float] = []
    try:
        model.train()
        while step < n_steps:
            t_step = time.perf_counter()
            epoch = step // spe
            batch = next(batches).to(device)
            t_data = time.perf_counter()
            if batch.teacher_inputs is not None:
                batch = replace(batch, pair_features=online_pair_features(teacher, batch.teacher_inputs, device),
                                teacher_inputs=None)
            t_teacher = time.perf_counter()
            with autocast_context(config, device):
                k = pair_features(train_model, batch, formulation)
            losses = batch_loss(config.loss, k.float(), batch.pair_features, batch.pair_scan, batch.num_scans,
                                batch.pair_superpixel, config.sampling.scope)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(losses["total"]).backward()
                scaler.unscale_(optimizer)
            else:
                losses["total"].backward()
            if config.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            times.wait.append(t_data - t_step)
            times.teacher.append(t_teacher - t_data)
            times.total.append(time.perf_counter() - t_step)
            since_log.append(times.wait[-1])
            if step % config.logging.every_steps == 0 or step == n_steps:
                last = {f"loss_{k_}": float(all_reduce_mean(ctx, v.detach())) for k_, v in losses.items()}
                last["lr"] = lr
                last["epoch"] = epoch
                last["data_wait_ms"] = 1e3 * float(np.mean(since_log))
                since_log = []
                logger.log(step, last)
            if on_step is not None and ctx.is_main:
                on_step(step, n_steps, last)
            epoch_next, in_next = divmod(step, spe)
            if ctx.is_main and (step % config.logging.checkpoint_every == 0 or step == n_steps
                                or step in config.logging.checkpoint_steps):
                save_checkpoint(run_dir, model, optimizer, scheduler, TrainPosition(step, epoch_next, in_next),
                                config, config.logging.keep_checkpoints, scaler, device)
        weights = final_weights_path(run_dir)
        if ctx.is_main:
            save_run_student(weights, model, config, step)
            summary = {"steps": step, "steps_per_epoch": spe, "train_frames": len(split.train),
                       "val_frames": len(split.val), "final": last, "seconds": time.perf_counter() - start_time,
                       "world_size": ctx.world_size, "device": str(device), "backend": ctx.backend or None,
                       "formulation": formulation, "amp": config.train.amp if device.type == "cuda" else "off",
                       "loader_workers": loader_workers(config.data.loader, device, local_world),
                       "timing": times.summary()}
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        barrier(ctx)
    finally:
        logger.close()
        del batches  # stops the loader's workers
    return DistillResult(run_dir=run_dir, weights=final_weights_path(run_dir), steps=step,
                         final_loss=last.get("loss_total", float("nan")), seconds=time.perf_counter() - start_time)


__all__ = ["DistillError", "DistillResult", "distill"]
