"""Every shipped distillation config loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from relidar.core.config import load_config
from relidar.training.config import DistillConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*_relational.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path: Path) -> None:
    cfg = load_config(path, DistillConfig, ["loss.type=similarity"])
    assert cfg.loss.type == "similarity"
    assert cfg.student.out_dim > 0
