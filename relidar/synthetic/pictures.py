"""A camera image beside its simulated teacher's zero-shot labels and the renderer's truth, to PNG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from relidar.core.atomic import atomic_path
from relidar.synthetic.classes import CLASS_NAMES, PALETTE
from relidar.synthetic.teacher import SimulatedTeacher, class_text_embeddings, pixel_accuracy, zero_shot_pixels


def teacher_picture(path: str | Path, image: np.ndarray, truth: np.ndarray, teacher: SimulatedTeacher,
                    title: str = "") -> float:
    """Write image | teacher zero-shot labels (blended) | ground truth, with a legend; return pixel accuracy."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    text = class_text_embeddings(teacher, CLASS_NAMES)
    pred = zero_shot_pixels(teacher, image, text)
    acc = pixel_accuracy(pred, truth)
    sky = truth < 0
    pred_rgb = (0.45 * image + 0.55 * PALETTE[pred]).astype(np.uint8)
    truth_rgb = np.where(sky[..., None], image, PALETTE[np.maximum(truth, 0)]).astype(np.uint8)
    h, w = image.shape[:2]
    dpi = 100
    fig = Figure(figsize=(3 * w / dpi + 1.6, h / dpi + 0.6), dpi=dpi)
    panels = [(image, "camera"), (pred_rgb, f"teacher zero-shot (pixel acc {acc:.2f})"), (truth_rgb, "ground truth")]
    span = 3 * w / dpi + 1.6
    for k, (img, name) in enumerate(panels):
        ax = fig.add_axes((k * (w / dpi) / span, 0.0, (w / dpi) / span, (h / dpi) / (h / dpi + 0.6)))
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    present = np.unique(np.concatenate([pred.ravel(), truth[~sky].ravel()]))
    fig.legend(handles=[Patch(color=PALETTE[k] / 255.0, label=CLASS_NAMES[k]) for k in present],
               loc="center right", fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10, y=0.995)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    buf.seek(0)
    # Camera noise makes a full-colour PNG large; 256 colours keep README pictures small.
    with atomic_path(path) as tmp:
        Image.open(buf).convert("RGB").quantize(256).save(tmp, format="PNG", optimize=True)
    return acc
