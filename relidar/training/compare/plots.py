"""The comparison's pictures: learning curves per loss and the structural gap against mIoU."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from relidar.training.figures import new_figure, save_png


def plot_learning_curves(path: Path, runs: Sequence[dict], scans: str = "held-out scans",
                         marks: Sequence[int] = ()) -> Path:
    """Zero-shot mIoU at the kept checkpoints (mean over seeds, min-max band; scored on ``scans``) and the
    training loss relative to its first logged value, per loss; dashed lines at the steps ``marks`` (budgets)."""
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
    ax_z.set_ylabel(f"zero-shot mIoU (%), {scans}")
    ax_z.set_title("zero-shot mIoU during distillation (mean, min-max over seeds)")
    ax_l.set_xlabel("optimizer step")
    ax_l.set_ylabel("training loss / its first value")
    ax_l.set_title("training loss")
    for ax in (ax_z, ax_l):
        for step in marks:
            ax.axvline(step, color="grey", linestyle="--", linewidth=0.8)
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
