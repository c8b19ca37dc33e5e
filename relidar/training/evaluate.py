"""Evaluation of a distilled student: zero-shot, few-shot (linear probe, fine-tuning), structural gap.

* zero-shot: each point takes the vocabulary class whose text embedding is closest (cosine) to its
  student embedding; scored on all points inside the student's crop and on the camera-visible ones
  (points with a pixel pair).
* few-shot: a linear classifier on the frozen backbone's per-point features, trained on k labelled
  scans of the training split; and fine-tuning the whole student (head initialised as the zero-shot
  classifier) on a fraction of the labelled training scans. Scored on the held-out scans, of the
  training dataset and of another one (``eval.ood``).
* structural gap on held-out pairs: mean over i≠j of ``|KKᵀ - QQᵀ|`` and linear CKA of K and Q.

Dataset labels are matched to vocabulary classes by name; labels of classes the vocabulary lacks
are ignored.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from relidar.core.errors import RelidarError
from relidar.core.preprocess import Preprocessor
from relidar.core.vocabulary import Vocabulary
from relidar.model.batch import TorchInputs, to_torch
from relidar.model.network import Student
from relidar.training.config import DataConfig, DistillConfig
from relidar.training.data import ensure_cache, split_frames, synthetic_vocabulary
from relidar.training.feature_cache import CachedFrame, CacheReader
from relidar.training.metrics import SegmentationScores, confusion_matrix, scores_from_confusion

_PROBE_TAG = 0x9B0E
_GAP_TAG = 0x6A9


class EvaluationError(RelidarError, ValueError):
    """An evaluation that cannot run (no labels, no vocabulary, mismatched dims); names the fix."""


@dataclass(frozen=True)
class ScanOutput:
    """Student outputs for one scan's points: ``backbone`` [n, C] and ``embedding`` [n, D] (unit rows);
    rows of points outside the crop (``inside`` False) are zero."""

    backbone: np.ndarray
    embedding: np.ndarray
    inside: np.ndarray


def _inputs(model: Student, points: np.ndarray, device: torch.device) -> tuple[TorchInputs, np.ndarray]:
    """The student's input for one scan on ``device``, and each point's voxel (numpy)."""
    prepared = Preprocessor.of(model.config)(points)
    return to_torch(prepared, device), prepared.point_to_voxel


@torch.no_grad()
def scan_output(model: Student, points: np.ndarray, device: torch.device | str = "cpu") -> ScanOutput:
    device = torch.device(device)
    inputs, p2v = _inputs(model, points, device)
    was_training = model.training
    model.eval()
    backbone = model.backbone(inputs.features, inputs.maps)
    emb = F.normalize(model.head(backbone).float(), dim=1)
    model.train(was_training)
    inside = p2v >= 0
    idx = np.where(inside, p2v, 0)
    b = backbone.float().cpu().numpy()[idx]
    e = emb.cpu().numpy()[idx]
    b[~inside] = 0.0
    e[~inside] = 0.0
    return ScanOutput(backbone=b, embedding=e, inside=inside)


def label_map(dataset_classes: Sequence[str], vocabulary: Vocabulary) -> np.ndarray:
    """[len(dataset_classes)] vocabulary index of each dataset class, -1 where the vocabulary lacks it."""
    index = {n: i for i, n in enumerate(vocabulary.class_names)}
    return np.array([index.get(n, -1) for n in dataset_classes], dtype=np.int64)


def to_vocabulary_labels(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    out = np.full(labels.shape, -1, dtype=np.int64)
    ok = (labels >= 0) & (labels < len(lut))
    out[ok] = lut[labels[ok]]
    return out


@dataclass
class ZeroShotAccumulator:
    num_classes: int
    all_points: np.ndarray = field(init=False)
    visible: np.ndarray = field(init=False)
    inside_fraction: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.all_points = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.visible = np.zeros_like(self.all_points)

    def add(self, prediction: np.ndarray, target: np.ndarray, inside: np.ndarray, visible_points: np.ndarray) -> None:
        keep = inside & (target >= 0)
        self.all_points += confusion_matrix(target[keep], prediction[keep], self.num_classes)
        vis = np.zeros_like(inside)
        vis[visible_points] = True
        keep_v = keep & vis
        self.visible += confusion_matrix(target[keep_v], prediction[keep_v], self.num_classes)
        self.inside_fraction.append(float(inside.mean()) if inside.size else 0.0)


def zero_shot_predict(embedding: np.ndarray, text: np.ndarray) -> np.ndarray:
    return np.argmax(embedding @ text.T, axis=1)


def structural_gap(k: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """Mean over i≠j of |KKᵀ - QQᵀ| (rows normalised) and linear CKA between K and Q."""
    kn = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    n = kn.shape[0]
    diff = np.abs(kn @ kn.T - qn @ qn.T)
    gap = float((diff.sum() - np.trace(diff)) / max(n * (n - 1), 1))
    return {"gap": gap, "cka": linear_cka(kn, qn)}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019): ||Xcᵀ Yc||²_F / (||Xcᵀ Xc||_F ||Ycᵀ Yc||_F), columns centred."""
    xc = (x - x.mean(axis=0)).astype(np.float64)
    yc = (y - y.mean(axis=0)).astype(np.float64)
    num = np.linalg.norm(xc.T @ yc) ** 2
    den = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(num / den) if den > 0 else float("nan")


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


