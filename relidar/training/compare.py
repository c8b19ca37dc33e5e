"""``relidar compare``: does the paper's ordering of the losses hold on this data, at this budget?

The plan (:class:`ComparePlan`) is fixed before anything runs and written first (``plan.json``,
``plan.md``): losses, paired seeds, the budget, the metrics and the claims. Then one student per
(loss, seed) is distilled and evaluated on the same data; seed s of every loss starts from the same
weights and sees the same scans in the same order, so the losses are compared pair by pair.

The claims are the paper's (Mahmoud, Harakeh, Waslander, ECCV 2024):

1. relational > contrastive, zero-shot;
2. relational > similarity, few-shot in distribution;
3. relational > similarity, few-shot out of distribution;
4. the 2D-3D structural gap correlates negatively with zero-shot mIoU;
5. ... and with few-shot mIoU.

For 1-3 the statistic is the paired difference over seeds, mean with a Student-t 95 % interval;
for 4-5 the Pearson correlation over all runs with a Fisher-z 95 % interval. A claim *holds* when
its interval lies on the claimed side of zero, is *reversed* when it lies on the other side, and is
*undecided at this budget* otherwise.

Controls: a randomly initialised student per seed (what distillation adds), an oracle student per
loss (one free vector per true class: the ceiling each loss reaches from this teacher,
``relidar.training.oracle``), relational-term ablations, and teacher switches (the same comparison
on a teacher with one property changed, with the paper's prediction of how each paired difference
should move written in the plan).

Learning curves: each distilled run keeps ``curve_points`` checkpoints, scored zero-shot on the first
``curve_scans`` held-out scans, plus its training loss per step.
"""

from __future__ import annotations

import csv
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from pydantic import Field, model_validator

from relidar.core.atomic import atomic_write_bytes
from relidar.core.config import StrictModel, save_config
from relidar.core.errors import RelidarError
from relidar.model.weights import load_student
from relidar.training.config import DistillConfig
from relidar.training.figures import new_figure, save_png
from relidar.training.losses import LOSS_NAMES, LossName
from relidar.training.oracle import OracleConfig

Verdict = Literal["holds", "reversed", "undecided"]


class CompareError(RelidarError, ValueError):
    """A comparison that cannot run (unknown loss, too few seeds, a bad plan); names the option."""


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims: ``better`` > ``worse`` on ``metric`` (paired over seeds), or a negative
    correlation over all runs between the gap and ``metric``."""

    key: str
    text: str
    kind: Literal["greater", "negative_correlation"]
    metric: str
    better: str | None = None
    worse: str | None = None


class RelationalWeights(StrictModel):
    """The three relational terms' weights of an ablation."""

    intra_weight: float = Field(1.0, ge=0.0)
    cross_diag_weight: float = Field(1.0, ge=0.0)
    cross_offdiag_weight: float = Field(1.0, ge=0.0)


class TeacherSwitch(StrictModel):
    """The comparison rerun on a teacher with some properties changed (synthetic data only)."""

    teacher: dict = Field(..., description="overrides of every synthetic source's teacher config")
    why: str = Field("", description="the property switched and what the paper's explanation says it does")
    predict: dict[str, Literal["larger", "smaller"]] = Field(
        default_factory=dict, description="claim key -> how its paired difference should move against the base teacher")
    seeds: int | None = Field(None, ge=2, description="default: the plan's seeds")
    losses: list[LossName] | None = Field(None, description="losses to rerun; default: those of the claims it predicts "
                                                            "(each claim compares two)")


