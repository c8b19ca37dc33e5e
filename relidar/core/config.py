"""Typed configs read from YAML: checked on load, errors naming the file and the field, saved beside outputs.

:func:`validate` is the one place a pydantic ``ValidationError`` becomes a relidar error: every typed
file (configs, manifests, class lists, vocabularies) goes through it, so they all name the field the
same way (``section.key``, list items as ``[i]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from relidar.core.errors import RelidarError

M = TypeVar("M", bound=BaseModel)


class ConfigError(RelidarError, ValueError):
    """A config file that cannot be used; ``path`` the file, ``field`` the key at fault."""


class StrictModel(BaseModel):
    """Base of every relidar config: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def field_path(loc: Sequence[Any]) -> str:
    """A pydantic error location as a user writes it: ``train.lr``, ``classes[2].color``."""
    return "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")


def describe_validation_error(exc: ValidationError) -> tuple[str, str]:
    """(the first failing field, every failure as ``field: message`` joined by '; ')."""
    issues = [(field_path(err["loc"]) or "(top level)", err["msg"]) for err in exc.errors()]
    return issues[0][0], "; ".join(f"{where}: {msg}" for where, msg in issues)


def validate(model: type[M], data: Any, *, error: type[RelidarError] = ConfigError, path: str | Path | None = None,
             hint: str | None = None, what: str | None = None) -> M:
    """``model.model_validate(data)``; a failure raises ``error`` naming ``path`` and the first failing field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, issues = describe_validation_error(exc)
        raise error(f"invalid {what or model.__name__}: {issues}", path=path, field=field, hint=hint) from exc


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section", field=dotted)
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """``key.sub=value`` strings; values are parsed as YAML scalars/lists (``lr=1e-3``, ``losses=[a,b]``)."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value", field=item)
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(raw)))
    return parsed


def load_config(path: str | Path | None, model: type[M], overrides: Sequence[str] = ()) -> M:
    """Read ``path`` (YAML) into ``model``, apply dotted overrides, validate.

    ``path=None`` gives the model's defaults (with overrides applied).
    """
    tree: dict[str, Any] = {}
    p = Path(path) if path is not None else None
    if p is not None:
        if not p.is_file():
            raise ConfigError("config file not found", path=p)
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML ({exc})", path=p) from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"the top level must be a mapping of sections, got {type(loaded).__name__}", path=p)
        tree = dict(loaded)
    for key, value in parse_overrides(overrides):
        _set_dotted(tree, key, value)
    return validate(model, tree, path=p)


def save_config(config: BaseModel, path: str | Path) -> Path:
    """Write the effective config as YAML (what a run actually used, defaults included)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return p
