"""Student weights: one format, one loader (relidar.model.weights) for what distillation, checkpoints and
bundles write; files of the earlier checkpoint format and foreign files are refused naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402

from relidar.model.network import Student, StudentConfig  # noqa: E402
from relidar.model.weights import CONFIG_KEY, FORMAT, FORMAT_KEY, WeightsError, load_student, read_metadata, save_student  # noqa: E402
from relidar.training.checkpoint import (  # noqa: E402
    RUN_CONFIG_KEY,
    STEP_KEY,
    CheckpointError,
    load_weights_into,
    read_run_config,
    save_run_student,
)
from relidar.training.config import DistillConfig  # noqa: E402


def _student(seed: int = 0, **overrides) -> Student:
    torch.manual_seed(seed)
    return Student(StudentConfig(profile="fast", out_dim=8, voxel_size=0.5, **overrides)).eval()


def _same_tensors(a: Student, b: Student) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_run_weights_are_student_weights_plus_the_run(tmp_path: Path) -> None:
    model = _student()
    config = DistillConfig.model_validate({"data": {"cache": "c"}, "student": model.config.model_dump()})
    path = save_run_student(tmp_path / "step.safetensors", model, config, step=7)
    meta = read_metadata(path)
    assert meta[FORMAT_KEY] == FORMAT and meta[STEP_KEY] == "7"
    assert StudentConfig.model_validate_json(meta[CONFIG_KEY]) == model.config
    loaded = load_student(path)
    assert loaded.config == model.config and _same_tensors(loaded, model)
    assert read_run_config(path) == config

    into = _student(seed=1)
    assert not _same_tensors(into, model)
    load_weights_into(path, into)
    assert _same_tensors(into, model)
    with pytest.raises(CheckpointError) as err:
        load_weights_into(path, _student(input_features=("x", "y", "z")))
    assert (err.value.path, err.value.field) == (path, "student")


def test_plain_weights_have_no_run_config(tmp_path: Path) -> None:
    path = save_student(_student(), tmp_path / "student.safetensors")
    with pytest.raises(CheckpointError) as err:
        read_run_config(path)
    assert (err.value.path, err.value.field) == (path, RUN_CONFIG_KEY) and "--config" in err.value.hint
    with pytest.raises(WeightsError) as err:
        save_student(_student(), tmp_path / "x.safetensors", {CONFIG_KEY: "{}"})
    assert err.value.field == CONFIG_KEY


def test_earlier_checkpoint_format_is_refused_naming_file_and_fix(tmp_path: Path) -> None:
    # What `relidar distill` wrote before there was one weights format: run config under "config".
    model = _student()
    config = DistillConfig.model_validate({"data": {"cache": "c"}, "student": model.config.model_dump()})
    old = tmp_path / "old.safetensors"
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(old), metadata={"config": config.model_dump_json(), "step": "3", "format": "relidar-student-1"})
    with pytest.raises(WeightsError) as err:
        load_student(old)
    assert (err.value.path, err.value.field) == (old, "format") and "relidar distill" in err.value.hint
    assert str(old) in err.value.one_line()


@pytest.mark.parametrize("case", ["missing", "not_safetensors", "no_config", "other_architecture", "bad_config"])
def test_foreign_files_are_refused_naming_the_file(tmp_path: Path, case: str) -> None:
    path = tmp_path / "w.safetensors"
    model = _student()
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    if case == "not_safetensors":
        path.write_bytes(b"not a safetensors file")
    elif case == "no_config":
        save_file(tensors, str(path), metadata={"something": "else"})
    elif case == "other_architecture":
        save_file({"stem.weight": torch.zeros(3)}, str(path),
                  metadata={FORMAT_KEY: FORMAT, CONFIG_KEY: model.config.model_dump_json()})
    elif case == "bad_config":
        save_file(tensors, str(path), metadata={FORMAT_KEY: FORMAT, CONFIG_KEY: '{"profile": "huge"}'})
    with pytest.raises(WeightsError) as err:
        load_student(path)
    assert err.value.path == path and err.value.hint
    if case == "bad_config":
        assert err.value.field == "profile"
