"""Student weights: the one format and the one loader.

A weights file is safetensors: the student's parameters and buffers (BatchNorm statistics included)
and, in the header, the format name and the :class:`StudentConfig` (JSON), so the file rebuilds its
student alone. Every student on disk is this format: what ``relidar distill`` writes (final and
step checkpoints), what a bundle ships for the torch backend, what the benchmarks load. Writers may
add their own metadata under other keys (a checkpoint adds its run config and step: see
``relidar.training.checkpoint``); :func:`load_student` reads a student from any of them.

Files of the earlier checkpoint format (header ``format: relidar-student-1`` with the run config
under ``config``) are refused with a :class:`WeightsError` naming the file and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from relidar.core.atomic import atomic_path
from relidar.core.config import validate
from relidar.core.contract import WEIGHTS_CONFIG_KEY
from relidar.core.errors import RelidarError
from relidar.model.network import Student, StudentConfig

FORMAT_KEY = "relidar.format"
FORMAT = "relidar-student-v1"
CONFIG_KEY = WEIGHTS_CONFIG_KEY  # the bundle check reads it too, without torch
# The checkpoint format before there was one weights format: its header said format=relidar-student-1.
_OLD_FORMAT = ("format", "relidar-student-1")


class WeightsError(RelidarError, ValueError):
    """A file that cannot be loaded as a relidar student; ``path`` the file, ``hint`` the fix."""


def save_student(model: Student, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model``'s parameters, buffers and config atomically; ``metadata`` is added to the header
    (its keys must not be the format's own)."""
    from safetensors.torch import save_file

    extra = dict(metadata or {})
    clash = sorted({FORMAT_KEY, CONFIG_KEY} & set(extra))
    if clash:
        raise WeightsError(f"metadata keys {clash} are the weights format's own", field=clash[0])
    p = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {**extra, FORMAT_KEY: FORMAT, CONFIG_KEY: model.config.model_dump_json()}
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return p


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header of a student weights file (format checked), without loading the tensors."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise WeightsError("student weights file not found", path=p, hint="check the path")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"not a safetensors file ({exc})", path=p, hint="pass a .safetensors file written by relidar") from exc
    if meta.get(_OLD_FORMAT[0]) == _OLD_FORMAT[1]:
        raise WeightsError("a checkpoint in the format of an earlier relidar (relidar-student-1)", path=p,
                           field="format", hint="train it again with this relidar: `relidar distill --config "
                           "RUN/config.yaml` (the run folder keeps its config)")
    if meta.get(FORMAT_KEY) != FORMAT or CONFIG_KEY not in meta:
        raise WeightsError("no relidar student config in the safetensors header", path=p, field=FORMAT_KEY,
                           hint="pass weights written by `relidar distill` or a bundle's student.safetensors")
    return meta


def read_student_config(path: str | Path) -> StudentConfig:
    """The config stored in a weights file, without loading the tensors."""
    p = Path(path)
    meta = read_metadata(p)
    try:
        stored = json.loads(meta[CONFIG_KEY])
    except json.JSONDecodeError as exc:
        raise WeightsError(f"stored student config is not JSON ({exc})", path=p, field=CONFIG_KEY) from exc
    return validate(StudentConfig, stored, error=WeightsError, path=p, what="stored student config",
                    hint="it was written by another relidar version; retrain or re-export it")


def load_student(path: str | Path, map_location: str = "cpu") -> Student:
    """Rebuild the student from its file: the config from the header, then the tensors (strict)."""
    from safetensors.torch import load_file

    p = Path(path)
    config = read_student_config(p)
    model = Student(config)
    state = load_file(str(p), device=map_location)
    fix = (f"was it saved before the {config.profile!r} architecture (relidar.model.network.PROFILES) changed? "
           "Retrain or re-export it")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes: torch raises even with strict=False
        raise WeightsError(f"tensor shapes do not match a {config.profile!r} student ({str(exc).splitlines()[0]})",
                           path=p, hint=fix) from exc
    if missing or unexpected:
        raise WeightsError(f"tensors do not match a {config.profile!r} student (missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]})", path=p, hint=fix)
    return model.to(map_location)
