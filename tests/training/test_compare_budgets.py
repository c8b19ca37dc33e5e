"""`relidar compare` with budgets and a per-loss selection, end to end on a tiny world: the smaller budget's
numbers come from the same runs as the larger one's curve points (and are the shorter run, bit for bit,
under the constant schedule), the grid is chosen on the validation street and never opens the held-out
one, and the plan is on disk before the first run starts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from support.tiny_distill import tiny_config_tree, tiny_source, write_config

from relidar.core.config import load_config
from relidar.training.compare import ComparePlan, Selection, Setting, gpu_hours, mean_interval, seconds_per_scan
from relidar.training.compare.cost import PlanCost
from relidar.training.config import DistillConfig

PLAN = {
    "losses": ["contrastive", "relational"], "seeds": 2, "budgets": [1, 2], "schedule": "constant", "flat_within": 0.01,
    "few_shot_metric": "probe_miou", "curve_points": 2, "curve_scans": 1, "random_init": False, "oracle": None,
    "selection": {"seeds": 1, "lr_factors": [1.0, 3.0], "temperatures": [0.07, 0.1]}, "fixed_setting": True,
}


def _tree(tmp: Path) -> dict:
    tree = tiny_config_tree(tmp / "cache")
    tree["train"]["epochs"] = 1  # 3 scans, batch 1: 1x = 3 steps
    tree["data"]["selection"] = tiny_source(tmp / "cache_select", 2, 9)  # the validation street: world seed 9
    tree["schedule"] = {"name": "cosine", "warmup_steps": 1}
    return tree


def _zero_shot(weights: str | Path, config: DistillConfig, data_config, scans: int | None) -> float:
    from relidar.model.weights import load_student
    from relidar.training.evaluate import evaluate_zero_shot, labelled_set, resolve_vocabulary

    vocabulary = resolve_vocabulary(config)
    data = labelled_set("check", data_config, vocabulary, scans)
    return evaluate_zero_shot(load_student(weights).eval(), data, vocabulary, "cpu", gap_pairs=4).miou


def test_budgeted_compare_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import relidar.training.compare.run as compare_run
    from relidar.cli.app import single_command_app
    from relidar.cli.compare import compare as command
    from relidar.model.weights import read_metadata
    from relidar.training.checkpoint import STEP_KEY
    from relidar.training.feature_cache import CacheReader

    tree = _tree(tmp_path)
    config_path = write_config(tmp_path / "c.yaml", tree)
    plan_path = write_config(tmp_path / "plan.yaml", PLAN)
    held_out = Path(tree["data"]["val"]["cache"]).resolve()
    street = Path(tree["data"]["selection"]["cache"]).resolve()

    # Which caches each kind of job opens (workers 1: the jobs run in this process).
    current = {"kind": "setup"}
    opened: list[tuple[str, Path]] = []
    real_init, real_run_job = CacheReader.__init__, compare_run.run_job

    def recording_init(self, path, *args, **kwargs):
        opened.append((current["kind"], Path(path).resolve()))
        real_init(self, path, *args, **kwargs)

    def tracked_run_job(job):
        current["kind"] = job.kind
        try:
            return real_run_job(job)
        finally:
            current["kind"] = "between"

    monkeypatch.setattr(CacheReader, "__init__", recording_init)
    monkeypatch.setattr(compare_run, "run_job", tracked_run_job)
    app = single_command_app(command)
    folder = tmp_path / "out"
    result = CliRunner().invoke(app, ["--config", str(config_path), "--plan", str(plan_path), "--workers", "1",
                                      "--out", str(folder)])
    assert result.exit_code == 0, result.output
    saved = json.loads((folder / "compare.json").read_text())
    runs = saved["runs"]
    assert saved["base_steps"] == 3

    # selection: only the validation street and the training scans, never the held-out street
    during_selection = {path for kind, path in opened if kind == "select"}
    assert street in during_selection and held_out not in during_selection
    assert held_out in {path for kind, path in opened if kind == "distill"}  # the recorder does see it

    # the grid: every setting once per selection seed (seeds after the main ones), the best mean chosen
    grid = [r for r in runs if r["group"] == "select"]
    assert sorted((r["loss"], r["setting"]["label"]) for r in grid) == sorted(
        [("contrastive", f"lr ×{f}, τ {t}") for f in (1, 3) for t in (0.07, 0.1)] + [("relational", "lr ×1"),
                                                                                    ("relational", "lr ×3")])
    assert {r["seed"] for r in grid} == {5}
    selection = json.loads((folder / "selection.json").read_text())
    for loss in PLAN["losses"]:
        best = max((r for r in grid if r["loss"] == loss), key=lambda r: r["summary"]["zero_shot_miou"])
        assert selection["chosen"][loss] == best["setting"]["label"]
        assert {r["setting"]["label"] for r in runs if r["group"] == "main" and r["loss"] == loss} == {
            best["setting"]["label"]}
    # a grid score is the student's zero-shot on the validation street, recomputed here
    one = grid[0]
    cfg = load_config(Path(one["run_dir"]) / "config.yaml", DistillConfig)
    assert one["summary"]["zero_shot_miou"] == pytest.approx(_zero_shot(Path(one["run_dir"]) / "student.safetensors",
                                                                        cfg, cfg.data, None), abs=1e-9)
    assert Path(cfg.data.val.cache).resolve() == street and cfg.eval.ood is None

    # the budgets: one run per (loss, seed); the 1x numbers are that run's checkpoint at step 3
    main = [r for r in runs if r["group"] == "main"]
    assert len(main) == 4 and len({r["run_dir"] for r in main}) == 4
    for r in main:
        assert [(b["budget"], b["step"]) for b in r["budgets"]] == [(1, 3), (2, 6)]
        assert all(Path(b["weights"]).parent.parent == Path(r["run_dir"]) for b in r["budgets"])
        assert [int(read_metadata(b["weights"])[STEP_KEY]) for b in r["budgets"]] == [3, 6]
        assert [p[0] for p in r["curve"]] == [0, 2, 3, 4, 6]  # 2 points over 6 steps, the budgets, their 3/4
    r = main[0]
    cfg = load_config(Path(r["run_dir"]) / "config.yaml", DistillConfig)
    small = r["budgets"][0]
    curve = dict((int(s), v) for s, v in r["curve"])
    on_street = cfg.data.model_copy(update={"val": cfg.data.selection, "selection": None})
    assert curve[3] == pytest.approx(_zero_shot(small["weights"], cfg, on_street, PLAN["curve_scans"]), abs=1e-9)
    assert small["summary"]["zero_shot_miou"] == pytest.approx(_zero_shot(small["weights"], cfg, cfg.data, None),
                                                               abs=1e-9)

    # constant schedule: the 1x checkpoint of the 2x run is the 1x run itself
    from relidar.model.weights import load_student
    from relidar.training.distill import distill

    tree1 = cfg.model_dump(mode="json")
    tree1["train"].update({"epochs": 1, "max_steps": 3})
    tree1["logging"].update({"checkpoint_steps": [], "checkpoint_every": 100})
    alone = distill(DistillConfig.model_validate(tree1), out=tmp_path / "alone")
    a, b = load_student(alone.weights).state_dict(), load_student(small["weights"]).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # per-budget verdicts and the flattening, recomputed from the curves
    findings = saved["findings"]
    assert set(findings["claims"]) == {"1", "2"}
    assert [c["claim"] for c in findings["claims"]["1"]] == [c["claim"] for c in findings["claims"]["2"]]
    for row in findings["flattening"]:
        rows = [x for x in runs if x["group"] == row["group"] and x["loss"] == row["loss"]]
        end = 3 * row["budget"]
        diffs = [dict((int(s), v) for s, v in x["curve"])[end] - dict((int(s), v) for s, v in x["curve"])[round(0.75 * end)]
                 for x in rows]
        assert row["improvement"] == pytest.approx(float(np.mean(diffs)), abs=1e-12)
        stats = mean_interval(diffs)
        assert row["hi"] == pytest.approx(stats["mean"] + stats["half"], abs=1e-12)
        assert row["state"] == ("flattened" if row["hi"] < 0.01 else "still rising" if row["lo"] > 0 else "undecided")
    assert {(row["group"], row["loss"], row["budget"]) for row in findings["flattening"]} == {
        (g, loss, b) for g in ("main", "fixed") for loss in PLAN["losses"] for b in (1, 2)}

    # the fixed-setting control: the config's own setting, a loss that chose it reuses its main runs
    fixed = [x for x in runs if x["group"] == "fixed"]
    assert len(fixed) == 4 and all(x["setting"] is None for x in fixed)
    for x in fixed:
        own = selection["chosen"][x["loss"]] in ("lr ×1", "lr ×1, τ 0.07")
        assert (x.get("reused_from") == "main") == own

    # the plan was on disk before the first run started, with the grid in it
    first_run = min((Path(x["run_dir"]) / "config.yaml").stat().st_mtime for x in runs if "run_dir" in x)
    assert (folder / "plan.md").stat().st_mtime <= first_run
    plan_md = (folder / "plan.md").read_text()
    assert "0.002 (×1), 0.006 (×3)" in plan_md and "| 0.07, 0.1 |" in plan_md and "bit for bit" in plan_md
    md = (folder / "compare.md").read_text()
    assert "## Selection on the validation split" in md and "## Convergence" in md and "2x (6 steps)" in md
    assert "relational > contrastive, zero-shot: 1x" in " ".join(result.output.split())

    # pointing the selection at the held-out street is refused before anything runs
    bad = dict(tree, data={**tree["data"], "selection": tree["data"]["val"]})
    refused = CliRunner().invoke(app, ["--config", str(write_config(tmp_path / "bad.yaml", bad)), "--plan",
                                       str(plan_path), "--out", str(tmp_path / "bad")])
    assert refused.exit_code == 1 and "selection" in refused.output
    assert not (tmp_path / "bad" / "plan.md").exists()


def test_plan_budgets_grid_and_cost() -> None:
    with pytest.raises(ValueError, match="budgets"):
        ComparePlan.model_validate({"budgets": [4, 1]})
    with pytest.raises(ValueError, match="fixed_setting"):
        ComparePlan.model_validate({"fixed_setting": True})
    with pytest.raises(ValueError, match="curve_points"):
        ComparePlan.model_validate({"flat_within": 0.01, "curve_points": 0})
    grid = Selection().settings("contrastive")
    assert [s.label for s in grid[:3]] == ["lr ×1/3, τ 0.04", "lr ×1, τ 0.04", "lr ×3, τ 0.04"] and len(grid) == 9
    assert Selection().settings("similarity") == [Setting(1 / 3), Setting(1.0), Setting(3.0)]
    cost = PlanCost(jobs=2, distill_steps=1000, evaluations=2, zero_shot_evaluations=0, finetune_steps=400,
                    batch_size=16, base_steps=500)
    assert cost.run_equivalents == 2.0 and cost.trained_scans == 16400
    assert gpu_hours(cost, 0.036) == pytest.approx(16400 * 0.036 / 3600)


def test_seconds_per_scan_from_bench_json(tmp_path: Path) -> None:
    from relidar.training.compare import CompareError

    bench = {"input": {"batch_size": 4}, "training_loop": {"cuda/workers=0": {"step_mean_ms": 349.7},
                                                           "cuda/workers=4": {"step_mean_ms": 66.85}}}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    seconds, loop = seconds_per_scan(path)
    assert loop == "cuda/workers=4" and seconds == pytest.approx(0.06685 / 4)
    assert math.isclose(seconds_per_scan(path, "cuda/workers=0")[0], 0.3497 / 4)
    path.write_text("{}")
    with pytest.raises(CompareError):
        seconds_per_scan(path)


def test_estimate_prints_the_cost_and_runs_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from relidar.cli.app import single_command_app
    from relidar.cli.compare import compare as command

    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"input": {"batch_size": 2}, "training_loop": {"cpu/workers=0": {"step_mean_ms": 90000.0}}}))
    config = write_config(tmp_path / "c.yaml", _tree(tmp_path))
    plan = write_config(tmp_path / "plan.yaml", PLAN)
    result = CliRunner().invoke(single_command_app(command), ["--config", str(config), "--plan", str(plan), "--estimate",
                                                              str(bench), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    # 6 grid runs of 3 steps, 4 main + 4 fixed runs of 6 steps; 16 full evaluations (2 budgets each) of 2
    # fine-tuning steps (finetune_steps 2, one fraction, no OOD set)
    assert "14 jobs" in text and "66 steps of 1 scans" in text and "16 full evaluations (32 fine-tuning steps)" in text
    assert f"{(66 + 32) * 45.0 / 3600:.1f} GPU-hours" in text and "45000.0 ms a scan" in text
    assert not (tmp_path / "out").exists()
