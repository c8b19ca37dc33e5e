"""The comparison's report as Markdown: result tables with intervals, the claims with their verdicts, the
structural measures against the scores, the teacher switches, and the plan as written before any run."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from relidar.training.compare.cost import PlanCost
from relidar.training.compare.plan import ComparePlan, factor_text, switch_losses
from relidar.training.compare.statistics import Findings, at_budget, correlation_interval
from relidar.training.config import DistillConfig

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


def _claim_value(c: dict[str, Any]) -> str:
    scale = 100.0 if c["statistic"] == "paired difference" else 1.0
    unit = " pt" if scale == 100.0 else ""
    return "–" if math.isnan(c["value"]) else (
        f"{scale * c['value']:+.2f}{unit} [{scale * c['lo']:+.2f}, {scale * c['hi']:+.2f}]")


def claims_table(claims: Sequence[dict[str, Any]]) -> str:
    lines = ["| claim | metric | statistic | value [95 % interval] | n | verdict |", "|---|---|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c['text']} | `{c['metric']}` | {c['statistic']} | {_claim_value(c)} | {c['n']} | "
                     f"**{c['verdict']}** |")
    return "\n".join(lines)


def budget_claims_table(claims: Mapping[int, Sequence[dict[str, Any]]], base: int) -> str:
    """Each claim at every budget, one row each (budget ``b`` is ``b * base`` steps)."""
    lines = ["| claim | metric | statistic | budget | value [95 % interval] | n | verdict |", "|---|---|---|---|---|---|---|"]
    budgets = list(claims)
    for i, first in enumerate(claims[budgets[0]]):
        for b in budgets:
            c = claims[b][i]
            head = f"{first['text']} | `{first['metric']}` | {first['statistic']}" if b == budgets[0] else " | |"
            lines.append(f"| {head} | {b}x ({b * base} steps) | {_claim_value(c)} | {c['n']} | **{c['verdict']}** |")
    return "\n".join(lines)


def verdict_lines(claims: Sequence[dict[str, Any]]) -> list[str]:
    words = {"holds": "holds", "reversed": "REVERSED", "undecided": "undecided at this budget"}
    return [f"{c['text']}: {words[c['verdict']]}" for c in claims]


def budget_verdict_lines(claims: Mapping[int, Sequence[dict[str, Any]]]) -> list[str]:
    """One line per claim with its verdict at every budget (:func:`verdict_lines` for a single budget)."""
    budgets = list(claims)
    if len(budgets) == 1:
        return verdict_lines(claims[budgets[0]])
    words = {"holds": "holds", "reversed": "REVERSED", "undecided": "undecided"}
    return [f"{first['text']}: " + "; ".join(f"{b}x {words[claims[b][i]['verdict']]}" for b in budgets)
            for i, first in enumerate(claims[budgets[0]])]


def selection_table(grid: Sequence[dict[str, Any]], metric: str) -> str:
    """The per-loss grid on the validation split: every setting's score per seed, its mean, the choice."""
    lines = [f"| loss | setting | `{metric}` per seed (%) | mean (%) | chosen |", "|---|---|---|---|---|"]
    for e in grid:
        seeds = ", ".join("–" if math.isnan(v) else f"{100 * v:.1f}" for v in e["values"])
        mean = "–" if math.isnan(e["mean"]) else f"{100 * e['mean']:.1f}"
        chosen = ("**chosen** (on the grid's edge)" if e["edge"] else "**chosen**") if e["chosen"] else ""
        lines.append(f"| {e['loss']} | {e['setting']['label']} | {seeds} | {mean} | {chosen} |")
    return "\n".join(lines)


def flattening_table(rows: Sequence[dict[str, Any]], base: int) -> str:
    """Per (group, loss, budget): the last quarter's improvement of the learning curve and its state."""
    lines = ["| runs | loss | budget | last quarter's improvement [95 %] | n | curve |", "|---|---|---|---|---|---|"]
    for r in rows:
        value = "–" if math.isnan(r["improvement"]) else (
            f"{100 * r['improvement']:+.2f} pt" + ("" if math.isnan(r["lo"]) else
                                                    f" [{100 * r['lo']:+.2f}, {100 * r['hi']:+.2f}]"))
        lines.append(f"| {r['group']} | {r['loss']} | {r['budget']}x ({r['budget'] * base} steps) | {value} | {r['n']} | "
                     f"**{r['state']}** |")
    return "\n".join(lines)


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


