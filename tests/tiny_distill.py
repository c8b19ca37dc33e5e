"""A tiny synthetic world + feature cache + distillation config: seconds to build, seconds to train."""

from __future__ import annotations

from pathlib import Path

import yaml

from relidar.core.config import load_config
from relidar.training.config import DistillConfig

FEATURE_DIM = 16


def tiny_config_tree(cache: Path, frames: int = 4, seed: int = 0) -> dict:
    return {
        "data": {
            "cache": str(cache),
            "val_fraction": 0.25,
            "synthetic": {
                "frames": frames,
                "world": {"seed": seed, "lidar": {"beams": 16, "horizontal_resolution_deg": 1.5, "max_range": 40.0},
                          "cameras": {"width": 128, "height": 72}},
                "teacher": {"feature_dim": FEATURE_DIM, "patch_size": 8},
            },
        },
        "student": {"profile": "fast", "voxel_size": 0.5, "out_dim": FEATURE_DIM},
        "sampling": {"pairs_per_scan": 96},
        "train": {"epochs": 2, "batch_size": 1, "seed": 3, "threads": 1},
        "logging": {"checkpoint_every": 1, "tensorboard": False, "progress": False},
        "eval": {"few_shot": {"scans": 2, "probe_steps": 30, "points_per_scan": 512, "finetune_steps": 2},
                 "gap_pairs": 64},
    }


def write_config(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def tiny_config(tmp: Path, **train) -> DistillConfig:
    tree = tiny_config_tree(tmp / "cache")
    tree["train"].update(train)
    return load_config(write_config(tmp / "tiny.yaml", tree), DistillConfig)
