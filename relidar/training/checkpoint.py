"""Checkpoints of a distillation run, written so that a killed run resumes exactly.

A checkpoint is three files in ``<run>/checkpoints/``, each written atomically:

* ``step_NNNNNNN.safetensors``: the student's weights and buffers (BatchNorm statistics), with the
  effective config (JSON) and the step in the safetensors metadata -- what evaluation and export read;
* ``step_NNNNNNN.state.pt``: optimizer, scheduler, the mixed-precision loss scaler (fp16 runs), the RNG
  states of torch, numpy, python and the training GPU, and the position in the data (epoch, step in
  epoch) -- what only resuming needs;
* ``latest.json``: names the newest complete pair; written last, so it never points at a partial one.
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
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from relidar.core.atomic import atomic_path, atomic_write_bytes

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or does not fit; names the file and the fix."""


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


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_weights(path: str | Path, model: torch.nn.Module, metadata: dict[str, str]) -> Path:
    """Weights + buffers as safetensors (atomic), ``metadata`` stored in the header."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(_tensors(model), str(tmp), metadata=metadata)
    return path


def load_weights(path: str | Path, model: torch.nn.Module) -> dict[str, str]:
    """Load weights into ``model`` (strict); returns the file's metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    tensors = load_file(str(path))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not fit this student (missing {list(missing)[:5]}, unexpected "
                              f"{list(unexpected)[:5]}); was it trained with another student profile?")
    return read_metadata(path)


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, position: TrainPosition, config_json: str, keep: int = 2,
                    scaler: torch.amp.GradScaler | None = None, device: torch.device | str = "cpu") -> Path:
    """Write the step's weights and state, then point ``latest.json`` at them; prune older ones.
    ``scaler``: the fp16 loss scaler (its scale and growth tracker), ``device``: the training device."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    stem = f"step_{position.step:07d}"
    weights = save_weights(ckpt_dir / f"{stem}.safetensors", model,
                           {"config": config_json, "step": str(position.step), "format": "relidar-student-1"})
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
    atomic_write_bytes(ckpt_dir / LATEST, (json.dumps({"weights": weights.name, "state": f"{stem}.state.pt",
                                                       "step": position.step}) + "\n").encode())
    _prune(ckpt_dir, keep, stem)
    return weights


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
    info = json.loads(pointer.read_text())
    weights = pointer.parent / info["weights"]
    state = pointer.parent / info["state"]
    if not weights.is_file() or not state.is_file():
        raise CheckpointError(f"{pointer}: names {weights.name} / {state.name}, which are missing")
    return weights, state, int(info["step"])


def load_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, scaler: torch.amp.GradScaler | None = None,
                    device: torch.device | str = "cpu") -> TrainPosition:
    """Restore everything :func:`save_checkpoint` wrote (RNG states and the loss scaler included)."""
    found = latest_checkpoint(run_dir)
    if found is None:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from ({CHECKPOINT_DIR}/{LATEST} is missing)")
    weights, state_path, _ = found
    load_weights(weights, model)
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
