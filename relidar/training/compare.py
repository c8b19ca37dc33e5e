"""Train one student per (loss, seed) on the same data, evaluate each, and tabulate them side by side:
zero-shot mIoU, few-shot mIoU and structural gap (mean ± std over seeds), plus a scatter of gap vs mIoU."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from relidar.core.atomic import atomic_path, atomic_write_bytes
from relidar.core.config import save_config
from relidar.core.errors import RelidarError
from relidar.model.weights import load_student
from relidar.training.config import DistillConfig
from relidar.training.data import ensure_cache
from relidar.training.distill import distill
from relidar.training.evaluate import evaluate, resolve_vocabulary
from relidar.training.losses import LOSS_NAMES

# Columns of the table, in order: (summary key, header).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("zero_shot_miou", "zero-shot mIoU"),
    ("zero_shot_miou_visible", "zero-shot mIoU (visible)"),
    ("few_shot_miou", "few-shot mIoU (probe)"),
    ("finetune_miou", "fine-tuned mIoU"),
    ("ood_zero_shot_miou", "OOD zero-shot mIoU"),
    ("ood_few_shot_miou", "OOD few-shot mIoU"),
    ("gap", "gap |KKᵀ−QQᵀ|"),
    ("cka", "CKA"),
)


class CompareError(RelidarError, ValueError):
    """A comparison that cannot run (unknown loss, no seeds); names the option."""


@dataclass(frozen=True)
class CompareResult:
    out_dir: Path
    runs: list[dict]  # one per (loss, seed): loss, seed, run_dir, summary
    table: dict[str, dict[str, tuple[float, float]]]  # loss -> key -> (mean, std)
    markdown: Path
    scatter: Path


def parse_losses(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in LOSS_NAMES]
    if not names or unknown:
        raise CompareError(f"--losses: {unknown or text!r} not understood; choose from {', '.join(LOSS_NAMES)}")
    return names


def variant(config: DistillConfig, loss: str, seed_offset: int) -> DistillConfig:
    """``config`` with the loss replaced and the seed shifted (everything else identical)."""
    tree = config.model_dump(mode="json")
    tree["loss"]["type"] = loss
    tree["loss"]["superpixel_pooling"] = bool(tree["loss"]["superpixel_pooling"] and loss == "contrastive")
    tree["train"]["seed"] = config.train.seed + seed_offset
    return DistillConfig.model_validate(tree)


def aggregate(runs: Sequence[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for loss in dict.fromkeys(r["loss"] for r in runs):
        rows = [r["summary"] for r in runs if r["loss"] == loss]
        table[loss] = {}
        for key, _ in COLUMNS:
            vals = [row[key] for row in rows if key in row and row[key] is not None and not np.isnan(row[key])]
            if vals:
                table[loss][key] = (float(np.mean(vals)), float(np.std(vals)))
    return table


def markdown_table(table: dict[str, dict[str, tuple[float, float]]], seeds: int) -> str:
    keys = [(k, h) for k, h in COLUMNS if any(k in row for row in table.values())]
    lines = ["| loss | " + " | ".join(h for _, h in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for loss, row in table.items():
        cells = []
        for k, _ in keys:
            if k not in row:
                cells.append("–")
                continue
            m, s = row[k]
            scale = 100.0 if "miou" in k else 1.0
            cells.append(f"{scale * m:.1f} ± {scale * s:.1f}" if scale == 100.0 else f"{m:.3f} ± {s:.3f}")
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    lines += ["", f"mean ± std over {seeds} seed(s); mIoU in %."]
    return "\n".join(lines)


def plot_scatter(path: Path, runs: Sequence[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    for i, (key, label) in enumerate((("zero_shot_miou", "zero-shot mIoU (%)"), ("few_shot_miou", "few-shot mIoU (%)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, loss in enumerate(dict.fromkeys(r["loss"] for r in runs)):
            pts = [(r["summary"]["gap"], 100 * r["summary"][key]) for r in runs if r["loss"] == loss]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=loss, color=f"C{j}")
        ax.set_xlabel("structural gap, mean |KKᵀ − QQᵀ|")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    fig.suptitle("structural gap vs mIoU (one point per run)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", facecolor="white", bbox_inches="tight")
    return path


def compare(config: DistillConfig, losses: Sequence[str], seeds: int, out_dir: Path,
            on_event: Callable[[str], None] | None = None,
            on_step: Callable[[int, int, dict[str, float]], None] | None = None) -> CompareResult:
    """Run every (loss, seed), writing runs under ``out_dir/runs`` and the table/plot into ``out_dir``."""
    if seeds < 1:
        raise CompareError("--seeds must be >= 1")
    event = on_event or (lambda _m: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    event("preparing data")
    ensure_cache(config.data)
    if config.eval.ood is not None:
        ensure_cache(config.eval.ood)
    vocabulary = resolve_vocabulary(config)
    runs: list[dict] = []
    for loss in losses:
        for s in range(seeds):
            cfg = variant(config, loss, s)
            event(f"{loss}, seed {cfg.train.seed}: distilling")
            result = distill(cfg, out=out_dir / "runs", run_name=f"{loss}_seed{cfg.train.seed}", on_step=on_step)
            event(f"{loss}, seed {cfg.train.seed}: evaluating")
            model = load_student(result.weights).eval()
            summary = evaluate(model, cfg, vocabulary=vocabulary).summary()
            summary["final_loss"] = result.final_loss
            summary["train_seconds"] = result.seconds
            runs.append({"loss": loss, "seed": cfg.train.seed, "run_dir": str(result.run_dir), "summary": summary})
            atomic_write_bytes(out_dir / "runs.json", (json.dumps(runs, indent=2) + "\n").encode())
    table = aggregate(runs)
    md_text = ["# relidar compare", "", markdown_table(table, seeds), "",
               f"Budget per run: {config.train.epochs} epoch(s), max_steps {config.train.max_steps}, batch "
               f"{config.train.batch_size}, student `{config.student.profile}` at {config.student.voxel_size} m; "
               f"data `{config.data.cache}`.", "", "![gap vs mIoU](gap_vs_miou.png)", ""]
    atomic_write_bytes(out_dir / "compare.md", "\n".join(md_text).encode())
    atomic_write_bytes(out_dir / "compare.json", (json.dumps(
        {"losses": list(losses), "seeds": seeds, "table": {l: {k: list(v) for k, v in row.items()} for l, row in table.items()},
         "runs": runs}, indent=2) + "\n").encode())
    scatter = plot_scatter(out_dir / "gap_vs_miou.png", runs)
    return CompareResult(out_dir=out_dir, runs=runs, table=table, markdown=out_dir / "compare.md", scatter=scatter)
