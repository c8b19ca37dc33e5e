"""Training throughput you can plan with: scans per second of each stage of a distillation step.

On one dataset frame (repeated, each copy augmented differently), measured in one run:

* ``cache``: the frame prepared in each storage mode (the teacher run once and memoised), its file
  size, and reading it -- load, checksum, decode the drawn pairs -- with the checksum verified on
  every read (the reference: what every read did before) and once per file;
* ``batch_preparation``: a step's batch built serially, by phase: cache read + augmentation + pair
  draw, voxelization, kernel maps, tensor conversion and packing (the reference: the training thread
  did all of this before it could step);
* ``loader``: the same batches from DataLoader workers (pinned memory where CUDA is), for each worker
  count asked, as a consumer that does nothing else sees them;
* ``forward_backward``: the student's training step alone (batches ready on the device), per device;
* ``online_teacher``: the teacher on a batch's camera images, per device (online mode), and the online
  batch preparation (reading and pairing the frame; no cache);
* ``training_loop``: the real distillation loop (``relidar.training.distill``) fed by the loader, for
  each worker count: its time per step and the time it waited for the next batch.

``bottleneck`` names the slowest stage of a step, for training from a cache and online. Stages run
one after another on a shared machine; the figures are scans per second of that stage alone.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from relidar.core.frame import Frame
from relidar.core.timing import percentile, time_calls
from relidar.model.network import Student, StudentConfig
from relidar.training.augment import AugmentConfig
from relidar.training.config import DistillConfig, LoaderConfig
from relidar.training.data import DistillDataset, PackedBatch, StepBatches, collate, step_loader
from relidar.training.distill import build_optimizer, distill, pair_features, sparse_formulation
from relidar.training.feature_cache import CacheReader, CacheSettings, CacheStorage, prepare_cache
from relidar.training.losses import LossConfig, batch_loss
from relidar.training.readers.base import Reader
from relidar.training.sampling import SamplingConfig
from relidar.training.teachers.base import BatchTeacher
from relidar.training.teachers.online import OnlineFrames, OnlineSource, OnlineTeacherConfig, build_online_teacher


@dataclass
class TrainBenchConfig:
    dataset: Path
    options: dict[str, Any] = field(default_factory=dict)
    copies: int = 8
    batch_size: int = 4
    steps: int = 6
    workers: tuple[int, ...] = (0, 2)
    devices: tuple[str, ...] = ("cpu",)
    student: StudentConfig = StudentConfig(profile="fast", voxel_size=0.1)
    teacher: OnlineTeacherConfig = OnlineTeacherConfig(pretrained="none")
    modes: tuple[CacheStorage, ...] = (CacheStorage(), CacheStorage(layout="grid"),
                                       CacheStorage(layout="grid", dtype="int8", projection_dim=64))
    pairs_per_scan: int = 4096
    superpixels: int = 150


class RepeatedReader(Reader):
    """``copies`` copies of the first frame of a dataset (the benchmark's input, read from disk each time)."""

    name = "repeated"

    def __init__(self, inner: Reader, copies: int) -> None:
        super().__init__(inner.root)
        self.inner = inner
        self.ignore_index = inner.ignore_index
        first = inner.frame_ids[0]
        self._frame_ids = [f"{first}#{k}" for k in range(copies)]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.inner.class_names

    def _load(self, index: int) -> Frame:
        frame = self.inner[0]
        return Frame(self._frame_ids[index], frame.points, frame.cameras, frame.labels, frame.class_names)


class MemoTeacher:
    """A teacher whose image encodings are remembered by the image's bytes (the copies share one run)."""

    def __init__(self, inner: BatchTeacher) -> None:
        self.inner = inner
        self.memo: dict[str, np.ndarray] = {}
        self.seconds = 0.0

    name = property(lambda self: self.inner.name)
    feature_dim = property(lambda self: self.inner.feature_dim)
    text_spec = property(lambda self: self.inner.text_spec)

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        return self.inner.encode_text(prompts)

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        key = hashlib.sha256(image.tobytes() + repr(image.shape).encode()).hexdigest()
        if key not in self.memo:
            t0 = time.perf_counter()
            self.memo[key] = self.inner.encode_image(image)
            self.seconds += time.perf_counter() - t0
        return self.memo[key]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _syncer(device: torch.device) -> Callable[[], None]:
    return lambda: _sync(device)


def _rate(samples_ms: Sequence[float], scans_per_call: int) -> dict[str, float]:
    med = percentile(samples_ms, 50)
    return {"ms_p50": med, "ms_min": float(min(samples_ms)), "scans_per_s": 1e3 * scans_per_call / med if med else 0.0}


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _dataset(cache: Any, cfg: TrainBenchConfig) -> DistillDataset:
    return DistillDataset(cache, list(range(len(cache))), SamplingConfig(scope="scan", pairs_per_scan=cfg.pairs_per_scan),
                          AugmentConfig(), seed=0)


def bench_cache_modes(cfg: TrainBenchConfig, reader: Reader, teacher: MemoTeacher, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for storage in cfg.modes:
        path = root / ("cache_" + "_".join(storage.describe().replace(",", "").split()))
        settings = CacheSettings(superpixel_segments=cfg.superpixels, storage=storage)
        report = prepare_cache(reader, path, teacher, settings=settings)
        if report.failed:
            raise RuntimeError(f"the benchmark frame did not prepare: {report.failed[0]}")
        rng = np.random.default_rng(0)
        entry: dict[str, Any] = {"bytes_per_frame": report.bytes_per_frame, "feature_bytes_per_frame":
                                 report.feature_bytes / max(1, len(report.done))}
        for verify in ("always", "once"):
            cache = CacheReader(path, verify=verify)  # type: ignore[arg-type]
            for i in range(len(cache)):
                cache[i]  # a first read of each file: verifies it, warms the OS page cache

            def read(cache: CacheReader = cache, rng: np.random.Generator = rng, n: int = len(cache)) -> None:
                frame = cache[int(rng.integers(n))]
                frame.teacher_features(rng.choice(frame.num_pairs, min(cfg.pairs_per_scan, frame.num_pairs), replace=False))

            entry[f"read_verify_{verify}"] = _rate(time_calls(read, 2 * len(cache)).samples_ms, 1)
        out[storage.describe()] = entry
    return out


def bench_batch_preparation(cfg: TrainBenchConfig, cache: Any, patch_grid: Any = None) -> dict[str, Any]:
    """A step's batch built serially (what the training thread did before), phase by phase."""
    dataset = _dataset(cache, cfg)
    steps = StepBatches(dataset, cfg.student, cfg.batch_size, patch_grid=patch_grid, total=cfg.steps)
    names = ("read_augment_draw", "voxelize", "kernel_maps", "tensors", "pack")
    phases: dict[str, list[float]] = {k: [] for k in names}
    packed = None
    for step in range(cfg.steps):
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        samples = steps.samples(step)
        t1 = time.perf_counter()
        batch = collate(samples, cfg.student, patch_grid, timings)
        t2 = time.perf_counter()
        packed = PackedBatch.pack(batch)
        t3 = time.perf_counter()
        timings.update(read_augment_draw=t1 - t0, pack=t3 - t2)
        for k in names:
            phases[k].append(timings[k])
    total_ms = [1e3 * sum(v[i] for v in phases.values()) for i in range(cfg.steps)]
    return {"phases_ms_p50": {k: 1e3 * percentile(v, 50) for k, v in phases.items()},
            **_rate(total_ms, cfg.batch_size), "voxels_per_batch": int(batch.inputs.features.shape[0]),
            "batch_bytes": packed.nbytes}


def bench_loader(cfg: TrainBenchConfig, cache: Any, workers: int, device: torch.device, patch_grid: Any = None
                 ) -> dict[str, float]:
    dataset = _dataset(cache, cfg)
    n = max(cfg.steps, 2 * max(workers, 1))
    steps = StepBatches(dataset, cfg.student, cfg.batch_size, patch_grid=patch_grid, total=n + 1)
    it = step_loader(steps, 0, n + 1, LoaderConfig(workers=workers), device)
    next(it)  # worker start-up is not throughput
    t0 = time.perf_counter()
    for _ in range(n):
        next(it).to(device)
    _sync(device)
    dt = time.perf_counter() - t0
    del it
    return {"workers": workers, "pin_memory": device.type == "cuda", "scans_per_s": n * cfg.batch_size / dt,
            "ms_per_batch": 1e3 * dt / n}


def bench_forward_backward(cfg: TrainBenchConfig, cache: Any, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    model = Student(cfg.student).to(device).train()
    dcfg = DistillConfig.model_validate({"data": {"cache": "unused"}, "student": cfg.student.model_dump()})
    optimizer = build_optimizer(model, dcfg)
    steps = StepBatches(_dataset(cache, cfg), cfg.student, cfg.batch_size, total=cfg.steps)
    batches = [steps[s].to(device) for s in range(min(cfg.steps, 3))]
    loss_cfg = LossConfig()
    calls = iter(range(10**9))
    formulation = sparse_formulation(dcfg, device)  # what distill trains with on this device

    def step() -> None:
        batch = batches[next(calls) % len(batches)]
        k = pair_features(model, batch, formulation)
        loss = batch_loss(loss_cfg, k.float(), batch.pair_features, batch.pair_scan, batch.num_scans)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    timing = time_calls(step, cfg.steps, warmup=1, sync=_syncer(device))
    return {**_rate(timing.samples_ms, cfg.batch_size), "formulation": formulation}


def bench_online_teacher(cfg: TrainBenchConfig, frame: Frame, teacher: BatchTeacher, device: torch.device
                         ) -> dict[str, Any]:
    images = [torch.from_numpy(np.array(c.image, copy=True)) for c in frame.cameras] * cfg.batch_size
    teacher.encode_images(images[:1])
    timing = time_calls(lambda: teacher.encode_images(images), max(2, cfg.steps // 2), sync=_syncer(device))
    return {**_rate(timing.samples_ms, cfg.batch_size), "images_per_batch": len(images),
            "images_per_s": 1e3 * len(images) / timing.p50, "model": cfg.teacher.model,
            "image_size": cfg.teacher.image_size, "grid": list(teacher.patch_grid.shape(*frame.cameras[0].image.shape[:2]))}


def bench_training_loop(cfg: TrainBenchConfig, cache_dir: Path, workers: int, device: str, out: Path) -> dict[str, Any]:
    dcfg = DistillConfig.model_validate({
        "data": {"cache": str(cache_dir), "val_fraction": 0.0, "loader": {"workers": workers}},
        "student": {**cfg.student.model_dump(), "out_dim": CacheReader(cache_dir).feature_dim},
        "sampling": {"scope": "scan", "pairs_per_scan": cfg.pairs_per_scan},  # --pairs is per scan
        "train": {"epochs": 100, "max_steps": cfg.steps + 1, "batch_size": cfg.batch_size, "device": device},
        "logging": {"checkpoint_every": 10**6, "tensorboard": False, "progress": False},
    })
    import json

    result = distill(dcfg, out=out / f"bench_{device}_w{workers}")
    timing = json.loads((result.run_dir / "summary.json").read_text())["timing"]
    return {"workers": workers, "device": device, **timing,
            "scans_per_s": cfg.batch_size / (timing["step_mean_ms"] / 1e3) if timing["step_mean_ms"] else 0.0}


def _bottleneck(stages: dict[str, float]) -> dict[str, Any]:
    """The stage with the fewest scans per second, and all of them."""
    slowest = min(stages, key=lambda k: stages[k])
    return {"stage": slowest, "scans_per_s": stages}


def run_train_bench(cfg: TrainBenchConfig, threads: int | None = None,
                    on_phase: Callable[[str], None] | None = None) -> dict[str, Any]:
    from relidar.training.readers.base import open_dataset

    phase = on_phase or (lambda _n: None)
    inner = open_dataset(cfg.dataset, **cfg.options)
    reader = RepeatedReader(inner, cfg.copies)
    frame = reader[0]
    result: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "threads": threads or torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "input": {"dataset": str(cfg.dataset), "frame": inner.frame_ids[0], "points": frame.num_points,
                  "cameras": [list(c.image.shape[:2]) for c in frame.cameras], "copies": cfg.copies,
                  "batch_size": cfg.batch_size, "student": cfg.student.model_dump(), "pairs_per_scan": cfg.pairs_per_scan},
    }
    devices = [torch.device(d) for d in cfg.devices if d == "cpu" or torch.cuda.is_available()]
    result["devices_skipped"] = [d for d in cfg.devices if d != "cpu" and not torch.cuda.is_available()]
    with _threads(threads), tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        phase("preparing the frame in each storage mode")
        vit = build_online_teacher(cfg.teacher, devices[-1] if devices else "cpu")
        teacher = MemoTeacher(vit)
        result["cache"] = bench_cache_modes(cfg, reader, teacher, root)
        result["prepare_teacher_seconds_per_frame"] = teacher.seconds / max(1, len(teacher.memo))
        exact_dir = root / ("cache_" + "_".join(cfg.modes[0].describe().replace(",", "").split()))
        exact = CacheReader(exact_dir)
        cfg_student = StudentConfig.model_validate({**cfg.student.model_dump(), "out_dim": exact.feature_dim})
        cfg = TrainBenchConfig(**{**cfg.__dict__, "student": cfg_student})
        phase("batch preparation")
        result["batch_preparation"] = bench_batch_preparation(cfg, exact)
        online = OnlineFrames(OnlineSource(dataset=str(cfg.dataset), options=cfg.options, teacher=cfg.teacher),
                              vit.feature_dim, reader=reader)
        result["online_batch_preparation"] = bench_batch_preparation(cfg, online, vit.patch_grid)
        result["loader"], result["forward_backward"], result["online_teacher"], result["training_loop"] = {}, {}, {}, {}
        for device in devices:
            for w in cfg.workers:
                phase(f"loader, {w} workers, {device}")
                result["loader"][f"{device.type}/workers={w}"] = bench_loader(cfg, exact, w, device)
            phase(f"forward + backward, {device}")
            result["forward_backward"][device.type] = bench_forward_backward(cfg, exact, device)
            phase(f"online teacher, {device}")
            on_device = vit if torch.device(vit.device).type == device.type else build_online_teacher(cfg.teacher, device)
            result["online_teacher"][device.type] = bench_online_teacher(cfg, frame, on_device, device)
            for w in cfg.workers:
                phase(f"training loop, {w} workers, {device}")
                result["training_loop"][f"{device.type}/workers={w}"] = bench_training_loop(
                    cfg, exact_dir, w, device.type, root / "runs")
        result["bottleneck"] = {}
        for device in devices:
            loaders = {k: v["scans_per_s"] for k, v in result["loader"].items() if k.startswith(device.type + "/")}
            best = max(loaders, key=lambda k: loaders[k])
            fb = result["forward_backward"][device.type]["scans_per_s"]
            tea = result["online_teacher"][device.type]["scans_per_s"]
            result["bottleneck"][f"{device.type}/cache"] = _bottleneck({f"data loading ({best})": loaders[best],
                                                                        "forward+backward": fb})
            online_step = 1.0 / (1.0 / tea + 1.0 / fb)  # the teacher and the student share the device, in turn
            result["bottleneck"][f"{device.type}/online"] = {
                **_bottleneck({"online batch preparation (1 process)": result["online_batch_preparation"]["scans_per_s"],
                               "teacher + forward+backward": online_step}),
                "teacher_share_of_step": (1.0 / tea) / (1.0 / tea + 1.0 / fb)}
    return result
