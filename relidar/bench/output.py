"""Where benchmark results go: the run folder always, and the ``--json`` path when given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_bench_json(result: dict[str, Any], run_file: Path, json_out: Path | None) -> None:
    """Write ``result`` as indented JSON to ``run_file`` and, if given, to ``json_out`` too."""
    text = json.dumps(result, indent=2)
    for path in (run_file, json_out):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
