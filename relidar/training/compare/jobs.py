"""The comparison's jobs: one per distilled run, untrained student or oracle, each runnable in its own process.

A job carries its config as JSON so that a spawned worker rebuilds it exactly. :func:`selection_jobs`
lists the per-loss grid (distilled at the base budget, scored zero-shot on the validation street only:
their config's held-out scans *are* the validation street, and it has no out-of-distribution set);
:func:`plan_jobs` every other job in a fixed order, seed s of every loss with the same ``train.seed`` and
each loss at its chosen setting. A distilled run trains to the largest budget once and is scored in full
at every budget's checkpoint (see :mod:`relidar.training.compare.plan` on when that checkpoint is the
shorter run); the main runs' learning curves are scored on the validation street where there is one.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

from relidar.model.weights import load_student
from relidar.training.checkpoint import checkpoint_weights
from relidar.training.compare.plan import (
    CompareError,
    ComparePlan,
    RelationalWeights,
    Setting,
    TeacherSwitch,
    quarter_step,
    switch_losses,
)
from relidar.training.config import DistillConfig
from relidar.training.oracle import OracleConfig

if TYPE_CHECKING:
    from relidar.training.evaluate import ZeroShotResult


@dataclass(frozen=True)
class Job:
    """One unit of work: distill + evaluate at every budget (``distill``), distill at the base budget + score
    on the validation street (``select``), evaluate an untrained student (``random``), or fit and score an
    oracle (``oracle``)."""

    kind: Literal["distill", "select", "random", "oracle"]
    group: str  # main | fixed | select | ablation | switch name | random | oracle
    loss: str  # the loss, or the ablation's name, or "random init"
    seed: int
    config_json: str  # distilled jobs: the run of the largest budget
    out_dir: str
    budget_steps: tuple[tuple[int, int], ...] = ()  # (budget, step) scored in full
    curve_steps: tuple[int, ...] = ()
    curve_scans: int | None = None
    oracle_json: str = ""
    setting: Setting | None = None

    @property
    def run_name(self) -> str:
        name = f"{self.group}_{self.loss}_seed{self.seed}"
        if self.group == "select" and self.setting is not None:
            name += f"_lr{self.setting.lr_factor:.4g}" + (f"_t{self.setting.temperature:g}"
                                                          if self.setting.temperature is not None else "")
        return name.replace(" ", "_").replace(":", "")


def setting_json(setting: Setting | None) -> dict[str, Any] | None:
    """A row's record of the setting its run used (``None``: the config's own)."""
    return None if setting is None else {**asdict(setting), "label": setting.label}


def variant(config: DistillConfig, loss: str, seed_offset: int, weights: RelationalWeights | None = None) -> DistillConfig:
    """``config`` with the loss replaced (relational weights set) and the seed shifted; all else identical."""
    tree = config.model_dump(mode="json")
    tree["loss"]["type"] = loss
    tree["loss"]["superpixel_pooling"] = bool(tree["loss"]["superpixel_pooling"] and loss == "contrastive")
    if weights is not None:
        tree["loss"].update(weights.model_dump())
    tree["train"]["seed"] = config.train.seed + seed_offset
    return DistillConfig.model_validate(tree)


def with_setting(config: DistillConfig, setting: Setting | None) -> DistillConfig:
    """``config`` with its loss's learning rate times ``setting.lr_factor`` (as ``optimizer.per_loss``, so the
    loss's own optimizer is kept) and, where set, the contrastive temperature; ``None``: ``config`` itself."""
    loss = config.loss.type
    if setting is None or (setting.lr_factor == 1.0 and setting.temperature in (None, config.loss.temperature)):
        return config  # the config's own setting: the same run, whichever way it was reached
    tree = config.model_dump(mode="json")
    own = {k: v for k, v in tree["optimizer"]["per_loss"].get(loss, {}).items() if v is not None}
    tree["optimizer"]["per_loss"][loss] = {**own, "lr": config.optimizer.for_loss(loss).lr * setting.lr_factor}
    if setting.temperature is not None:
        tree["loss"]["temperature"] = setting.temperature
    return DistillConfig.model_validate(tree)


def merged(tree: dict, overrides: Mapping[str, Any]) -> dict:
    """``tree`` with ``overrides`` merged in section by section (nested mappings merge, other values replace)."""
    out = dict(tree)
    for key, value in overrides.items():
        out[key] = merged(out.get(key) or {}, value) if isinstance(value, Mapping) else value
    return out


def switch_teacher(config: DistillConfig, name: str, switch: TeacherSwitch) -> DistillConfig:
    """``config`` under ``switch``: its config overrides merged in, and with teacher overrides every synthetic
    source's teacher changed and its cache moved aside."""
    tree = merged(config.model_dump(mode="json"), switch.config)
    if switch.teacher:
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
        tree["data"]["selection"] = None  # the base teacher's street; a switch reruns chosen settings, never selects
    try:
        return DistillConfig.model_validate(tree)
    except ValueError as exc:
        raise CompareError(f"teacher_switches.{name}.config: {exc}") from exc


