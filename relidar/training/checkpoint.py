"""Checkpoints of a distillation run, written so that a killed run resumes exactly.

A checkpoint is three files in ``<run>/checkpoints/``, each written atomically:

* ``step_NNNNNNN.safetensors``: the student in the one weights format (``relidar.model.weights``: its
  tensors and StudentConfig), plus the run's effective config (:data:`RUN_CONFIG_KEY`) and the step
  (:data:`STEP_KEY`) in the header -- what evaluation and export read, with
  ``relidar.model.weights.load_student`` like any student file;
* ``step_NNNNNNN.state.pt``: optimizer, scheduler, the mixed-precision loss scaler (fp16 runs), the RNG
  states of torch, numpy, python and the training GPU, and the position in the data (epoch, step in
  epoch) -- what only resuming needs;
* ``latest.json``: names the newest complete pair; written last, so it never points at a partial one.

The run's final ``student.safetensors`` is the same weights file with the same header.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from relidar.core.artifact import read_manifest, write_json
from relidar.core.atomic import atomic_write_bytes
from relidar.core.config import StrictModel, validate
from relidar.core.errors import RelidarError
from relidar.model.network import Student
from relidar.model.weights import load_student, read_metadata, save_student
from relidar.training.config import DistillConfig

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.json"
LATEST_FORMAT_VERSION = 1
RUN_CONFIG_KEY = "relidar.run_config"
STEP_KEY = "relidar.step"


class CheckpointError(RelidarError, RuntimeError):
    """A checkpoint that is missing or does not fit; ``path`` the file, ``hint`` the fix."""


class Latest(StrictModel):
    """``latest.json``: the newest complete checkpoint."""

    format_version: int = LATEST_FORMAT_VERSION
    weights: str
    state: str
    step: int = Field(ge=0)


@dataclass(frozen=True)
class TrainPosition:
    """Where a run is: ``step`` optimizer steps done; the next batch is ``step_in_epoch`` of ``epoch``."""

    step: int
    epoch: int
    step_in_epoch: int


def rng_state(device: torch.device | str = "cpu") -> dict[str, Any]:
    """The RNG states a resumed run needs; on CUDA only the training GPU's (``device``): a state per visible
    GPU would not load on a machine with fewer GPUs, and a rank draws only from its own."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    # numpy's key array as a tensor: the state file is loaded with weights_only, which admits no ndarray.
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                                       float(gauss)]}
    device = torch.device(device)
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | str = "cpu") -> None:
    """Restore :func:`rng_state`; a saved GPU state goes to the GPU this run trains on (there is none to
    restore when it resumes on the CPU)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    device = torch.device(device)
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def save_run_student(path: str | Path, model: Student, config: DistillConfig, step: int) -> Path:
    """The student in the one weights format, with the run's config and step in the header."""
    return save_student(model, path, {RUN_CONFIG_KEY: config.model_dump_json(), STEP_KEY: str(step)})


def read_run_config(path: str | Path) -> DistillConfig:
    """The distillation config a run stored in its weights (final or step checkpoint)."""
    meta = read_metadata(path)
    if RUN_CONFIG_KEY not in meta:
        raise CheckpointError("no run config in the header: not written by `relidar distill`", path=path,
                              field=RUN_CONFIG_KEY, hint="pass --config with the run's config.yaml")
    return validate(DistillConfig, _json(meta[RUN_CONFIG_KEY], path), error=CheckpointError, path=path,
                    what="stored run config", hint="it was written by another relidar version; pass --config")


def _json(text: str, path: str | Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"stored run config is not JSON ({exc})", path=path, field=RUN_CONFIG_KEY) from exc


def load_weights_into(path: str | Path, model: Student) -> None:
    """Load a run's weights into ``model`` (the one loader builds them; the configs must agree)."""
    stored = load_student(path)
    if stored.config != model.config:
        raise CheckpointError(f"holds a {stored.config.profile!r} student with another config than this run's "
                              f"({model.config.profile!r})", path=path, field="student",
                              hint="resume with the config saved in the run folder")
    model.load_state_dict(stored.state_dict())


def save_checkpoint(run_dir: Path, model: Student, optimizer: torch.optim.Optimizer,
                    scheduler: Any, position: TrainPosition, config: DistillConfig, keep: int = 2,
                    scaler: torch.amp.GradScaler | None = None, device: torch.device | str = "cpu") -> Path:
    """Write the step's weights and state, then point ``latest.json`` at them; prune older ones.
    ``scaler``: the fp16 loss scaler (its scale and growth tracker), ``device``: the training device."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    weights = save_run_student(checkpoint_weights(run_dir, position.step), model, config, position.step)
    stem = weights.name.split(".")[0]
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(device),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "position": {"step": position.step, "epoch": position.epoch, "step_in_epoch": position.step_in_epoch},
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(ckpt_dir / f"{stem}.state.pt", buf.getvalue())
    write_json(ckpt_dir / LATEST, Latest(weights=weights.name, state=f"{stem}.state.pt", step=position.step))
    _prune(ckpt_dir, keep, stem)
    return weights


def checkpoint_weights(run_dir: Path | str, step: int) -> Path:
    """The weights file of the run's checkpoint after ``step`` steps (whether or not it exists)."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:07d}.safetensors"


def _prune(ckpt_dir: Path, keep: int, newest: str) -> None:
    stems = sorted({p.name.split(".")[0] for p in ckpt_dir.glob("step_*.safetensors")})
    for stem in stems[:-keep]:
        if stem == newest:
            continue
        for suffix in (".safetensors", ".state.pt"):
            (ckpt_dir / f"{stem}{suffix}").unlink(missing_ok=True)


def latest_checkpoint(run_dir: Path) -> tuple[Path, Path, int] | None:
    """(weights, state, step) of the newest complete checkpoint, or None if the run has none."""
    pointer = Path(run_dir) / CHECKPOINT_DIR / LATEST
    if not pointer.is_file():
        return None
    fix = "delete the checkpoints folder to start over, or start a new run"
    info = read_manifest(pointer, Latest, CheckpointError, version=LATEST_FORMAT_VERSION, what="checkpoint pointer",
                         missing_hint=fix, hint=fix)
    weights = pointer.parent / info.weights
    state = pointer.parent / info.state
    if not weights.is_file() or not state.is_file():
        raise CheckpointError(f"names {weights.name} / {state.name}, which are missing", path=pointer, hint=fix)
    return weights, state, info.step


def load_checkpoint(run_dir: Path, model: Student, optimizer: torch.optim.Optimizer,
                    scheduler: Any, scaler: torch.amp.GradScaler | None = None,
                    device: torch.device | str = "cpu") -> TrainPosition:
    """Restore everything :func:`save_checkpoint` wrote (RNG states and the loss scaler included)."""
    found = latest_checkpoint(run_dir)
    if found is None:
        raise CheckpointError(f"no checkpoint to resume from ({CHECKPOINT_DIR}/{LATEST} is missing)", path=run_dir,
                              hint="start the run without --resume")
    weights, state_path, _ = found
    load_weights_into(weights, model)
    # weights_only: the state holds only tensors, numbers, strings and containers of them.
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"], device)
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    pos = state["position"]
    return TrainPosition(step=int(pos["step"]), epoch=int(pos["epoch"]), step_in_epoch=int(pos["step_in_epoch"]))


def final_weights_path(run_dir: Path) -> Path:
    return Path(run_dir) / "student.safetensors"
