"""The distillation loop: run outputs, and exact resume after a SIGKILL mid-epoch."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.tiny_distill import tiny_config_tree, write_config

from relidar.core.config import load_config
from relidar.model.weights import load_student
from relidar.training.checkpoint import latest_checkpoint, read_run_config
from relidar.training.config import DistillConfig
from relidar.training.data import ensure_cache
from relidar.training.distill import distill

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tiny")
    tree = tiny_config_tree(tmp / "cache")
    tree["train"]["epochs"] = 3
    path = write_config(tmp / "tiny.yaml", tree)
    ensure_cache(load_config(path, DistillConfig).data)
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_run_folder_outputs(tiny_yaml: Path, tmp_path: Path) -> None:
    cfg = load_config(tiny_yaml, DistillConfig, ["train.epochs=2", "logging.tensorboard=true"])
    threads = torch.get_num_threads()
    result = distill(cfg, out=tmp_path / "run")
    assert torch.get_num_threads() == threads
    run = result.run_dir
    assert run == tmp_path / "run"  # --out is exactly the run folder (relidar.core.rundir)
    assert load_config(run / "config.yaml", DistillConfig) == cfg
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))  # 3 train frames x 2 epochs, batch 1
    assert {"loss_total", "loss_relational", "lr", "epoch"} <= set(rows[0])
    assert float(rows[-1]["lr"]) < float(rows[0]["lr"])  # cosine decay
    assert any((run / "tensorboard").iterdir())
    final = _weights(result.weights)
    ckpt, state, step = latest_checkpoint(run)
    assert step == 6 and state.is_file()
    for k, v in _weights(ckpt).items():
        assert torch.equal(v, final[k]), k
    # Both are student weights in the one format: the one loader reads either; the header keeps the run.
    for path in (result.weights, ckpt):
        student = load_student(path)
        assert student.config == cfg.student
        assert read_run_config(path) == cfg
        for k, v in student.state_dict().items():
            assert torch.equal(v, final[k]), k
    assert json.loads((run / "summary.json").read_text())["steps"] == 6
    # fewer checkpoints kept than written
    assert len(list((run / "checkpoints").glob("step_*.safetensors"))) == cfg.logging.keep_checkpoints


def test_resume_after_sigkill_matches_uninterrupted(tiny_yaml: Path, tmp_path: Path) -> None:
    cfg = load_config(tiny_yaml, DistillConfig)
    reference = distill(cfg, out=tmp_path / "reference")
    assert reference.steps == 9

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "relidar.cli.distill", "--config", str(tiny_yaml), "--out", str(tmp_path / "killed"),
         "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    killed_at = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            found = latest_checkpoint(tmp_path / "killed") if (tmp_path / "killed").is_dir() else None
            # mid-epoch: 3 steps per epoch, so steps 1, 2, 4, 5, ... leave an epoch half done
            if found is not None and found[2] % 3 != 0:
                proc.send_signal(signal.SIGKILL)
                killed_at = found[2]
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert killed_at is not None, f"the run ended before a mid-epoch checkpoint was seen: {err.decode()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    run = tmp_path / "killed"
    assert not (run / "student.safetensors").exists()

    resumed = distill(load_config(run / "config.yaml", DistillConfig), resume=run)
    assert resumed.run_dir == run and resumed.steps == 9
    ref, got = _weights(reference.weights), _weights(resumed.weights)
    assert ref.keys() == got.keys()
    on_cuda = json.loads((reference.run_dir / "summary.json").read_text())["device"].startswith("cuda")
    for k in ref:
        if on_cuda and ref[k].is_floating_point():
            # CUDA sums the backward of row gathers with atomics, in no fixed order: bit-exact cannot hold there
            torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-5,
                                       msg=lambda m, k=k: f"{k} after resuming from step {killed_at}: {m}")
        else:
            assert torch.equal(ref[k], got[k]), f"{k} differs after resuming from step {killed_at}"
    steps = [int(r["step"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    assert steps == list(range(1, 10))


def test_neighbour_table_training_matches_pair_lists(tiny_yaml: Path, tmp_path: Path) -> None:
    """The formulation GPUs train with (train.formulation=table) takes the same steps as the CPU's pair lists."""
    overrides = ["train.epochs=1", "optimizer.name=sgd", "optimizer.lr=0.05"]
    runs = {form: distill(load_config(tiny_yaml, DistillConfig, overrides + [f"train.formulation={form}"]),
                          out=tmp_path / form) for form in ("pairs", "table")}
    assert json.loads((runs["table"].run_dir / "summary.json").read_text())["formulation"] == "table"
    pairs, table = _weights(runs["pairs"].weights), _weights(runs["table"].weights)
    for k in pairs:
        if pairs[k].is_floating_point():
            # fp32 sums over 27 offsets in another order, compounded over the run's steps: 1.3e-5 measured
            torch.testing.assert_close(table[k], pairs[k], rtol=1e-4, atol=5e-5, msg=lambda m, k=k: f"{k}: {m}")
    torch.manual_seed(load_config(tiny_yaml, DistillConfig).train.seed)
    from relidar.model.network import Student

    init = Student(load_config(tiny_yaml, DistillConfig).student).state_dict()
    moved = max(float((init[k] - pairs[k]).abs().max()) for k in pairs if pairs[k].is_floating_point())
    assert moved > 1e-3


def test_cli_reports_config_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from relidar.cli.app import single_command_app
    from relidar.cli.distill import distill as command
    from relidar.core.config import ConfigError

    app = single_command_app(command)  # what `torchrun -m relidar.cli.distill` runs
    bad = write_config(tmp_path / "bad.yaml", {"data": {"cache": str(tmp_path)}, "loss": {"type": "nope"}})
    result = CliRunner().invoke(app, ["--config", str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and str(bad) in result.output  # one line naming the file
    with pytest.raises(ConfigError) as err:
        load_config(bad, DistillConfig)
    assert (err.value.path, err.value.field) == (bad, "loss.type")
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 1 and "--config" in result.output and "Traceback" not in result.output