class ComparePlan(StrictModel):
    """What `relidar compare` runs and how it decides; fixed before any result is seen."""

    losses: list[LossName] = Field(default_factory=lambda: list(LOSS_NAMES))
    seeds: int = Field(5, ge=2, description="paired seeds per loss (train.seed, train.seed+1, ...)")
    zero_shot_metric: str = Field("zero_shot_miou", description="summary key of the zero-shot claims")
    few_shot_metric: str = Field("finetune_miou_1pct", description="summary key of the few-shot claims; out of "
                                                                   "distribution: the same with the ood_ prefix")
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    curve_points: int = Field(4, ge=0, description="checkpoints per run scored zero-shot for the learning curves")
    curve_scans: int | None = Field(4, ge=1, description="held-out scans the learning-curve points are scored on")
    random_init: bool = Field(True, description="control: randomly initialised students, one per seed")
    oracle: OracleConfig | None = Field(OracleConfig(), description="control: one free vector per true class, per loss")
    ablations: dict[str, RelationalWeights] = Field(default_factory=dict, description="relational-term ablations")
    ablation_seeds: int | None = Field(None, ge=2, description="default: the plan's seeds")
    teacher_switches: dict[str, TeacherSwitch] = Field(default_factory=dict)
    workers: int = Field(1, ge=1, description="runs in parallel (one torch thread each)")

    @model_validator(mode="after")
    def _check(self) -> "ComparePlan":
        if len(set(self.losses)) != len(self.losses) or not self.losses:
            raise ValueError(f"losses {self.losses}: give each loss once")
        keys = {c.key for c in self.claims()}
        for name, switch in self.teacher_switches.items():
            unknown = set(switch.predict) - keys
            if unknown:
                raise ValueError(f"teacher_switches.{name}.predict: unknown claim(s) {sorted(unknown)}; claims are "
                                 f"{sorted(keys)}")
        return self

    def claims(self) -> list[Claim]:
        """The claims this plan can test with its losses."""
        have = set(self.losses)
        zs, fs = self.zero_shot_metric, self.few_shot_metric
        out = []
        if {"relational", "contrastive"} <= have:
            out.append(Claim("rel_gt_con_zero_shot", "relational > contrastive, zero-shot", "greater", zs,
                             "relational", "contrastive"))
        if {"relational", "similarity"} <= have:
            out.append(Claim("rel_gt_sim_few_shot", "relational > similarity, few-shot in distribution", "greater", fs,
                             "relational", "similarity"))
            out.append(Claim("rel_gt_sim_few_shot_ood", "relational > similarity, few-shot out of distribution",
                             "greater", f"ood_{fs}", "relational", "similarity"))
        if len(have) >= 2:
            out.append(Claim("gap_vs_zero_shot", "the structural gap correlates negatively with zero-shot mIoU",
                             "negative_correlation", zs))
            out.append(Claim("gap_vs_few_shot", "the structural gap correlates negatively with few-shot mIoU",
                             "negative_correlation", fs))
        return out


# Table columns: (summary key, header), fine-tuning ones added per fraction found; mIoU columns in %.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("zero_shot_miou", "zero-shot mIoU"),
    ("zero_shot_miou_seen", "zero-shot, teacher-seen classes"),
    ("zero_shot_miou_visible", "zero-shot (camera-visible)"),
    ("probe_miou", "linear probe"),
    ("finetune_miou_*", "fine-tuned"),
    ("ood_zero_shot_miou", "OOD zero-shot"),
    ("ood_probe_miou", "OOD linear probe"),
    ("ood_finetune_miou_*", "OOD fine-tuned"),
    ("gap", "gap |KKᵀ−QQᵀ|"),
    ("gap_balanced", "class-balanced gap"),
    ("cka", "CKA"),
    ("knn_agreement", "k-NN label agreement"),
    ("teacher_knn_agreement", "teacher's k-NN agreement"),
)
# Structural measures whose correlation with the claims' metrics is reported beside the paper's gap.
STRUCTURE_KEYS: tuple[str, ...] = ("gap", "gap_balanced", "cka", "knn_agreement")


# ---------------------------------------------------------------------------------------------- statistics


def _t_quantile(confidence: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, dof))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and the half-width of its Student-t interval (NaNs dropped; half-width NaN below 2 values)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": float("nan"), "half": float("nan"), "n": 0}
    half = _t_quantile(confidence, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size) if v.size >= 2 else float("nan")
    return {"mean": float(v.mean()), "half": float(half), "n": int(v.size)}


