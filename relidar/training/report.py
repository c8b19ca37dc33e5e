"""Evaluation reports: ``report.json``, ``report.md`` (tables) and PNGs (per-class IoU bars, confusion
matrix, bird's-eye views of prediction vs ground truth)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from relidar.core.atomic import atomic_write_bytes
from relidar.training.evaluate import EvaluationResult, SetResult, fraction_tag
from relidar.training.figures import new_figure, save_png
from relidar.training.metrics import SegmentationScores


def _fmt(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}"


def plot_iou_bars(path: Path, series: dict[str, SegmentationScores], class_names: Sequence[str],
                  colors: np.ndarray) -> Path:
    fig = new_figure(max(6.0, 0.6 * len(class_names)), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(class_names))
    for s, (label, scores) in enumerate(series.items()):
        vals = np.nan_to_num(scores.iou, nan=0.0) * 100
        bars = ax.bar(x + (s - (len(series) - 1) / 2) * width, vals, width, label=f"{label} (mIoU {_fmt(scores.miou)})")
        if len(series) == 1:
            for bar, c in zip(bars, colors):
                bar.set_color(np.asarray(c) / 255.0)
    ax.set_xticks(x, list(class_names), rotation=45, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    # Below the axes, never over the bars.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=min(len(series), 2), frameon=False)
    ax.set_title("per-class IoU")
    return save_png(fig, path)


def plot_confusion(path: Path, confusion: np.ndarray, class_names: Sequence[str], title: str) -> Path:
    cm = confusion.astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(class_names)
    fig = new_figure(1.0 + 0.5 * n, 0.8 + 0.5 * n)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title + " (rows normalised)")
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.01:
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_png(fig, path)


def plot_bev_pair(out_dir: Path, stem: str, points: np.ndarray, target: np.ndarray, prediction: np.ndarray,
                  inside: np.ndarray, class_names: Sequence[str], colors: np.ndarray) -> list[Path]:
    """Two BEV PNGs of one scan: ground truth and prediction (points outside the crop left out)."""
    from relidar.core.viz.bev import BevView, render_bev

    view = BevView(resolution=0.15)
    xyz = points[inside, :3]
    return [
        render_bev(out_dir / f"{stem}_ground_truth.png", xyz, labels=target[inside], palette=colors,
                   class_names=class_names, view=view, title=f"{stem}: ground truth"),
        render_bev(out_dir / f"{stem}_prediction.png", xyz, labels=prediction[inside], palette=colors,
                   class_names=class_names, view=view, title=f"{stem}: zero-shot prediction"),
    ]


def scores_table(rows: dict[str, SegmentationScores], class_names: Sequence[str]) -> str:
    head = "| | mIoU | " + " | ".join(class_names) + " |"
    sep = "|---" * (len(class_names) + 2) + "|"
    lines = [head, sep]
    for label, s in rows.items():
        lines.append(f"| {label} | {_fmt(s.miou)} | " + " | ".join(_fmt(v) for v in s.iou) + " |")
    return "\n".join(lines)


def score_rows(result: SetResult) -> dict[str, SegmentationScores]:
    """The per-class score rows of one labelled set, by label."""
    rows: dict[str, SegmentationScores] = {
        "zero-shot, all points": result.zero_shot.all_points,
        "zero-shot, camera-visible": result.zero_shot.visible,
        "teacher (2D) zero-shot, camera-visible": result.zero_shot.teacher,
        f"linear probe, {_scans(result.linear_probe.scans)}": result.linear_probe.scores,
    }
    for ft in result.finetune:
        rows[f"fine-tuned, {fraction_tag(ft.fraction)} ({_scans(ft.scans)})"] = ft.scores
    return rows


def _scans(n: int) -> str:
    return f"{n} scan" if n == 1 else f"{n} scans"


def write_report(out_dir: Path | str, result: EvaluationResult, title: str = "relidar evaluation",
                 extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write report.json, report.md and the PNGs into ``out_dir``; returns what was written, by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    voc = result.vocabulary
    names = voc.class_names
    payload = result.to_json()
    if extra:
        payload["run"] = extra
    files: dict[str, Path] = {}
    atomic_write_bytes(out / "report.json", (json.dumps(payload, indent=2, allow_nan=True) + "\n").encode())
    files["json"] = out / "report.json"

    rows = score_rows(result.in_distribution)
    if result.ood is not None:
        rows.update({f"OOD {k}": v for k, v in score_rows(result.ood).items()})
    summary = result.summary()
    zs, structure = result.zero_shot, result.zero_shot.structure
    md = [f"# {title}", ""]
    if extra:
        md += [f"- {k}: `{v}`" for k, v in extra.items()] + [""]
    md += ["## Summary", "", "mIoU values in %; the structural gap and CKA as plain numbers.", "",
           "| metric | value |", "|---|---|"]
    for k, v in summary.items():
        md.append(f"| {k} | {_fmt(v)} % |" if "miou" in k else f"| {k} | {v:.4f} |")
    md += ["", "## Per-class IoU", "", "IoU and mIoU in % (– where a class is absent from truth and prediction).", "",
           scores_table(rows, names), "",
           f"Zero-shot is scored on points inside the student's crop ({100 * zs.inside_fraction:.1f}% "
           "of the points) of the held-out scans. Classes the teacher sees (its own IoU reaches the "
           f"`eval.teacher_seen_iou` threshold): {', '.join(zs.seen_names(names))}.", "",
           "## Structure (held-out pairs)", "",
           f"- the paper's gap, mean |KKᵀ − QQᵀ| (i≠j, uniform pairs): {structure.gap:.4f}",
           f"- the same on pairs drawn equally per ground-truth class: {structure.gap_balanced:.4f}",
           f"- linear CKA(K, Q): {structure.cka:.4f}",
           f"- k-NN label agreement, student / teacher: {structure.knn_agreement:.4f} / "
           f"{structure.teacher_knn_agreement:.4f}", ""]
    files["iou"] = plot_iou_bars(out / "iou_per_class.png", {k: v for k, v in rows.items() if "OOD" not in k},
                                 names, voc.colors)
    files["confusion"] = plot_confusion(out / "confusion_zero_shot.png", zs.all_points.confusion, names,
                                        "zero-shot confusion")
    md += ["## Pictures", "", "![per-class IoU](iou_per_class.png)", "",
           "![zero-shot confusion](confusion_zero_shot.png)", ""]
    for i, kept in enumerate(zs.kept):
        stem = f"bev_{i}"
        gt, pred = plot_bev_pair(out, stem, kept.points, kept.target, kept.prediction, kept.inside, names, voc.colors)
        files[f"{stem}_gt"] = gt
        files[f"{stem}_pred"] = pred
        md += [f"Scan `{kept.frame_id}`: ground truth / zero-shot prediction", "",
               f"![ground truth]({gt.name}) ![prediction]({pred.name})", ""]
    atomic_write_bytes(out / "report.md", "\n".join(md).encode())
    files["markdown"] = out / "report.md"
    return files