def switch_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| switch | claim | difference, base teacher | under the switch | change [95 %] | predicted | outcome |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        change = "–" if math.isnan(r["change"]) else f"{100 * r['change']:+.2f} [{100 * r['lo']:+.2f}, {100 * r['hi']:+.2f}]"
        lines.append(f"| {r['switch']} | {r['text']} | {100 * r['base']:+.2f} | {100 * r['under']:+.2f} | {change} | "
                     f"{r['predicted'] or '–'} | {r['outcome']} |")
    return "\n".join(lines)


def _schedule_line(config: DistillConfig, plan: ComparePlan, base: int) -> str:
    from relidar.training.distill import lr_factor

    sched = config.schedule
    if plan.schedule == "constant":
        return (f"schedule: {sched.warmup_steps} warm-up steps, then the peak lr held (the plan's `schedule: constant`, "
                f"not the config's {sched.name}): the lr at a step does not depend on the run's length, so a smaller "
                "budget's checkpoint is the shorter run, bit for bit")
    if len(plan.budgets) == 1 or sched.name == "constant":
        return f"schedule: the config's ({sched.name}, {sched.warmup_steps} warm-up steps)"
    total = plan.budgets[-1] * base
    at = ", ".join(f"{b}x at {100 * lr_factor(b * base, total, config):.0f} %" for b in plan.budgets[:-1])
    return (f"schedule: the config's {sched.name} over the largest budget ({total} steps): the smaller budgets are "
            f"that run at their step, not annealed there (lr of the peak: {at}), not runs of their own length")


def plan_markdown(config: DistillConfig, plan: ComparePlan, base: int, cost: PlanCost) -> str:
    """The plan as fixed before any run: budgets, schedule, grid, streets, metrics, controls, claims, cost."""
    pairs = config.sampling.pairs_per_batch if config.sampling.scope == "batch" else config.sampling.pairs_per_scan
    run = (f"{config.train.epochs} epoch(s), max_steps {config.train.max_steps}, batch {config.train.batch_size}, "
           f"{pairs} pairs per {'batch' if config.sampling.scope == 'batch' else 'scan'} ({config.sampling.mode}), "
           f"student `{config.student.profile}` at {config.student.voxel_size} m")
    budgets = ", ".join(f"{b}x = {b * base} steps" for b in plan.budgets)
    street = config.data.selection.cache if config.data.selection else None
    lines = ["## Plan (written before any run)", "",
             f"- losses: {', '.join(plan.losses)}; {plan.seeds} paired seeds from {config.train.seed}",
             f"- one run (1x): {run}",
             f"- budgets: {budgets}; one run per (loss, seed) to the largest, scored in full at every budget's "
             "checkpoint",
             f"- {_schedule_line(config, plan, base)}",
             f"- training scans: `{config.data.cache}`; held out: `{config.data.val.cache if config.data.val else 'tail'}`; "
             f"validation split (selection, learning curves): `{street or 'none'}`; out of distribution: "
             f"`{config.eval.ood.cache if config.eval.ood else 'none'}`",
             f"- zero-shot metric `{plan.zero_shot_metric}`, few-shot metric `{plan.few_shot_metric}` (OOD: "
             f"`ood_{plan.few_shot_metric}`); {int(100 * plan.confidence)} % intervals"]
    if plan.flat_within is not None:
        lines.append(f"- convergence: the last quarter's improvement of zero-shot mIoU on the "
                     f"{'validation split' if street else 'held-out scans'} (from 3/4 of each budget to its end), "
                     f"mean over seeds with its interval: flattened when the interval lies below "
                     f"{100 * plan.flat_within:g} point(s), still rising when it lies above 0")
    sel = plan.selection
    if sel is not None:
        first = config.train.seed + plan.seeds
        lines += [f"- per-loss selection: every setting below distilled at 1x with {sel.seeds} seed(s) ({first}"
                  f"{f'-{first + sel.seeds - 1}' if sel.seeds > 1 else ''}: no main seed), scored `{sel.metric}` on "
                  "the validation split only; the best mean per loss is chosen (ties: the earlier setting), and only "
                  "then are the paired seeds run on the held-out street at the chosen settings", "",
                  "| loss | optimizer | learning rates tried | contrastive temperatures |", "|---|---|---|---|"]
        for loss in plan.losses:
            opt = config.optimizer.for_loss(loss)
            temps = ", ".join(f"{t:g}" for t in sel.temperatures) if loss == "contrastive" else "–"
            lines.append(f"| {loss} | {opt.name}, weight decay {opt.weight_decay:g} | "
                         f"{', '.join(f'{opt.lr * f:.3g} (×{factor_text(f)})' for f in sel.lr_factors)} | {temps} |")
        lines.append("")
    lines += [f"- controls: random init {'on' if plan.random_init else 'off'}, oracle {'on' if plan.oracle else 'off'}, "
              f"fixed setting (the config's own for every loss) {'on' if plan.fixed_setting else 'off'}, ablations "
              f"{list(plan.ablations) or 'none'}, switches {list(plan.teacher_switches) or 'none'}",
              f"- cost: {cost.jobs} jobs on {plan.workers} worker(s): distillation worth {cost.run_equivalents:.1f} "
              f"1x runs ({cost.distill_steps} steps of {cost.batch_size} scans), {cost.evaluations} full evaluations, "
              f"{cost.zero_shot_evaluations} zero-shot scorings (curve points, grid)", "",
              "| claim | metric | statistic |", "|---|---|---|"]
    lines += [f"| {c.text} | `{c.metric}` | {'paired difference over seeds' if c.kind == 'greater' else 'Pearson r over runs'} |"
              for c in plan.claims()]
    for name, switch in plan.teacher_switches.items():
        changed = "; ".join(f"{what} {value}" for what, value in (("teacher", switch.teacher), ("config", switch.config))
                            if value)
        lines += ["", f"Switch `{name}` ({changed}; losses {', '.join(switch_losses(plan, switch))}): {switch.why}",
                  "predicted: " + (", ".join(f"{k} {v}" for k, v in switch.predict.items()) or "nothing")]
    return "\n".join(lines)


