"""The one --out rule: exactly the folder asked for (new or empty), or runs/<name>_<stamp> without one."""

from __future__ import annotations

from pathlib import Path

import pytest

from relidar.core.rundir import OutputError, new_output_dir, run_dir


def test_exact_folder_new_or_empty(tmp_path: Path) -> None:
    assert new_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    assert new_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"  # empty: fine
    (tmp_path / "a" / "b" / "x").write_text("x")
    with pytest.raises(OutputError) as info:
        new_output_dir(tmp_path / "a" / "b")
    assert info.value.path == tmp_path / "a" / "b" and info.value.field == "--out"
    with pytest.raises(OutputError, match="not a folder"):
        new_output_dir(tmp_path / "a" / "b" / "x")


def test_default_is_a_new_timestamped_folder_under_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = run_dir(None, "distill_relational"), run_dir(None, "distill_relational")
    assert first.parent == second.parent == Path("runs") and first != second
    assert first.name.startswith("distill_relational_") and first.is_dir() and second.is_dir()
    assert run_dir(tmp_path / "exact", "x") == tmp_path / "exact"
