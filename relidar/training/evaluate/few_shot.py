"""Few-shot evaluation, as SLidR / ST-SLidR / ScaLR measure it: a linear probe on the frozen backbone's
per-point features trained on the labelled training scans (``probe_fraction``, 100 % in those papers),
and fine-tuning the backbone with a new linear classifier on 1 % (and 10 %) of them."""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from relidar.core.seeds import Purpose, stream
from relidar.model.network import Student
from relidar.training.config import DistillConfig
from relidar.training.evaluate.labelled import LabelledSet, spread
from relidar.training.evaluate.outputs import scan_output, student_inputs
from relidar.training.evaluate.results import FinetuneResult, ProbeResult
from relidar.training.metrics import SegmentationScores, confusion_matrix, scores_from_confusion


def train_linear_probe(features: np.ndarray, labels: np.ndarray, num_classes: int, steps: int, lr: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression (weight [C_in, K], bias [K]) on standardised features; full-batch Adam."""
    torch.manual_seed(seed)
    x = torch.from_numpy(features.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mean) / std
    w = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(xs @ w + b, y) + 1e-4 * (w * w).sum()
            loss.backward()
            opt.step()
    # Fold the standardisation into the weights: logits = x @ W + B.
    weight = (w.detach() / std[:, None]).numpy()
    bias = (b.detach() - (mean / std) @ w.detach()).numpy()
    return weight, bias


def _labelled_points(model: Student, data: LabelledSet, frames: Sequence[int], per_scan: int, seed: int,
                     device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for frame in frames:
        cached = data.train_cache[frame]
        out = scan_output(model, cached.points, device)
        target = data.labels(cached)
        ok = np.flatnonzero(out.inside & (target >= 0))
        rng = stream(seed, Purpose.PROBE, frame)
        pick = rng.choice(ok, size=min(per_scan, len(ok)), replace=False) if len(ok) else ok
        xs.append(out.backbone[pick])
        ys.append(target[pick])
    return np.concatenate(xs), np.concatenate(ys)


def _score_linear(model: Student, data: LabelledSet, weight: np.ndarray, bias: np.ndarray, num_classes: int,
                  device: torch.device) -> SegmentationScores:
    """Scores on the held-out scans of the classifier ``backbone features @ weight + bias``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for frame in data.val:
        cached = data.val_cache[frame]
        out = scan_output(model, cached.points, device)
        target = data.labels(cached)
        keep = out.inside & (target >= 0)
        pred = np.argmax(out.backbone[keep] @ weight + bias, axis=1)
        cm += confusion_matrix(target[keep], pred, num_classes)
    return scores_from_confusion(cm)


def evaluate_linear_probe(model: Student, data: LabelledSet, config: DistillConfig, num_classes: int,
                          device: torch.device, seed: int = 0) -> ProbeResult:
    """Linear probe on the frozen backbone, trained on ``probe_fraction`` of the labelled training scans
    (evenly spread), scored on the held-out ones."""
    fs = config.eval.few_shot
    count = int(np.ceil(fs.probe_fraction * len(data.train)))
    if fs.probe_max_scans:
        count = min(count, fs.probe_max_scans)
    frames = spread(data.train, count)
    x, y = _labelled_points(model, data, frames, fs.points_per_scan, seed, device)
    weight, bias = train_linear_probe(x, y, num_classes, fs.probe_steps, fs.probe_lr, seed)
    return ProbeResult(scores=_score_linear(model, data, weight, bias, num_classes, device), scans=len(frames),
                       train_points=int(len(y)))


def evaluate_finetune(model: Student, data: LabelledSet, config: DistillConfig, num_classes: int,
                      device: torch.device, fraction: float, seed: int = 0) -> FinetuneResult:
    """Fine-tune a copy of the backbone with a new linear classifier (cross-entropy) on ``fraction`` of the
    labelled training scans (at least one, evenly spread), as SLidR / ST-SLidR do (a fresh head with a
    higher learning rate than the backbone's: ST-SLidR ``lr_head``). Scored on the held-out scans."""
    fs = config.eval.few_shot
    frames = spread(data.train, int(round(len(data.train) * fraction)))
    torch.manual_seed(seed)
    backbone = copy.deepcopy(model.backbone).to(device).train()
    head = torch.nn.Linear(model.backbone.out_channels, num_classes).to(device)
    opt = torch.optim.AdamW([{"params": backbone.parameters(), "lr": fs.finetune_lr},
                             {"params": head.parameters(), "lr": fs.finetune_head_lr}], weight_decay=1e-4)
    rng = stream(seed, Purpose.FINETUNE)
    with torch.enable_grad():
        for step in range(fs.finetune_steps):
            cached = data.train_cache[frames[step % len(frames)]]
            target = data.labels(cached)
            inputs, p2v = student_inputs(model, cached.points, device)
            ok = np.flatnonzero((p2v >= 0) & (target >= 0))
            if not len(ok):
                continue
            pick = rng.choice(ok, size=min(fs.points_per_scan, len(ok)), replace=False)
            logits = head(backbone(inputs.features, inputs.maps).index_select(0, torch.from_numpy(p2v[pick]).to(device)))
            loss = F.cross_entropy(logits.float(), torch.from_numpy(target[pick]).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    student = copy.deepcopy(model)
    student.backbone = backbone.eval()
    weight = head.weight.detach().cpu().numpy().T.astype(np.float32)
    bias = head.bias.detach().cpu().numpy().astype(np.float32)
    return FinetuneResult(scores=_score_linear(student, data, weight, bias, num_classes, device), scans=len(frames),
                          fraction=fraction, steps=fs.finetune_steps)
