"""The comparison's report as Markdown: result tables with intervals, the claims with their verdicts, the
structural measures against the scores, the teacher switches, and the plan as written before any run."""

from __future__ import annotations

import math
from typing import Any, Sequence

from relidar.training.compare.jobs import Job
from relidar.training.compare.plan import ComparePlan
from relidar.training.compare.statistics import correlation_interval
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


def switch_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| switch | claim | difference, base teacher | under the switch | change [95 %] | predicted | outcome |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        change = "–" if math.isnan(r["change"]) else f"{100 * r['change']:+.2f} [{100 * r['lo']:+.2f}, {100 * r['hi']:+.2f}]"
        lines.append(f"| {r['switch']} | {r['text']} | {100 * r['base']:+.2f} | {100 * r['under']:+.2f} | {change} | "
                     f"{r['predicted'] or '–'} | {r['outcome']} |")
    return "\n".join(lines)


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
