"""`relidar compare`: its statistics against hand-computed values, its verdicts on made-up runs, and the
command end to end on a tiny world (plan written first, every claim decided, plots, controls)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from support.tiny_distill import tiny_config_tree, write_config

from relidar.training.compare import (
    ComparePlan,
    correlation_interval,
    decide,
    mean_interval,
    paired_differences,
    switch_analysis,
    switch_losses,
    verdict,
)


def test_mean_interval_by_hand() -> None:
    # [1..5]: mean 3, sample sd sqrt(2.5), t(0.975, 4) = 2.776445
    got = mean_interval([1, 2, 3, 4, 5, float("nan")])
    assert got["mean"] == 3.0 and got["n"] == 5
    assert got["half"] == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-5)
    assert math.isnan(mean_interval([1.0])["half"])


def test_correlation_interval_by_hand() -> None:
    x = np.arange(10.0)
    y = -x + np.array([0.5, -0.5] * 5)
    got = correlation_interval(x, y)
    r = np.corrcoef(x, y)[0, 1]
    dz = 1.959964 / math.sqrt(7)
    assert got["r"] == pytest.approx(r)
    assert got["lo"] == pytest.approx(math.tanh(math.atanh(r) - dz), rel=1e-5)
    assert got["hi"] == pytest.approx(math.tanh(math.atanh(r) + dz), rel=1e-5)
    assert got["rho"] == pytest.approx(-1.0 + 6 * 10 / (10 * 99), abs=0.05)
    assert math.isnan(correlation_interval([1, 2, 3], [3, 2, 1])["r"])  # too few runs


def test_verdicts() -> None:
    assert verdict(0.1, 0.3) == "holds" and verdict(-0.3, -0.1) == "reversed" and verdict(-0.1, 0.2) == "undecided"
    assert verdict(-0.5, -0.2, positive=False) == "holds" and verdict(0.2, 0.5, positive=False) == "reversed"
    assert verdict(float("nan"), 1.0) == "undecided"


def _runs(effects: dict[str, float], seeds: int = 6, group: str = "main", gap_slope: float = -1.0) -> list[dict]:
    """Made-up runs: mIoU = loss effect + a per-seed offset shared by the losses (what pairing removes)."""
    rng = np.random.default_rng(0)
    offsets = rng.normal(0, 0.05, seeds)
    rows = []
    for loss, effect in effects.items():
        for s in range(seeds):
            zs = 0.3 + effect + offsets[s] + rng.normal(0, 0.002)
            rows.append({"group": group, "loss": loss, "seed": s,
                         "summary": {"zero_shot_miou": zs, "finetune_miou_1pct": zs, "ood_finetune_miou_1pct": 0.3 - effect,
                                     "gap": (zs - 0.3) / gap_slope}})
    return rows


def test_paired_differences_remove_the_seed_offset() -> None:
    runs = _runs({"relational": 0.02, "contrastive": 0.0, "similarity": 0.0})
    d = paired_differences(runs, "zero_shot_miou", "relational", "contrastive")
    assert d["mean"] == pytest.approx(0.02, abs=0.003) and d["lo"] > 0  # the seed offsets (sd 0.05) cancel
    unpaired = mean_interval([r["summary"]["zero_shot_miou"] for r in runs if r["loss"] == "relational"])
    assert unpaired["half"] > 0.02  # without pairing the same effect would hide in the seed spread
    claims = {c["claim"]: c["verdict"] for c in decide(ComparePlan(), runs)}
    assert claims == {"rel_gt_con_zero_shot": "holds", "rel_gt_sim_few_shot": "holds",
                      "rel_gt_sim_few_shot_ood": "reversed", "gap_vs_zero_shot": "holds", "gap_vs_few_shot": "holds"}
    flat = _runs({"relational": 0.0, "contrastive": 0.0, "similarity": 0.0})
    assert {c["verdict"] for c in decide(ComparePlan(), flat)[:3]} == {"undecided"}


def test_switch_analysis_checks_predictions() -> None:
    base = _runs({"relational": 0.02, "contrastive": 0.0, "similarity": 0.0})
    switched = _runs({"relational": 0.0, "contrastive": 0.0, "similarity": 0.0}, group="switch flat")
    plan = ComparePlan.model_validate({"teacher_switches": {"flat": {
        "teacher": {"noise": 1.0}, "predict": {"rel_gt_con_zero_shot": "smaller", "rel_gt_sim_few_shot": "larger"}}}})
    rows = {r["claim"]: r for r in switch_analysis(plan, base + switched)}
    assert rows["rel_gt_con_zero_shot"]["moved"] == "smaller" and rows["rel_gt_con_zero_shot"]["outcome"] == "as predicted"
    assert rows["rel_gt_sim_few_shot"]["outcome"] == "against the prediction"
    assert rows["rel_gt_sim_few_shot_ood"]["outcome"] == "no prediction"
    # a switch reruns the losses of the claims it predicts
    assert switch_losses(plan, plan.teacher_switches["flat"]) == ["contrastive", "similarity", "relational"]
    one = ComparePlan.model_validate({"teacher_switches": {"x": {"teacher": {}, "predict": {"rel_gt_con_zero_shot": "larger"}}}})
    assert switch_losses(one, one.teacher_switches["x"]) == ["contrastive", "relational"]
    with pytest.raises(ValueError, match="unknown claim"):
        ComparePlan.model_validate({"teacher_switches": {"x": {"teacher": {}, "predict": {"nope": "larger"}}}})


def test_compare_cli_end_to_end(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from relidar.cli.app import single_command_app
    from relidar.cli.compare import compare as command

    tree = tiny_config_tree(tmp_path / "cache")
    tree["train"]["epochs"] = 1
    config = write_config(tmp_path / "c.yaml", tree)
    plan = write_config(tmp_path / "plan.yaml", {
        "losses": ["similarity", "relational"], "seeds": 2, "few_shot_metric": "probe_miou", "curve_points": 1,
        "curve_scans": 1, "oracle": {"steps": 5}, "ablations": {"intra_only": {"cross_diag_weight": 0.0,
                                                                               "cross_offdiag_weight": 0.0}}})
    app = single_command_app(command)  # the relidar CLI's error handling: one line, exit 1
    result = CliRunner().invoke(app, ["--config", str(config), "--plan", str(plan), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out"  # --out is exactly the comparison folder
    saved = json.loads((folder / "compare.json").read_text())
    groups = [(r["group"], r["loss"]) for r in saved["runs"]]
    assert groups.count(("main", "relational")) == 2 and groups.count(("random", "random init")) == 2
    assert groups.count(("oracle", "similarity")) == 2 and groups.count(("ablation", "intra_only")) == 2
    # seed s of every loss is the same seed: the pairs the claims are decided on
    assert sorted({r["seed"] for r in saved["runs"]}) == [3, 4]
    assert [c["claim"] for c in saved["claims"]] == ["rel_gt_sim_few_shot", "rel_gt_sim_few_shot_ood",
                                                     "gap_vs_zero_shot", "gap_vs_few_shot"]
    assert all(c["verdict"] in ("holds", "reversed", "undecided") for c in saved["claims"])
    main = [r for r in saved["runs"] if r["group"] == "main"]
    assert all(len(r["curve"]) == 2 and r["curve"][0][0] == 0 for r in main)  # step 0 and the final checkpoint
    assert (folder / "plan.md").read_text().startswith("## Plan (written before any run)")
    md = (folder / "compare.md").read_text()
    assert "## Claims" in md and "## Controls" in md and "oracle: relational" in md
    for png in ("learning_curves.png", "gap_vs_miou.png"):
        assert (folder / png).stat().st_size > 5000, png
    assert "relational > similarity, few-shot in distribution:" in " ".join(result.output.split())
    bad = CliRunner().invoke(app, ["--config", str(config), "--losses", "nope", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and "--losses" in bad.output


def test_an_interrupted_compare_resumes_with_the_runs_it_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long plan may outlive a session: --resume takes every run runs.json recorded as it is, runs the rest
    from nothing (an interrupted job's folder is discarded) and ends with the comparison a whole run gives;
    it refuses a folder of another plan or config, or one with no comparison in it."""
    import relidar.training.compare.jobs as jobs_module
    import relidar.training.compare.run as run_module
    from relidar.core.config import load_config
    from relidar.training.compare import CompareError, compare
    from relidar.training.config import DistillConfig

    tree = tiny_config_tree(tmp_path / "cache")
    tree["train"]["epochs"] = 1
    config = load_config(write_config(tmp_path / "c.yaml", tree), DistillConfig)
    plan = ComparePlan(losses=["similarity", "relational"], seeds=2, few_shot_metric="probe_miou", curve_points=1,
                       curve_scans=1, oracle=None)
    whole = compare(config, plan, tmp_path / "whole")
    # the interrupted comparison: two runs recorded, a third one's folder half-written
    out = tmp_path / "interrupted"
    compare(config, plan, out)
    recorded = json.loads((out / "runs.json").read_text())
    keep, unfinished = recorded[:2], recorded[2]
    (out / "runs.json").write_text(json.dumps(keep))
    (out / "compare.json").unlink()
    partial = Path(unfinished["run_dir"])
    for f in partial.iterdir():
        if f.is_file():
            f.write_bytes(b"")  # what an interrupted job leaves: nothing usable
    ran: list[str] = []
    real = jobs_module.run_job

    def counting(job):
        ran.append(job.run_name)
        return real(job)

    monkeypatch.setattr(run_module, "run_job", counting)
    resumed = compare(config, plan, out, resume=True)
    assert len(ran) == len(recorded) - 2 and Path(unfinished["run_dir"]).name in ran

    def numbers(result) -> str:  # as JSON, so that a NaN measure (k-NN on a tiny set) equals itself
        return json.dumps([(r["group"], r["loss"], r["seed"], r["summary"]) for r in result.runs])

    assert numbers(resumed) == numbers(whole)  # the same evidence as an uninterrupted run
    assert json.dumps(resumed.claims) == json.dumps(whole.claims)
    with pytest.raises(CompareError, match="another plan"):
        compare(config, plan.model_copy(update={"seeds": 3}), out, resume=True)
    other = load_config(write_config(tmp_path / "c2.yaml", {**tree, "train": {**tree["train"], "seed": 11}}),
                        DistillConfig)
    with pytest.raises(CompareError, match="another config"):
        compare(other, plan, out, resume=True)
    with pytest.raises(CompareError, match="no interrupted comparison"):
        compare(config, plan, tmp_path / "empty", resume=True)
    from typer.testing import CliRunner

    from relidar.cli.app import single_command_app
    from relidar.cli.compare import compare as command

    cli = CliRunner().invoke(single_command_app(command), ["--config", str(tmp_path / "c.yaml"), "--resume"])
    assert cli.exit_code == 1 and "--out" in cli.output  # which folder to resume must be named
