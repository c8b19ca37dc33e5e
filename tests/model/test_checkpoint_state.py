"""What a checkpoint's resume state holds besides weights: the fp16 loss scaler and the RNG of the
training device only (a CPU GradScaler stands in for CUDA's; same state_dict)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from relidar.model.network import Student
from relidar.training.checkpoint import CHECKPOINT_DIR, LATEST, TrainPosition, load_checkpoint, save_checkpoint
from relidar.training.config import DistillConfig


def _setup(tmp_path: Path):
    config = DistillConfig.model_validate({"data": {"cache": str(tmp_path / "cache")},
                                           "student": {"profile": "fast", "out_dim": 8}})
    torch.manual_seed(0)
    model = Student(config.student)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return config, model, optimizer, scheduler


def test_loss_scaler_state_survives_a_checkpoint(tmp_path: Path) -> None:
    config, model, optimizer, scheduler = _setup(tmp_path)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=100)
    x = torch.ones(4, model.head.in_features)
    for factor in (1.0, float("inf"), 1.0, 1.0):  # an overflow halves the scale; two good steps count up
        optimizer.zero_grad()
        scaler.scale(model.head(x).sum() * factor).backward()
        scaler.step(optimizer)
        scaler.update()
    expected = scaler.state_dict()
    assert expected["scale"] == 2.0 ** 11 and expected["_growth_tracker"] == 2
    save_checkpoint(tmp_path, model, optimizer, scheduler, TrainPosition(4, 0, 4), config, scaler=scaler, device="cpu")

    _, model2, optimizer2, scheduler2 = _setup(tmp_path)
    restored = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=100)
    position = load_checkpoint(tmp_path, model2, optimizer2, scheduler2, restored, device="cpu")
    assert position.step == 4
    assert restored.state_dict() == expected
    state_file = tmp_path / CHECKPOINT_DIR / json.loads((tmp_path / CHECKPOINT_DIR / LATEST).read_text())["state"]
    rng = torch.load(state_file, weights_only=True)["rng"]
    assert "cuda" not in rng  # a CPU run saves no GPU state (a CUDA run saves its own GPU's only)