def correlation_interval(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Pearson r of (x, y) with its Fisher-z interval (pairs with a NaN dropped); Spearman's rho beside."""
    from scipy.stats import norm, spearmanr

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    n = int(a.size)
    if n < 4 or a.std() == 0 or b.std() == 0:
        return {"r": float("nan"), "lo": float("nan"), "hi": float("nan"), "rho": float("nan"), "n": n}
    r = float(np.corrcoef(a, b)[0, 1])
    z, dz = math.atanh(max(min(r, 0.999999), -0.999999)), float(norm.ppf(0.5 + confidence / 2)) / math.sqrt(n - 3)
    return {"r": r, "lo": math.tanh(z - dz), "hi": math.tanh(z + dz), "rho": float(spearmanr(a, b).statistic), "n": n}


def verdict(lo: float, hi: float, positive: bool = True) -> Verdict:
    """``holds`` when [lo, hi] lies on the claimed side of 0 (above it when ``positive``), ``reversed``
    when on the other side, ``undecided`` otherwise (or when the interval is unknown)."""
    if math.isnan(lo) or math.isnan(hi):
        return "undecided"
    if (lo > 0) if positive else (hi < 0):
        return "holds"
    if (hi < 0) if positive else (lo > 0):
        return "reversed"
    return "undecided"


def paired_differences(runs: Sequence[dict], metric: str, better: str, worse: str, group: str = "main",
                       confidence: float = 0.95) -> dict[str, Any]:
    """Per-seed differences ``better - worse`` on ``metric`` within ``group`` (seeds both losses ran)."""
    by = {(r["loss"], r["seed"]): r["summary"].get(metric, float("nan")) for r in runs if r["group"] == group}
    seeds = sorted({s for (loss, s) in by if loss == better} & {s for (loss, s) in by if loss == worse})
    diffs = [by[(better, s)] - by[(worse, s)] for s in seeds]
    stats = mean_interval(diffs, confidence)
    return {**stats, "lo": stats["mean"] - stats["half"], "hi": stats["mean"] + stats["half"], "seeds": seeds,
            "diffs": diffs}


def decide(plan: ComparePlan, runs: Sequence[dict], group: str = "main") -> list[dict[str, Any]]:
    """Each claim of ``plan`` on ``runs`` of ``group``: its statistic, interval and verdict."""
    out = []
    rows = [r for r in runs if r["group"] == group]
    for claim in plan.claims():
        if claim.kind == "greater":
            d = paired_differences(rows, claim.metric, claim.better, claim.worse, group, plan.confidence)
            out.append({"claim": claim.key, "text": claim.text, "metric": claim.metric, "statistic": "paired difference",
                        "value": d["mean"], "lo": d["lo"], "hi": d["hi"], "n": d["n"],
                        "verdict": verdict(d["lo"], d["hi"], positive=True)})
        else:
            c = correlation_interval([r["summary"].get("gap", float("nan")) for r in rows],
                                     [r["summary"].get(claim.metric, float("nan")) for r in rows], plan.confidence)
            out.append({"claim": claim.key, "text": claim.text, "metric": claim.metric, "statistic": "Pearson r",
                        "value": c["r"], "lo": c["lo"], "hi": c["hi"], "n": c["n"], "rho": c["rho"],
                        "verdict": verdict(c["lo"], c["hi"], positive=False)})
    return out


def aggregate(runs: Sequence[dict], confidence: float = 0.95) -> dict[str, dict[str, dict[str, float]]]:
    """(group/loss label) -> summary key -> mean and interval over seeds."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for label in dict.fromkeys(run_label(r) for r in runs):
        rows = [r["summary"] for r in runs if run_label(r) == label]
        keys = dict.fromkeys(k for row in rows for k in row)
        table[label] = {k: mean_interval([row.get(k, float("nan")) for row in rows], confidence) for k in keys}
    return table


def run_label(run: dict) -> str:
    return run["loss"] if run["group"] == "main" else f"{run['group']}: {run['loss']}"


# ---------------------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One unit of work: distill + evaluate (``distill``), evaluate an untrained student (``random``), or
    fit and score an oracle (``oracle``)."""

    kind: Literal["distill", "random", "oracle"]
    group: str  # main | ablation name | switch name | random | oracle
    loss: str  # the loss, or the ablation's name, or "random init"
    seed: int
    config_json: str
    out_dir: str
    curve_points: int = 0
    curve_scans: int | None = None
    oracle_json: str = ""


def variant(config: DistillConfig, loss: str, seed_offset: int, weights: RelationalWeights | None = None) -> DistillConfig:
    """``config`` with the loss replaced (relational weights set) and the seed shifted; all else identical."""
    tree = config.model_dump(mode="json")
    tree["loss"]["type"] = loss
    tree["loss"]["superpixel_pooling"] = bool(tree["loss"]["superpixel_pooling"] and loss == "contrastive")
    if weights is not None:
        tree["loss"].update(weights.model_dump())
    tree["train"]["seed"] = config.train.seed + seed_offset
    return DistillConfig.model_validate(tree)


def switch_teacher(config: DistillConfig, name: str, switch: TeacherSwitch) -> DistillConfig:
    """``config`` with every synthetic source's teacher overridden by ``switch`` and its cache moved aside."""
    tree = config.model_dump(mode="json")
    sources = [tree["data"], tree["data"].get("val")]
    if tree["eval"].get("ood"):
        sources += [tree["eval"]["ood"], tree["eval"]["ood"].get("val")]
    touched = 0
    for source in sources:
        if source and source.get("synthetic"):
            source["synthetic"]["teacher"] = {**source["synthetic"]["teacher"], **switch.teacher}
            source["cache"] = f"{source['cache']}_{name}"
            touched += 1
    if not touched:
        raise CompareError(f"teacher_switches.{name}: the data has no synthetic source; teacher switches need the "
                           "synthetic world")
    tree["eval"]["vocabulary"] = None  # the switched teacher's own text side
    return DistillConfig.model_validate(tree)


def _summary_of(model, config: DistillConfig) -> dict[str, float]:
    from relidar.training.evaluate import evaluate

    return evaluate(model, config).summary()


def _curve(run_dir: Path, config: DistillConfig, scans: int | None, init_model) -> list[list[float]]:
    """[[step, zero-shot mIoU], ...] over the run's kept checkpoints (and step 0), on the first held-out scans."""
    from relidar.core.vocabulary import Vocabulary  # noqa: F401  (the evaluator's type)
    from relidar.training.evaluate import evaluate_zero_shot, labelled_set, resolve_vocabulary

    vocabulary = resolve_vocabulary(config)
    data = labelled_set("in-distribution", config.data, vocabulary, scans)
    points = [[0.0, evaluate_zero_shot(init_model, data, vocabulary, "cpu", gap_pairs=4).miou]]
    for path in sorted((run_dir / "checkpoints").glob("step_*.safetensors")):
        model = load_student(path).eval()
        step = float(int(path.stem.split("_")[1]))
        points.append([step, evaluate_zero_shot(model, data, vocabulary, "cpu", gap_pairs=4).miou])
    return points


def _losses(run_dir: Path) -> list[list[float]]:
    """[[step, training loss], ...] from the run's metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [[float(r["step"]), float(r["loss_total"])] for r in csv.DictReader(fh)]


def run_job(job: Job) -> dict:
    """Do ``job`` in this process with one torch thread; returns its row of results."""
    import torch

    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    config = DistillConfig.model_validate_json(job.config_json)
    row: dict[str, Any] = {"group": job.group, "loss": job.loss, "seed": job.seed, "kind": job.kind}
    if job.kind == "distill":
        from relidar.model.network import Student
        from relidar.training.distill import distill

        name = f"{job.group}_{job.loss}_seed{job.seed}".replace(" ", "_").replace(":", "")
        result = distill(config, out=Path(job.out_dir) / name)  # --out is exactly the run folder
        model = load_student(result.weights).eval()
        row["summary"] = _summary_of(model, config)
        row["run_dir"] = str(result.run_dir)
        row["train_seconds"] = result.seconds
        row["train_loss"] = _losses(result.run_dir)
        if job.curve_points:
            torch.manual_seed(config.train.seed)
            row["curve"] = _curve(result.run_dir, config, job.curve_scans, Student(config.student))
    elif job.kind == "random":
        from relidar.model.network import Student

        torch.manual_seed(config.train.seed)
        row["summary"] = _summary_of(Student(config.student).eval(), config)
    else:
        from relidar.training.evaluate import labelled_set, resolve_vocabulary
        from relidar.training.oracle import evaluate_oracle

        vocabulary = resolve_vocabulary(config)
        data = labelled_set("in-distribution", config.data, vocabulary, config.eval.max_scans)
        zs = evaluate_oracle(data, config, vocabulary, OracleConfig.model_validate_json(job.oracle_json))
        row["summary"] = {"zero_shot_miou": zs.miou, "zero_shot_miou_seen": zs.miou_seen,
                          "zero_shot_miou_visible": zs.miou_visible, "gap": zs.structure.gap,
                          "gap_balanced": zs.structure.gap_balanced, "cka": zs.structure.cka}
    row["seconds"] = time.perf_counter() - start
    row["cpu_seconds"] = time.process_time() - cpu  # the budget whatever else the machine runs
    return row


def plan_jobs(config: DistillConfig, plan: ComparePlan, out_dir: Path) -> list[Job]:
    """Every job of the plan, in a fixed order."""
    runs = str(out_dir / "runs")
    jobs: list[Job] = []

    def distill_jobs(group: str, base: DistillConfig, seeds: int, curves: bool, losses: Sequence[str] = ()) -> None:
        for loss in losses or plan.losses:
            for s in range(seeds):
                cfg = variant(base, loss, s)
                jobs.append(Job("distill", group, loss, cfg.train.seed, _with_curves(cfg, plan if curves else None),
                                runs, plan.curve_points if curves else 0, plan.curve_scans))

    distill_jobs("main", config, plan.seeds, True)
    if plan.random_init:
        for s in range(plan.seeds):
            cfg = variant(config, plan.losses[0], s)
            jobs.append(Job("random", "random", "random init", cfg.train.seed, cfg.model_dump_json(), runs))
    if plan.oracle is not None:
        for loss in plan.losses:
            for s in range(plan.seeds):
                cfg = variant(config, loss, s)
                jobs.append(Job("oracle", "oracle", loss, cfg.train.seed, cfg.model_dump_json(), runs,
                                oracle_json=plan.oracle.model_dump_json()))
    for name, weights in plan.ablations.items():
        for s in range(plan.ablation_seeds or plan.seeds):
            cfg = variant(config, "relational", s, weights)
            jobs.append(Job("distill", "ablation", name, cfg.train.seed, _with_curves(cfg, None), runs))
    for name, switch in plan.teacher_switches.items():
        distill_jobs(f"switch {name}", switch_teacher(config, name, switch), switch.seeds or plan.seeds, False,
                     switch_losses(plan, switch))
    return jobs


def switch_losses(plan: ComparePlan, switch: TeacherSwitch) -> list[str]:
    """The losses a teacher switch reruns: its own list, or the two of every claim it predicts."""
    if switch.losses is not None:
        return list(switch.losses)
    claims = {c.key: c for c in plan.claims()}
    named = {loss for key in switch.predict for loss in (claims[key].better, claims[key].worse) if loss}
    return [loss for loss in plan.losses if loss in named] or list(plan.losses)


def _with_curves(config: DistillConfig, plan: ComparePlan | None) -> str:
    """The run's config JSON; with learning curves, checkpoints spaced to give ``curve_points`` of them."""
    if plan is None or not plan.curve_points:
        tree = config.model_dump(mode="json")
        tree["logging"].update({"tensorboard": False, "progress": False})
        return DistillConfig.model_validate(tree).model_dump_json()
    from relidar.training.data import split_data, steps_per_epoch

    spe = steps_per_epoch(len(split_data(config.data).train), config.train.batch_size)
    total = config.train.epochs * spe
    total = min(total, config.train.max_steps) if config.train.max_steps else total
    tree = config.model_dump(mode="json")
    tree["logging"].update({"checkpoint_every": max(1, total // plan.curve_points),
                            "keep_checkpoints": plan.curve_points + 1, "tensorboard": False, "progress": False})
    return DistillConfig.model_validate(tree).model_dump_json()


# ---------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class CompareResult:
    out_dir: Path
    runs: list[dict]
    table: dict[str, dict[str, dict[str, float]]]
    claims: list[dict[str, Any]]
    markdown: Path
    plots: dict[str, Path]


def _cell(stat: dict[str, float] | None, key: str) -> str:
    if stat is None or math.isnan(stat["mean"]):
        return "–"
    scale, fmt = (100.0, ".1f") if "miou" in key else (1.0, ".3f")
    half = "" if math.isnan(stat["half"]) else f" ± {scale * stat['half']:{fmt}}"
    return f"{scale * stat['mean']:{fmt}}{half}"


def table_columns(table: dict[str, dict[str, dict[str, float]]], labels: Sequence[str]) -> list[tuple[str, str]]:
    """:data:`COLUMNS` that any of ``labels`` has, a ``*`` column expanded to each fraction present."""
    have = list(dict.fromkeys(k for label in labels for k in table.get(label, {})))
    cols: list[tuple[str, str]] = []
    for key, head in COLUMNS:
        if key.endswith("*"):
            cols += [(k, f"{head} {k[len(key) - 1:].replace('pct', ' %')}") for k in have if k.startswith(key[:-1])]
        elif key in have:
            cols.append((key, head))
    return cols


def markdown_table(table: dict[str, dict[str, dict[str, float]]], labels: Sequence[str]) -> str:
    cols = table_columns(table, labels)
    lines = ["| | " + " | ".join(h for _, h in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label in labels:
        row = table.get(label, {})
        lines.append(f"| {label} | " + " | ".join(_cell(row.get(k), k) for k, _ in cols) + " |")
    return "\n".join(lines)


def claims_table(claims: Sequence[dict[str, Any]]) -> str:
    lines = ["| claim | metric | statistic | value [95 % interval] | n | verdict |", "|---|---|---|---|---|---|"]
    for c in claims:
        scale = 100.0 if c["statistic"] == "paired difference" else 1.0
        unit = " pt" if scale == 100.0 else ""
        value = "–" if math.isnan(c["value"]) else (
            f"{scale * c['value']:+.2f}{unit} [{scale * c['lo']:+.2f}, {scale * c['hi']:+.2f}]")
        lines.append(f"| {c['text']} | `{c['metric']}` | {c['statistic']} | {value} | {c['n']} | **{c['verdict']}** |")
    return "\n".join(lines)


def verdict_lines(claims: Sequence[dict[str, Any]]) -> list[str]:
    words = {"holds": "holds", "reversed": "REVERSED", "undecided": "undecided at this budget"}
    return [f"{c['text']}: {words[c['verdict']]}" for c in claims]


def structure_correlations(plan: ComparePlan, runs: Sequence[dict]) -> str:
    """Correlation over the main runs of each structural measure with the claims' metrics."""
    rows = [r for r in runs if r["group"] == "main"]
    metrics = [plan.zero_shot_metric, plan.few_shot_metric, f"ood_{plan.few_shot_metric}"]
    lines = ["| measure | " + " | ".join(f"r with `{m}` [95 %]" for m in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for key in STRUCTURE_KEYS:
        cells = []
        for m in metrics:
            c = correlation_interval([r["summary"].get(key, float("nan")) for r in rows],
                                     [r["summary"].get(m, float("nan")) for r in rows], plan.confidence)
            cells.append("–" if math.isnan(c["r"]) else f"{c['r']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}]")
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def switch_analysis(plan: ComparePlan, runs: Sequence[dict]) -> list[dict[str, Any]]:
    """For each teacher switch and each paired claim: the difference under the switch, under the base
    teacher, the change (paired by seed) and whether it moved as the plan predicted."""
    out = []
    for name, switch in plan.teacher_switches.items():
        group = f"switch {name}"
        rerun = set(switch_losses(plan, switch))
        for claim in plan.claims():
            if claim.kind != "greater" or not {claim.better, claim.worse} <= rerun:
                continue
            base = paired_differences(runs, claim.metric, claim.better, claim.worse, "main", plan.confidence)
            under = paired_differences(runs, claim.metric, claim.better, claim.worse, group, plan.confidence)
            common = sorted(set(base["seeds"]) & set(under["seeds"]))
            change = mean_interval([under["diffs"][under["seeds"].index(s)] - base["diffs"][base["seeds"].index(s)]
                                    for s in common], plan.confidence)
            lo, hi = change["mean"] - change["half"], change["mean"] + change["half"]
            expected = switch.predict.get(claim.key)
            moved = verdict(lo, hi, positive=True)  # holds: larger; reversed: smaller
            direction = {"holds": "larger", "reversed": "smaller", "undecided": "no clear change"}[moved]
            outcome = ("no prediction" if expected is None else
                       "as predicted" if direction == expected else
                       "undecided" if moved == "undecided" else "against the prediction")
            out.append({"switch": name, "claim": claim.key, "text": claim.text, "base": base["mean"], "under": under["mean"],
                        "change": change["mean"], "lo": lo, "hi": hi, "n": change["n"], "moved": direction,
                        "predicted": expected, "outcome": outcome})
    return out


def switch_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| switch | claim | difference, base teacher | under the switch | change [95 %] | predicted | outcome |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        change = "–" if math.isnan(r["change"]) else f"{100 * r['change']:+.2f} [{100 * r['lo']:+.2f}, {100 * r['hi']:+.2f}]"
        lines.append(f"| {r['switch']} | {r['text']} | {100 * r['base']:+.2f} | {100 * r['under']:+.2f} | {change} | "
                     f"{r['predicted'] or '–'} | {r['outcome']} |")
    return "\n".join(lines)


def plot_learning_curves(path: Path, runs: Sequence[dict]) -> Path:
    """Zero-shot mIoU at the kept checkpoints (mean over seeds, min-max band) and the training loss relative
    to its first logged value, per loss."""
    fig = new_figure(11, 4)
    ax_z, ax_l = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    main = [r for r in runs if r["group"] == "main"]
    for j, loss in enumerate(dict.fromkeys(r["loss"] for r in main)):
        curves = [np.asarray(r["curve"]) for r in main if r["loss"] == loss and r.get("curve")]
        if curves and len({c.shape for c in curves}) == 1:
            stack = np.stack(curves)
            steps, vals = stack[0, :, 0], 100 * stack[:, :, 1]
            ax_z.plot(steps, vals.mean(axis=0), "-o", color=f"C{j}", label=loss)
            ax_z.fill_between(steps, vals.min(axis=0), vals.max(axis=0), color=f"C{j}", alpha=0.15)
        for i, r in enumerate(x for x in main if x["loss"] == loss):
            curve = np.asarray(r.get("train_loss") or [[0.0, 1.0]])
            ax_l.plot(curve[:, 0], curve[:, 1] / curve[0, 1], color=f"C{j}", alpha=0.5, label=loss if i == 0 else None)
    ax_z.set_xlabel("optimizer step")
    ax_z.set_ylabel("zero-shot mIoU (%), held-out scans")
    ax_z.set_title("zero-shot mIoU during distillation (mean, min-max over seeds)")
    ax_l.set_xlabel("optimizer step")
    ax_l.set_ylabel("training loss / its first value")
    ax_l.set_title("training loss")
    for ax in (ax_z, ax_l):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_png(fig, path)


def plot_gap_scatter(path: Path, runs: Sequence[dict], metrics: Sequence[tuple[str, str]]) -> Path:
    fig = new_figure(5 * len(metrics), 4)
    main = [r for r in runs if r["group"] == "main"]
    for i, (key, label) in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for j, loss in enumerate(dict.fromkeys(r["loss"] for r in main)):
            pts = [(r["summary"].get("gap", np.nan), 100 * r["summary"].get(key, np.nan)) for r in main if r["loss"] == loss]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=loss, color=f"C{j}")
        ax.set_xlabel("structural gap, mean |KKᵀ − QQᵀ|")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    fig.suptitle("structural gap vs mIoU (one point per run)")
    return save_png(fig, path)


def plan_markdown(config: DistillConfig, plan: ComparePlan, jobs: Sequence[Job]) -> str:
    budget = (f"{config.train.epochs} epoch(s), max_steps {config.train.max_steps}, batch {config.train.batch_size}, "
              f"{config.sampling.pairs_per_batch if config.sampling.scope == 'batch' else config.sampling.pairs_per_scan} "
              f"pairs per {'batch' if config.sampling.scope == 'batch' else 'scan'}, student `{config.student.profile}` at "
              f"{config.student.voxel_size} m")
    lines = ["## Plan (written before any run)", "",
             f"- losses: {', '.join(plan.losses)}; {plan.seeds} paired seeds from {config.train.seed}",
             f"- budget per run: {budget}",
             f"- training scans: `{config.data.cache}`; held out: `{config.data.val.cache if config.data.val else 'tail'}`; "
             f"out of distribution: `{config.eval.ood.cache if config.eval.ood else 'none'}`",
             f"- zero-shot metric `{plan.zero_shot_metric}`, few-shot metric `{plan.few_shot_metric}` (OOD: "
             f"`ood_{plan.few_shot_metric}`); {int(100 * plan.confidence)} % intervals",
             f"- controls: random init {'on' if plan.random_init else 'off'}, oracle "
             f"{'on' if plan.oracle else 'off'}, ablations {list(plan.ablations) or 'none'}, teacher switches "
             f"{list(plan.teacher_switches) or 'none'}; {len(jobs)} jobs on {plan.workers} worker(s)", "",
             "| claim | metric | statistic |", "|---|---|---|"]
    lines += [f"| {c.text} | `{c.metric}` | {'paired difference over seeds' if c.kind == 'greater' else 'Pearson r over runs'} |"
              for c in plan.claims()]
    for name, switch in plan.teacher_switches.items():
        lines += ["", f"Teacher switch `{name}` ({switch.teacher}): {switch.why}",
                  "predicted: " + (", ".join(f"{k} {v}" for k, v in switch.predict.items()) or "nothing")]
    return "\n".join(lines)


def report_markdown(config: DistillConfig, plan: ComparePlan, jobs: Sequence[Job], runs: Sequence[dict],
                    table: dict, claims: Sequence[dict], switches: Sequence[dict], seconds: float) -> str:
    main_labels = [loss for loss in plan.losses]
    control_labels = [label for label in table if label not in main_labels]
    md = ["# relidar compare", "", plan_markdown(config, plan, jobs), "",
          "## Results", "", f"Mean ± {int(100 * plan.confidence)} % interval over seeds; mIoU in %.", "",
          markdown_table(table, main_labels), "",
          "## Claims", "", claims_table(claims), "", *[f"- {line}" for line in verdict_lines(claims)], "",
          "## Structural measures against the scores (main runs)", "", structure_correlations(plan, runs), ""]
    if control_labels:
        md += ["## Controls", "", markdown_table(table, control_labels), ""]
    if switches:
        md += ["## Teacher switches", "", switch_table(switches), ""]
    cpu = sum(r.get("cpu_seconds", 0.0) for r in runs)
    md += ["![learning curves](learning_curves.png)", "", "![gap vs mIoU](gap_vs_miou.png)", "",
           f"{len(runs)} jobs: {cpu / 60:.1f} CPU-minutes in the jobs, {seconds / 60:.1f} min wall-clock on "
           f"{plan.workers} worker(s) (data preparation included)."]
    return "\n".join(md)


def compare(config: DistillConfig, plan: ComparePlan, out_dir: Path,
            on_event: Callable[[str], None] | None = None) -> CompareResult:
    """Run the plan into ``out_dir``: plan.json/plan.md first, then runs/, compare.json, compare.md and plots."""
    from relidar.training.data import split_data

    event = on_event or (lambda _m: None)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    event("preparing data")
    configs = [config, *(switch_teacher(config, n, s) for n, s in plan.teacher_switches.items())]
    for cfg in configs:
        split_data(cfg.data)
        if cfg.eval.ood is not None:
            split_data(cfg.eval.ood)
    jobs = plan_jobs(config, plan, out_dir)
    atomic_write_bytes(out_dir / "plan.json", (json.dumps({"plan": plan.model_dump(mode="json"),
                                                           "claims": [c.__dict__ for c in plan.claims()],
                                                           "jobs": len(jobs)}, indent=2) + "\n").encode())
    atomic_write_bytes(out_dir / "plan.md", (plan_markdown(config, plan, jobs) + "\n").encode())
    finished: dict[int, dict] = {}

    def done(index: int, row: dict) -> None:
        finished[index] = row
        event(f"{len(finished)}/{len(jobs)} done: {row['group']} {row['loss']} seed {row['seed']} ({row['seconds']:.0f} s)")
        atomic_write_bytes(out_dir / "runs.json", (json.dumps([finished[i] for i in sorted(finished)], indent=2)
                                                   + "\n").encode())

    if plan.workers == 1:
        for i, job in enumerate(jobs):
            done(i, run_job(job))
    else:
        # spawn, not fork: torch's thread pools do not survive a fork.
        with ProcessPoolExecutor(plan.workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                done(futures[future], future.result())
    runs = [finished[i] for i in sorted(finished)]
    table = aggregate(runs, plan.confidence)
    claims = decide(plan, runs)
    switches = switch_analysis(plan, runs)
    plots = {"curves": plot_learning_curves(out_dir / "learning_curves.png", runs),
             "scatter": plot_gap_scatter(out_dir / "gap_vs_miou.png", runs,
                                         [(plan.zero_shot_metric, "zero-shot mIoU (%)"),
                                          (plan.few_shot_metric, "few-shot mIoU (%)")])}
    seconds = time.perf_counter() - start
    atomic_write_bytes(out_dir / "compare.json", (json.dumps(
        {"plan": plan.model_dump(mode="json"), "table": table, "claims": claims, "switches": switches, "runs": runs,
         "seconds": seconds}, indent=2, allow_nan=True) + "\n").encode())
    md = report_markdown(config, plan, jobs, runs, table, claims, switches, seconds)
    atomic_write_bytes(out_dir / "compare.md", (md + "\n").encode())
    return CompareResult(out_dir=out_dir, runs=runs, table=table, claims=claims, markdown=out_dir / "compare.md",
                         plots=plots)


def parse_losses(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in LOSS_NAMES]
    if not names or unknown:
        raise CompareError(f"--losses: {unknown or text!r} not understood; choose from {', '.join(LOSS_NAMES)}")
    return names
