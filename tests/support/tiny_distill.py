"""A tiny synthetic world + feature cache + distillation config: seconds to build, seconds to train."""

from __future__ import annotations

from pathlib import Path

import yaml

from relidar.core.config import load_config
from relidar.training.config import DistillConfig

FEATURE_DIM = 16


def tiny_source(cache: Path, frames: int, seed: int) -> dict:
    """A tiny synthetic world's scans (world ``seed``: another seed is another street)."""
    return {
        "cache": str(cache),
        "synthetic": {
            "frames": frames,
            "world": {"seed": seed, "lidar": {"beams": 16, "horizontal_resolution_deg": 1.5, "max_range": 40.0},
                      "cameras": {"width": 128, "height": 72}},
            "teacher": {"feature_dim": FEATURE_DIM, "patch_size": 8},
        },
    }


def tiny_config_tree(cache: Path, frames: int = 3, seed: int = 0) -> dict:
    """Training on ``frames`` sweeps of world ``seed``; held out: 2 sweeps of world ``seed + 1``."""
    return {
        "data": {**tiny_source(cache, frames, seed), "val": tiny_source(Path(f"{cache}_val"), 2, seed + 1)},
        "student": {"profile": "fast", "voxel_size": 0.5, "out_dim": FEATURE_DIM},
        "sampling": {"pairs_per_batch": 96, "pairs_per_scan": 96},
        "train": {"epochs": 2, "batch_size": 1, "seed": 3, "threads": 1},
        "logging": {"checkpoint_every": 1, "tensorboard": False, "progress": False},
        "eval": {"few_shot": {"probe_max_scans": 2, "probe_steps": 30, "points_per_scan": 512, "finetune_steps": 2,
                              "finetune_fractions": [0.5]},
                 "gap_pairs": 64},
    }


def write_config(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def tiny_config(tmp: Path, **train) -> DistillConfig:
    tree = tiny_config_tree(tmp / "cache")
    tree["train"].update(train)
    return load_config(write_config(tmp / "tiny.yaml", tree), DistillConfig)
