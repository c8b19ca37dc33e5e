"""Every shipped distillation config loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from relidar.core.config import ConfigError, load_config
from relidar.training.config import DistillConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*_relational.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path: Path) -> None:
    cfg = load_config(path, DistillConfig, ["loss.type=similarity"])
    assert cfg.loss.type == "similarity"
    assert cfg.student.out_dim > 0


def test_old_sparse_maps_key_is_refused_with_the_new_name(tmp_path: Path) -> None:
    """``train.sparse_maps`` became ``train.formulation``: a config or an override with the old key says so."""
    old = tmp_path / "old.yaml"
    old.write_text("data: {cache: unused}\ntrain: {epochs: 1, sparse_maps: table}\n")
    for path, overrides in ((old, []), (None, ["data.cache=unused", "train.sparse_maps=table"])):
        with pytest.raises(ConfigError) as info:
            load_config(path, DistillConfig, overrides)
        assert "train.sparse_maps was renamed to train.formulation" in info.value.one_line()
        assert info.value.field == "train" and "\n" not in info.value.one_line()
    assert load_config(None, DistillConfig, ["data.cache=unused", "train.formulation=table"]).train.formulation == "table"


def test_the_synthetic_world_and_teacher_are_typed_where_their_schema_lives(tmp_path: Path) -> None:
    """``data.synthetic.world`` and ``.teacher`` are the synthetic layer's own models: values parsed into them,
    a misspelt key (deep in the world) or a value out of range refused with its dotted field."""
    from relidar.synthetic.teacher import SimulatedTeacherConfig
    from relidar.synthetic.world import SynthConfig

    cfg = load_config(None, DistillConfig, ["data.cache=unused", "data.synthetic.world.lidar.beams=64",
                                            "data.synthetic.teacher.version=1"])
    assert isinstance(cfg.data.synthetic.world, SynthConfig) and cfg.data.synthetic.world.lidar.beams == 64
    assert isinstance(cfg.data.synthetic.teacher, SimulatedTeacherConfig) and cfg.data.synthetic.teacher.version == 1
    assert cfg.data.synthetic.world.lidar.elevations_deg()[[0, -1]].tolist() == [-24.8, 2.0]  # the HDL-64 preset
    for override, field in (("data.synthetic.world.lidar.beam=64", "data.synthetic.world.lidar.beam"),
                            ("data.synthetic.teacher.feature_dim=8", "data.synthetic.teacher")):
        with pytest.raises(ConfigError) as info:
            load_config(None, DistillConfig, ["data.cache=unused", override])
        assert info.value.field == field, info.value.one_line()
