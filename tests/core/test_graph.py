"""The one formulation rule (relidar.core.graph.resolve_formulation): tables on CUDA, pair lists on a CPU."""

from __future__ import annotations

import pytest

from relidar.core.errors import RelidarError
from relidar.core.graph import requested_formulation, resolve_formulation


@pytest.mark.parametrize("requested", [None, "auto"])
def test_auto_is_tables_on_cuda_and_pairs_on_a_cpu(requested: str | None) -> None:
    assert resolve_formulation(requested, "cpu") == "pairs"
    assert resolve_formulation(requested, "cuda") == "table"
    assert resolve_formulation(requested, "cuda:1") == "table"
    # a bundle without the table graph: pair lists, on CUDA too
    assert resolve_formulation(requested, "cuda:0", ("pairs",)) == "pairs"


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0"])
@pytest.mark.parametrize("requested", ["pairs", "table"])
def test_a_named_formulation_is_kept_on_any_device(requested: str, device: str) -> None:
    assert resolve_formulation(requested, device) == requested
    assert requested_formulation(requested) == requested


def test_an_unknown_formulation_is_refused_naming_the_choices() -> None:
    with pytest.raises(RelidarError) as info:
        resolve_formulation("tables", "cpu")
    assert info.value.field == "formulation" and "auto, pairs, table" in info.value.one_line()
    assert requested_formulation("auto") is None