@dataclass(frozen=True)
class LabelledSet:
    """Labelled scans for evaluation: a cache, its training and held-out frames, labels in vocabulary ids."""

    name: str
    cache: CacheReader
    train: tuple[int, ...]
    val: tuple[int, ...]
    lut: np.ndarray

    def labels(self, cached: CachedFrame) -> np.ndarray:
        if cached.labels is None:
            raise EvaluationError(f"frame {cached.frame_id} has no labels; evaluation needs labelled data", path=self.cache.root)
        return to_vocabulary_labels(cached.labels.astype(np.int64), self.lut)


def labelled_set(name: str, data: DataConfig, vocabulary: Vocabulary, max_scans: int | None) -> LabelledSet:
    cache = ensure_cache(data)
    split = split_frames(len(cache), data)
    if not split.val:
        raise EvaluationError("no held-out frames; set data.val_fraction > 0", path=data.cache)
    lut = label_map(cache.class_names, vocabulary)
    if (lut < 0).all():
        raise EvaluationError(f"{data.cache}: none of its classes {list(cache.class_names)} is in the vocabulary "
                              f"{list(vocabulary.class_names)}")
    val = split.val[:max_scans] if max_scans else split.val
    return LabelledSet(name=name, cache=cache, train=split.train, val=val, lut=lut)


def evaluate_zero_shot(model: Student, data: LabelledSet, vocabulary: Vocabulary, device: torch.device,
                       keep_predictions: int = 0, gap_pairs: int = 1024, seed: int = 0,
                       on_scan: Callable[[], None] | None = None) -> dict[str, Any]:
    """Zero-shot scores over the held-out scans, the structural gap on their pairs, and the first
    ``keep_predictions`` scans' points, labels and predictions (for pictures)."""
    text = vocabulary.embeddings.astype(np.float32)
    acc = ZeroShotAccumulator(vocabulary.num_classes)
    teacher_cm = np.zeros((vocabulary.num_classes, vocabulary.num_classes), dtype=np.int64)
    gaps: list[dict[str, float]] = []
    kept: list[dict[str, np.ndarray]] = []
    for i, frame in enumerate(data.val):
        cached = data.cache[frame]
        out = scan_output(model, cached.points, device)
        target = data.labels(cached)
        pred = zero_shot_predict(out.embedding, text)
        acc.add(pred, target, out.inside, cached.pair_point.astype(np.int64))
        # The teacher's own zero-shot labels of the paired points: the ceiling distillation aims at.
        pair_target = target[cached.pair_point]
        ok_t = pair_target >= 0
        teacher_cm += confusion_matrix(pair_target[ok_t],
                                       zero_shot_predict(cached.pair_features[ok_t].astype(np.float32), text),
                                       vocabulary.num_classes)
        # Structural gap on this scan's pairs whose point the student sees.
        rng = np.random.default_rng(np.random.SeedSequence([seed, frame, _GAP_TAG]))
        ok = np.flatnonzero(out.inside[cached.pair_point])
        if len(ok) >= 4:
            pick = rng.choice(ok, size=min(gap_pairs, len(ok)), replace=False)
            gaps.append(structural_gap(out.embedding[cached.pair_point[pick]],
                                       cached.pair_features[pick].astype(np.float32)))
        if i < keep_predictions:
            kept.append({"frame_id": cached.frame_id, "points": cached.points, "target": target, "prediction": pred,
                         "inside": out.inside})
        if on_scan:
            on_scan()
    all_scores = scores_from_confusion(acc.all_points)
    vis_scores = scores_from_confusion(acc.visible)
    return {
        "all": all_scores,
        "visible": vis_scores,
        "teacher": scores_from_confusion(teacher_cm),
        "inside_fraction": float(np.mean(acc.inside_fraction)) if acc.inside_fraction else 0.0,
        "gap": float(np.mean([g["gap"] for g in gaps])) if gaps else float("nan"),
        "cka": float(np.mean([g["cka"] for g in gaps])) if gaps else float("nan"),
        "scans": len(data.val),
        "kept": kept,
    }


