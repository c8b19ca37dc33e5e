"""The comparison's jobs: one per distilled run, untrained student or oracle, each runnable in its own process.

A job carries its config as JSON so that a spawned worker rebuilds it exactly; :func:`plan_jobs` lists
every job of a plan in a fixed order, seed s of every loss with the same ``train.seed``. Distilled runs of
the main group keep ``curve_points`` checkpoints, scored zero-shot for the learning curves.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from relidar.model.weights import load_student
from relidar.training.compare.plan import CompareError, ComparePlan, RelationalWeights, TeacherSwitch, switch_losses
from relidar.training.config import DistillConfig
from relidar.training.oracle import OracleConfig


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
    points = [[0.0, evaluate_zero_shot(init_model, data, vocabulary, "cpu", gap_pairs=4)["all"].miou]]
    for path in sorted((run_dir / "checkpoints").glob("step_*.safetensors")):
        model = load_student(path).eval()
        step = float(int(path.stem.split("_")[1]))
        points.append([step, evaluate_zero_shot(model, data, vocabulary, "cpu", gap_pairs=4)["all"].miou])
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
        from relidar.training.metrics import miou_over

        row["summary"] = {"zero_shot_miou": zs["all"].miou, "zero_shot_miou_seen": miou_over(zs["all"], zs["seen"]),
                          "zero_shot_miou_visible": zs["visible"].miou, "gap": zs["gap"],
                          "gap_balanced": zs["gap_balanced"], "cka": zs["cka"]}
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
