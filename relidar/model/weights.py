"""Student weights as safetensors, with the StudentConfig in the file's metadata (one self-describing file)."""

from __future__ import annotations

import json
from pathlib import Path

from relidar.core.atomic import atomic_path
from relidar.model.network import Student, StudentConfig

CONFIG_KEY = "relidar.student_config"
FORMAT_KEY = "relidar.format"
FORMAT = "relidar-student-v1"


class WeightsError(ValueError):
    """A weights file that cannot be loaded as a relidar student; the message names the file and the fix."""


def save_student(model: Student, path: str | Path) -> Path:
    """Write ``model``'s parameters and buffers (BatchNorm statistics included) and its config."""
    from safetensors.torch import save_file

    p = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {CONFIG_KEY: model.config.model_dump_json(), FORMAT_KEY: FORMAT}
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return p


def read_student_config(path: str | Path) -> StudentConfig:
    """The config stored in a weights file, without loading the tensors."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: weights file not found")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{p}: not a safetensors file ({exc})") from exc
    if meta.get(FORMAT_KEY) != FORMAT or CONFIG_KEY not in meta:
        raise WeightsError(f"{p}: no relidar student config in the metadata; save it with relidar.model.weights.save_student")
    try:
        return StudentConfig.model_validate(json.loads(meta[CONFIG_KEY]))
    except ValueError as exc:
        raise WeightsError(f"{p}: stored student config is invalid: {exc}") from exc


def load_student(path: str | Path, map_location: str = "cpu") -> Student:
    """Rebuild the student from its file: the config from the metadata, then the tensors (strict)."""
    from safetensors.torch import load_file

    p = Path(path)
    config = read_student_config(p)
    model = Student(config)
    state = load_file(str(p), device=map_location)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes: torch raises even with strict=False
        raise WeightsError(f"{p}: tensor shapes do not match a {config.profile!r} student; was it saved before "
                           f"the {config.profile!r} architecture (relidar.model.network.PROFILES) changed? ({exc})") from exc
    if missing or unexpected:
        raise WeightsError(
            f"{p}: tensors do not match a {config.profile!r} student (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}); was it saved from a BatchNorm-folded copy, or before the "
            f"{config.profile!r} architecture (relidar.model.network.PROFILES) changed? Retrain or re-export it."
        )
    return model