def _labelled_points(model: Student, data: LabelledSet, frames: Sequence[int], per_scan: int, seed: int,
                     device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for frame in frames:
        cached = data.cache[frame]
        out = scan_output(model, cached.points, device)
        target = data.labels(cached)
        ok = np.flatnonzero(out.inside & (target >= 0))
        rng = np.random.default_rng(np.random.SeedSequence([seed, frame, _PROBE_TAG]))
        pick = rng.choice(ok, size=min(per_scan, len(ok)), replace=False) if len(ok) else ok
        xs.append(out.backbone[pick])
        ys.append(target[pick])
    return np.concatenate(xs), np.concatenate(ys)


def evaluate_linear_probe(model: Student, data: LabelledSet, config: DistillConfig, num_classes: int,
                          device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Linear probe on k labelled training scans (evenly spread over the split), scored on the held-out ones."""
    fs = config.eval.few_shot
    k = min(fs.scans, len(data.train))
    frames = [data.train[int(i)] for i in np.linspace(0, len(data.train) - 1, k).round().astype(int)]
    x, y = _labelled_points(model, data, frames, fs.points_per_scan, seed, device)
    weight, bias = train_linear_probe(x, y, num_classes, fs.probe_steps, fs.probe_lr, seed)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for frame in data.val:
        cached = data.cache[frame]
        out = scan_output(model, cached.points, device)
        target = data.labels(cached)
        keep = out.inside & (target >= 0)
        pred = np.argmax(out.backbone[keep] @ weight + bias, axis=1)
        cm += confusion_matrix(target[keep], pred, num_classes)
    return {"scores": scores_from_confusion(cm), "k_scans": k, "train_points": int(len(y))}


def evaluate_finetune(model: Student, data: LabelledSet, config: DistillConfig, vocabulary: Vocabulary,
                      device: torch.device, seed: int = 0) -> dict[str, Any] | None:
    """Fine-tune a copy of the whole student with cross-entropy on a fraction of the labelled training
    scans; the classifier starts as the zero-shot one (cosine to the text embeddings, temperature 0.07)."""
    fs = config.eval.few_shot
    if fs.finetune_steps == 0:
        return None
    n = max(1, int(round(len(data.train) * fs.finetune_fraction)))
    frames = [data.train[int(i)] for i in np.linspace(0, len(data.train) - 1, n).round().astype(int)]
    student = copy.deepcopy(model).to(device).train()
    text = torch.from_numpy(vocabulary.embeddings).to(device)
    opt = torch.optim.AdamW(student.parameters(), lr=fs.finetune_lr, weight_decay=1e-4)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _PROBE_TAG, 1]))
    with torch.enable_grad():
        for step in range(fs.finetune_steps):
            cached = data.cache[frames[step % len(frames)]]
            target = data.labels(cached)
            inputs, p2v = _inputs(student, cached.points, device)
            ok = np.flatnonzero((p2v >= 0) & (target >= 0))
            pick = rng.choice(ok, size=min(fs.points_per_scan, len(ok)), replace=False)
            emb = F.normalize(student(inputs.features, inputs.maps).float(), dim=1)
            logits = emb.index_select(0, torch.from_numpy(p2v[pick]).to(device)) @ text.T / 0.07
            loss = F.cross_entropy(logits, torch.from_numpy(target[pick]).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    student.eval()
    result = evaluate_zero_shot(student, data, vocabulary, device, gap_pairs=4)
    return {"scores": result["all"], "scans": n, "steps": fs.finetune_steps}


def resolve_vocabulary(config: DistillConfig) -> Vocabulary:
    """The vocabulary ``config`` names, in the feature space of its cache (through the cache's projection
    when it keeps projected features)."""
    if config.eval.vocabulary:
        return ensure_cache(config.data).project_vocabulary(Vocabulary.load(config.eval.vocabulary))
    if config.data.synthetic is not None:
        return ensure_cache(config.data).project_vocabulary(synthetic_vocabulary(config.data.synthetic))
    raise EvaluationError("eval.vocabulary: no vocabulary given; pass the Vocabulary JSON of the teacher's text "
                          "encoder (eval.vocabulary=PATH), made with `relidar vocabulary build --classes ... --teacher ...`")


@dataclass
class EvaluationResult:
    """Everything a report shows; ``to_json`` drops the arrays kept for pictures."""

    vocabulary: Vocabulary
    zero_shot: dict[str, Any]
    linear_probe: dict[str, Any]
    finetune: dict[str, Any] | None
    ood: dict[str, Any] | None

    def summary(self) -> dict[str, float]:
        """The headline numbers (what `relidar compare` tabulates)."""
        out = {
            "zero_shot_miou": self.zero_shot["all"].miou,
            "zero_shot_miou_visible": self.zero_shot["visible"].miou,
            "teacher_miou_visible": self.zero_shot["teacher"].miou,
            "few_shot_miou": self.linear_probe["scores"].miou,
            "gap": self.zero_shot["gap"],
            "cka": self.zero_shot["cka"],
        }
        if self.finetune is not None:
            out["finetune_miou"] = self.finetune["scores"].miou
        if self.ood is not None:
            out["ood_zero_shot_miou"] = self.ood["zero_shot"]["all"].miou
            out["ood_few_shot_miou"] = self.ood["linear_probe"]["scores"].miou
        return out

    def to_json(self) -> dict[str, Any]:
        names = self.vocabulary.class_names

        def scores(s: SegmentationScores) -> dict:
            return {**s.as_dict(names), "confusion": s.confusion.tolist()}

        out: dict[str, Any] = {
            "summary": self.summary(),
            "classes": list(names),
            "zero_shot": {"all": scores(self.zero_shot["all"]), "visible": scores(self.zero_shot["visible"]),
                          "teacher_visible": scores(self.zero_shot["teacher"]),
                          "inside_fraction": self.zero_shot["inside_fraction"], "scans": self.zero_shot["scans"]},
            "structural_gap": {"gap": self.zero_shot["gap"], "cka": self.zero_shot["cka"]},
            "linear_probe": {"k_scans": self.linear_probe["k_scans"], "train_points": self.linear_probe["train_points"],
                             **scores(self.linear_probe["scores"])},
        }
        if self.finetune is not None:
            out["finetune"] = {"scans": self.finetune["scans"], "steps": self.finetune["steps"],
                               **scores(self.finetune["scores"])}
        if self.ood is not None:
            out["ood"] = {"zero_shot": scores(self.ood["zero_shot"]["all"]),
                          "linear_probe": scores(self.ood["linear_probe"]["scores"]),
                          "gap": self.ood["zero_shot"]["gap"]}
        return out


def evaluate(model: Student, config: DistillConfig, device: torch.device | str = "cpu",
             vocabulary: Vocabulary | None = None, on_phase: Callable[[str], None] | None = None) -> EvaluationResult:
    """Run every evaluation ``config.eval`` asks for on ``model`` (the run's own data and eval.ood)."""
    device = torch.device(device)
    vocabulary = vocabulary or resolve_vocabulary(config)
    if vocabulary.feature_dim != model.config.out_dim:
        raise EvaluationError(f"vocabulary embeddings are {vocabulary.feature_dim}-d but the student emits "
                              f"{model.config.out_dim}-d; use the vocabulary of the teacher it was distilled from")
    seed = config.train.seed
    phase = on_phase or (lambda _name: None)
    data = labelled_set("in-distribution", config.data, vocabulary, config.eval.max_scans)
    phase("zero-shot")
    zs = evaluate_zero_shot(model, data, vocabulary, device, keep_predictions=config.eval.bev_scans,
                            gap_pairs=config.eval.gap_pairs, seed=seed)
    phase("linear probe")
    probe = evaluate_linear_probe(model, data, config, vocabulary.num_classes, device, seed)
    phase("fine-tuning")
    ft = evaluate_finetune(model, data, config, vocabulary, device, seed)
    ood = None
    if config.eval.ood is not None:
        phase("out-of-distribution")
        other = labelled_set("out-of-distribution", config.eval.ood, vocabulary, config.eval.max_scans)
        if other.cache.feature_space != data.cache.feature_space:
            raise EvaluationError(f"eval.ood: {config.eval.ood.cache} holds {other.cache.feature_space}, the training "
                                  f"cache {data.cache.feature_space}; prepare both with the same teacher and projection")
        ood = {"zero_shot": evaluate_zero_shot(model, other, vocabulary, device, gap_pairs=config.eval.gap_pairs,
                                               seed=seed),
               "linear_probe": evaluate_linear_probe(model, other, config, vocabulary.num_classes, device, seed)}
    return EvaluationResult(vocabulary=vocabulary, zero_shot=zs, linear_probe=probe, finetune=ft, ood=ood)