def report_markdown(config: DistillConfig, plan: ComparePlan, base: int, cost: PlanCost, runs: Sequence[dict],
                    found: Findings, seconds: float) -> str:
    main_labels = list(plan.losses)
    last = plan.budgets[-1]
    md = ["# relidar compare", "", plan_markdown(config, plan, base, cost), ""]
    if found.grid:
        chosen = "; ".join(f"{loss}: {s['label']}" for loss, s in found.chosen.items())
        edge = [e["loss"] for e in found.grid if e["chosen"] and e["edge"]]
        md += ["## Selection on the validation split", "", selection_table(found.grid, plan.selection.metric), "",
               f"Chosen: {chosen}." + (f" On the grid's edge (the best setting may lie outside it): {', '.join(edge)}."
                                       if edge else ""), ""]
    md += ["## Results", "", f"Mean ± {int(100 * plan.confidence)} % interval over seeds; mIoU in %.", ""]
    for b in plan.budgets:
        md += [f"### {b}x ({b * base} steps)", "", markdown_table(found.tables[b], main_labels), ""]
    md += ["## Claims", "", budget_claims_table(found.claims, base), "",
           *[f"- {line}" for line in budget_verdict_lines(found.claims)], ""]
    if found.flattening:
        md += ["## Convergence", "", flattening_table(found.flattening, base), ""]
    md += [f"## Structural measures against the scores (main runs, {last}x)", "",
           structure_correlations(plan, at_budget(runs, last)), ""]
    control_labels = [label for label in found.tables[last] if label not in main_labels]
    if control_labels:
        md += ["## Controls", ""]
        for b in plan.budgets:
            md += [f"### {b}x ({b * base} steps)", "", markdown_table(found.tables[b], control_labels), ""]
    if found.fixed_claims:
        md += ["### The claims at the fixed setting (the config's own, every loss)", "",
               budget_claims_table(found.fixed_claims, base), ""]
    if any(found.switches.values()):
        md += ["## Switches", ""]
        for b in plan.budgets:
            md += [f"### {b}x ({b * base} steps)", "", switch_table(found.switches[b]), ""]
    ran = [r for r in runs if "reused_from" not in r]
    cpu = sum(r.get("cpu_seconds", 0.0) for r in ran)
    md += ["![learning curves](learning_curves.png)", "", "![gap vs mIoU](gap_vs_miou.png)", "",
           f"{len(ran)} jobs ran ({len(runs) - len(ran)} rows reused a run of the same config): {cpu / 60:.1f} "
           f"CPU-minutes in the jobs, {seconds / 60:.1f} min wall-clock on {plan.workers} worker(s) (data preparation "
           "included)."]
    return "\n".join(md)