def on_validation_street(config: DistillConfig) -> DistillConfig:
    """``config`` whose held-out scans are the validation street (``data.selection``) and which has no other
    scored set: what the per-loss grid and the learning curves read, so that they cannot read the held-out
    street."""
    if config.data.selection is None:
        raise CompareError("the plan selects settings per loss, but the config has no data.selection (the "
                           "validation street; never the held-out scans)")
    tree = config.model_dump(mode="json")
    tree["data"]["val"], tree["data"]["selection"] = tree["data"]["selection"], None
    tree["eval"]["ood"] = None
    return DistillConfig.model_validate(tree)


def _summary_of(model, config: DistillConfig) -> dict[str, float]:
    from relidar.training.evaluate import evaluate

    return evaluate(model, config).summary()


def _zero_shot_summary(zs: ZeroShotResult) -> dict[str, float]:
    """The zero-shot and structural headline numbers of an ``evaluate_zero_shot``-like result."""
    return {"zero_shot_miou": zs.miou, "zero_shot_miou_seen": zs.miou_seen, "zero_shot_miou_visible": zs.miou_visible,
            "gap": zs.structure.gap, "gap_balanced": zs.structure.gap_balanced, "cka": zs.structure.cka}


def _curve(run_dir: Path, config: DistillConfig, steps: Sequence[int], scans: int | None, init_model) -> list[list[float]]:
    """[[step, zero-shot mIoU], ...] at step 0 and the checkpoints after ``steps``, on the first scans of the
    validation street (of the held-out street where the data has none)."""
    from relidar.training.evaluate import evaluate_zero_shot, labelled_set, resolve_vocabulary

    vocabulary = resolve_vocabulary(config)
    source = on_validation_street(config).data if config.data.selection is not None else config.data
    data = labelled_set("curve", source, vocabulary, scans)
    points = [[0.0, evaluate_zero_shot(init_model, data, vocabulary, "cpu", gap_pairs=4).miou]]
    for step in steps:
        model = load_student(checkpoint_weights(run_dir, step)).eval()
        points.append([float(step), evaluate_zero_shot(model, data, vocabulary, "cpu", gap_pairs=4).miou])
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
    row: dict[str, Any] = {"group": job.group, "loss": job.loss, "seed": job.seed, "kind": job.kind,
                           "setting": setting_json(job.setting)}
    if job.kind in ("distill", "select"):
        from relidar.model.network import Student
        from relidar.training.distill import distill

        result = distill(config, out=Path(job.out_dir) / job.run_name)  # --out is exactly the run folder
        row["run_dir"] = str(result.run_dir)
        row["train_seconds"] = result.seconds
        row["train_loss"] = _losses(result.run_dir)
        if job.kind == "select":
            from relidar.training.evaluate import evaluate_zero_shot, labelled_set, resolve_vocabulary

            # The job's config has the validation street as its held-out scans (on_validation_street).
            vocabulary = resolve_vocabulary(config)
            data = labelled_set("validation", config.data, vocabulary, config.eval.max_scans)
            zs = evaluate_zero_shot(load_student(result.weights).eval(), data, vocabulary, "cpu",
                                    gap_pairs=config.eval.gap_pairs, seed=config.train.seed, knn=config.eval.knn,
                                    teacher_seen_iou=config.eval.teacher_seen_iou)
            row["summary"] = _zero_shot_summary(zs)
        else:
            row["budgets"] = []
            for budget, step in job.budget_steps:
                weights = checkpoint_weights(result.run_dir, step)
                row["budgets"].append({"budget": budget, "step": step, "weights": str(weights),
                                       "summary": _summary_of(load_student(weights).eval(), config)})
            row["summary"] = row["budgets"][-1]["summary"]  # the largest budget
        if job.curve_steps:
            torch.manual_seed(config.train.seed)
            row["curve"] = _curve(result.run_dir, config, job.curve_steps, job.curve_scans, Student(config.student))
    elif job.kind == "random":
        from relidar.model.network import Student

        torch.manual_seed(config.train.seed)
        row["summary"] = _summary_of(Student(config.student).eval(), config)
    else:
        from relidar.training.evaluate import labelled_set, resolve_vocabulary
        from relidar.training.oracle import evaluate_oracle

        vocabulary = resolve_vocabulary(config)
        data = labelled_set("in-distribution", config.data, vocabulary, config.eval.max_scans)
        row["summary"] = _zero_shot_summary(evaluate_oracle(data, config, vocabulary,
                                                            OracleConfig.model_validate_json(job.oracle_json)))
    row["seconds"] = time.perf_counter() - start
    row["cpu_seconds"] = time.process_time() - cpu  # the budget whatever else the machine runs
    return row


