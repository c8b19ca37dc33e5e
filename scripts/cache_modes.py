"""Measure the feature cache's storage modes: bytes per frame, and their effect on the distilled student.

    python scripts/cache_modes.py bytes --kitti ../shared/data/kitti/000000 --out sizes.json
    python scripts/cache_modes.py quality --seeds 0 1 2 --epochs 12 --out quality.json

``bytes`` runs the teacher once per frame (MaskCLIP ViT-B/16, random weights, on the real KITTI frame;
the simulated teacher on a synthetic frame) and writes that frame's file in every mode with the same
functions ``relidar prepare`` uses (a projection is fitted on the frame's own pairs). ``quality``
prepares the synthetic world's cache in every mode (same frames, same teacher) and distils and
evaluates one student per mode and seed with the same config; every mode sees the same seeds.
The README's tables come from these two commands.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from relidar.training.feature_cache import (
    CachedFrame,
    CacheSettings,
    CacheStorage,
    encode_grids,
    fit_projection,
    pair_frame,
    teacher_grids,
    write_cached_frame,
)

# name -> storage; projection dims are fractions of the teacher's D (filled in per teacher).
MODES: dict[str, dict] = {
    "exact (pairs fp16, today)": {},
    "pairs fp32": {"dtype": "float32"},
    "grid fp16": {"layout": "grid"},
    "pairs int8": {"dtype": "int8"},
    "grid int8": {"layout": "grid", "dtype": "int8"},
    "pairs PCA D/4 fp16": {"projection_dim": 4},
    "pairs PCA D/8 fp16": {"projection_dim": 8},
    "grid PCA D/4 int8": {"layout": "grid", "dtype": "int8", "projection_dim": 4},
    "grid PCA D/8 int8": {"layout": "grid", "dtype": "int8", "projection_dim": 8},
}


def storage_for(mode: dict, teacher_dim: int) -> CacheStorage:
    spec = dict(mode)
    if "projection_dim" in spec:
        spec["projection_dim"] = teacher_dim // spec["projection_dim"]
    return CacheStorage(**spec)


def frame_sizes(frame, teacher, superpixels: int) -> dict:
    """Bytes of ``frame``'s cache file in every mode (teacher run once)."""
    settings = CacheSettings(superpixel_segments=superpixels)
    paired = pair_frame(frame, settings)
    t0 = time.perf_counter()
    grids = teacher_grids(paired, teacher)
    teacher_s = time.perf_counter() - t0
    exact = encode_grids(paired, grids, CacheStorage(dtype="float32")).values
    out = {"frame_id": frame.frame_id, "points": int(frame.num_points), "pairs": paired.num_pairs,
           "cameras": len(frame.cameras), "grid_cells": [int(np.prod(g.shape[:2])) for g in grids if g is not None],
           "teacher_dim": teacher.feature_dim, "teacher_seconds": teacher_s, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, mode in MODES.items():
            storage = storage_for(mode, teacher.feature_dim)
            projection = fit_projection(exact, storage.projection_dim, [frame.frame_id]) if storage.projection_dim else None
            stored = encode_grids(paired, grids, storage, projection)
            frame_obj = CachedFrame(**{**paired.__dict__, "features": stored})
            size = write_cached_frame(Path(tmp) / "f.npz", frame_obj, teacher.name, projection)
            out["modes"][name] = {"storage": storage.describe(), "file_bytes": size, "feature_bytes": stored.nbytes,
                                  "kept_cells": int(len(stored.cells)) if stored.cells is not None else None}
    return out


def bytes_command(args) -> None:
    from relidar.synthetic.teacher import SimulatedTeacher, SimulatedTeacherConfig
    from relidar.synthetic.world import SynthConfig, SyntheticWorld
    from relidar.training.readers.base import open_dataset
    from relidar.training.teachers.maskclip import MaskCLIPTeacher

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    vit = MaskCLIPTeacher("ViT-B-16", None, "cpu", 448)  # random weights: sizes do not depend on the values
    if "kitti" not in results:
        results["kitti"] = frame_sizes(open_dataset(args.kitti)[0], vit, 150)
    if "synthetic_512" not in results:
        world = SyntheticWorld(SynthConfig.model_validate({"seed": 0, "lidar": {"beams": 32,
                                                                                "horizontal_resolution_deg": 0.4}}))
        results["synthetic_512"] = frame_sizes(world.sample(0).frame, SimulatedTeacher(SimulatedTeacherConfig()), 150)
    if "synthetic_nuscenes_rig" not in results:
        # nuScenes' rig: a 32-beam lidar (~1,090 returns per ring), six 1600x900 cameras all round.
        world = SyntheticWorld(SynthConfig.model_validate({
            "seed": 0, "lidar": {"beams": 32, "horizontal_resolution_deg": 0.33},
            "cameras": {"names": ["front", "front_left", "front_right", "back_left", "back_right", "back"],
                        "width": 1600, "height": 900, "hfov_deg": 70.0}}))
        results["synthetic_nuscenes_rig"] = frame_sizes(world.sample(0).frame, vit, 150)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def quality_config(cache: Path, storage: CacheStorage, seed: int, epochs: int, frames: int, dim: int) -> dict:
    return {
        "data": {"cache": str(cache), "val_fraction": 0.25, "synthetic": {
            "frames": frames, "world": {"seed": 0, "lidar": {"beams": 32, "horizontal_resolution_deg": 0.4}},
            "teacher": {"feature_dim": dim, "seed": 0}, "storage": storage.model_dump()}},
        "student": {"profile": "fast", "voxel_size": 0.2, "crop_min": [-40.0, -40.0, -4.0], "crop_max": [40.0, 40.0, 2.4],
                    "out_dim": storage.projection_dim or dim},
        "loss": {"type": "relational"},
        "sampling": {"pairs_per_scan": 1024, "mode": "uniform"},
        "optimizer": {"name": "adamw", "lr": 0.003},
        "schedule": {"name": "cosine", "warmup_steps": 10},
        "train": {"epochs": epochs, "batch_size": 2, "seed": seed, "threads": 1, "device": "cpu"},
        "logging": {"every_steps": 5, "checkpoint_every": 1000, "tensorboard": False, "progress": False},
        "eval": {"few_shot": {"scans": 4, "probe_steps": 150, "points_per_scan": 4096, "finetune_steps": 0},
                 "gap_pairs": 1024, "bev_scans": 0},
    }


def quality_command(args) -> None:
    import torch

    from relidar.core.config import validate
    from relidar.model.weights import load_student
    from relidar.training.config import DistillConfig
    from relidar.training.distill import distill
    from relidar.training.evaluate import evaluate

    torch.set_num_threads(1)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    work = Path(args.work)
    modes = args.modes or list(MODES)
    for name in modes:
        storage = storage_for(MODES[name], args.dim)
        for seed in args.seeds:
            key = f"{name}|{seed}"
            if key in results:
                continue
            cache = work / ("cache_" + "_".join(storage.describe().replace(",", "").split()))
            cfg = validate(DistillConfig, quality_config(cache, storage, seed, args.epochs, args.frames, args.dim))
            t0 = time.perf_counter()
            run = distill(cfg, out=work / "runs" / f"{name}_seed{seed}")
            model = load_student(run.weights)
            summary = evaluate(model, cfg).summary()
            results[key] = {"mode": name, "storage": storage.describe(), "seed": seed, **summary,
                            "seconds": time.perf_counter() - t0,
                            "cache_bytes": sum(f.stat().st_size for f in (cache / "frames").iterdir())}
            out_path.write_text(json.dumps(results, indent=2))
            print(key, {k: round(v, 4) if isinstance(v, float) else v for k, v in results[key].items()}, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bytes")
    b.add_argument("--kitti", required=True)
    b.add_argument("--out", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--epochs", type=int, default=12)
    q.add_argument("--frames", type=int, default=24)
    q.add_argument("--dim", type=int, default=64)
    q.add_argument("--modes", nargs="*")
    q.add_argument("--work", default="runs/cache_modes")
    q.add_argument("--out", required=True)
    args = parser.parse_args()
    bytes_command(args) if args.command == "bytes" else quality_command(args)


if __name__ == "__main__":
    main()
