"""What several commands share: the one rule for ``--classes``, ``--formulation``, and naming every file
written (the ``--out`` rule, ``relidar.core.rundir``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from relidar.core.graph import AUTO, GraphError, requested_formulation
from relidar.core.graph import FORMULATIONS as GRAPH_FORMULATIONS
from relidar.core.vocabulary import VocabularyError, check_class_names

FORMULATIONS = (AUTO, *GRAPH_FORMULATIONS)
FORMULATION_HELP = ("Sparse-convolution graph: pairs (kernel-offset pair lists) or table (neighbour tables); auto: "
                    "table on CUDA, pairs on a CPU. On many-core CPUs table can be faster (README Benchmarks).")


def formulation_choice(text: str) -> str | None:
    """``--formulation``: None for auto (the backend's default for its device), else pairs or table."""
    try:
        return requested_formulation(text)
    except GraphError as exc:
        raise GraphError(exc.message, field="--formulation", hint=f"choose from {', '.join(FORMULATIONS)}") from None


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """``--classes``: None when not given; otherwise comma-separated class names, every one non-blank
    and none twice (``"car,,road"``, ``""`` and ``" , "`` are all refused the same way)."""
    if text is None:
        return None
    try:
        return check_class_names(text.split(","))
    except VocabularyError as exc:
        raise VocabularyError(f"{text!r}: {exc.message}", field="--classes",
                              hint="give comma-separated class names, e.g. --classes car,road,building") from exc


def print_written(console: Any, paths: Iterable[str | Path]) -> None:
    """``wrote PATH`` for each path, in order, without repeats."""
    seen: set[str] = set()
    for path in paths:
        text = str(path)
        if text not in seen:
            seen.add(text)
            console.print(f"wrote {text}", highlight=False, soft_wrap=True)