def base_steps(config: DistillConfig) -> int:
    """Optimizer steps of one run of ``config`` (the 1x budget)."""
    from relidar.training.data import split_data
    from relidar.training.distill import total_steps

    return total_steps(config, len(split_data(config.data).train))


def curve_steps(plan: ComparePlan, base: int) -> tuple[int, ...]:
    """The steps a main run's learning curve is scored at: ``curve_points`` evenly over the largest budget,
    every budget's last step and, where the plan measures flattening, 3/4 of every budget."""
    if not plan.curve_points:
        return ()
    total = plan.budgets[-1] * base
    steps = {max(1, round(total * k / plan.curve_points)) for k in range(1, plan.curve_points + 1)}
    steps |= {b * base for b in plan.budgets}
    if plan.flat_within is not None:
        steps |= {quarter_step(b * base) for b in plan.budgets}
    return tuple(sorted(steps))


def distill_job(kind: Literal["distill", "select"], group: str, config: DistillConfig, plan: ComparePlan, base: int,
                budgets: Sequence[int], curves: Sequence[int], runs: str, setting: Setting | None = None) -> Job:
    """A run of ``config`` to the largest of ``budgets`` (multiples of ``base`` steps) under the plan's schedule,
    checkpointed at every budget and curve step."""
    tree = config.model_dump(mode="json")
    largest = budgets[-1]
    tree["train"]["epochs"] = config.train.epochs * largest
    tree["train"]["max_steps"] = base * largest
    if plan.schedule == "constant":
        tree["schedule"]["name"] = "constant"
    keep = sorted({b * base for b in budgets} | set(curves))
    tree["logging"].update({"checkpoint_every": base * largest + 1, "checkpoint_steps": keep,
                            "keep_checkpoints": len(keep) + 1, "tensorboard": False, "progress": False})
    cfg = DistillConfig.model_validate(tree)
    return Job(kind, group, config.loss.type, config.train.seed, cfg.model_dump_json(), runs,
               tuple((b, b * base) for b in budgets), tuple(curves), plan.curve_scans, setting=setting)


def selection_jobs(config: DistillConfig, plan: ComparePlan, out_dir: Path, base: int) -> list[Job]:
    """The per-loss grid at the base budget on the validation street; seeds follow the main ones."""
    if plan.selection is None:
        return []
    street = on_validation_street(config)
    runs = str(out_dir / "runs")
    return [distill_job("select", "select", with_setting(variant(street, loss, plan.seeds + s), setting), plan, base,
                        [1], (), runs, setting)
            for loss in plan.losses for setting in plan.selection.settings(loss) for s in range(plan.selection.seeds)]


def plan_jobs(config: DistillConfig, plan: ComparePlan, out_dir: Path, base: int,
              chosen: Mapping[str, Setting] | None = None) -> list[Job]:
    """Every job after the selection, in a fixed order; each loss at ``chosen[loss]`` (default: the config's
    own setting), the ``fixed`` control at the config's own setting."""
    chosen = chosen or {}
    runs = str(out_dir / "runs")
    jobs: list[Job] = []
    curves = curve_steps(plan, base)

    def distill_jobs(group: str, source: DistillConfig, seeds: int, with_curves: bool, losses: Sequence[str] = (),
                     settings: Mapping[str, Setting] = chosen) -> None:
        for loss in losses or plan.losses:
            for s in range(seeds):
                setting = settings.get(loss)
                jobs.append(distill_job("distill", group, with_setting(variant(source, loss, s), setting), plan, base,
                                        plan.budgets, curves if with_curves else (), runs, setting))

    distill_jobs("main", config, plan.seeds, True)
    if plan.fixed_setting:
        distill_jobs("fixed", config, plan.seeds, True, settings={})
    if plan.random_init:
        for s in range(plan.seeds):
            cfg = variant(config, plan.losses[0], s)
            jobs.append(Job("random", "random", "random init", cfg.train.seed, cfg.model_dump_json(), runs))
    if plan.oracle is not None:
        for loss in plan.losses:
            for s in range(plan.seeds):
                cfg = with_setting(variant(config, loss, s), chosen.get(loss))
                jobs.append(Job("oracle", "oracle", loss, cfg.train.seed, cfg.model_dump_json(), runs,
                                oracle_json=plan.oracle.model_dump_json(), setting=chosen.get(loss)))
    for name, weights in plan.ablations.items():
        for s in range(plan.ablation_seeds or plan.seeds):
            setting = chosen.get("relational")
            job = distill_job("distill", "ablation", with_setting(variant(config, "relational", s, weights), setting),
                              plan, base, plan.budgets, (), runs, setting)
            jobs.append(replace(job, loss=name))
    for name, switch in plan.teacher_switches.items():
        distill_jobs(f"switch {name}", switch_teacher(config, name, switch), switch.seeds or plan.seeds, False,
                     switch_losses(plan, switch))
    return jobs
