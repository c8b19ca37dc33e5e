"""Evaluation of a distilled student: zero-shot, few-shot (linear probe, fine-tuning), structural measures.

All scores are on held-out scans (``DataConfig.val``: an official validation split or another street).

* zero-shot: each point takes the vocabulary class whose text embedding is closest (cosine) to its
  student embedding; scored on all points inside the student's crop and on the camera-visible ones
  (points with a pixel pair). mIoU is given over every class present and over the classes the
  teacher itself can see (its own 2D zero-shot IoU on the held-out pairs reaches
  ``eval.teacher_seen_iou``): a student cannot be asked to find what its teacher never finds.
* few-shot, as SLidR / ST-SLidR / ScaLR measure it: a linear probe on the frozen backbone's
  per-point features trained on the labelled training scans (``probe_fraction``, 100 % in those
  papers), and fine-tuning the backbone with a new linear classifier on 1 % (and 10 %) of them; in
  distribution and on another dataset (``eval.ood``: another world and sensor).
* structure, on held-out pairs: the paper's gap, mean over i≠j of ``|KKᵀ - QQᵀ|`` on uniformly drawn
  pairs (the relational loss's intra term: relational distillation minimises it by construction),
  and three measures no loss optimises: linear CKA of K and Q, the gap on pairs drawn equally from
  every ground-truth class (no loss sees labels), and the k-NN label agreement (the share of a
  point's k nearest neighbours in the student's space that carry its label, class-balanced) next
  to the same for the teacher's features.

Dataset labels are matched to vocabulary classes by name; labels of classes the vocabulary lacks
are ignored.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from relidar.core.errors import RelidarError
from relidar.core.preprocess import Preprocessor
from relidar.core.rows import unit_rows
from relidar.core.seeds import Purpose, stream
from relidar.core.vocabulary import Vocabulary
from relidar.model.batch import TorchInputs, to_torch
from relidar.model.network import Student
from relidar.training.config import DataConfig, DistillConfig
from relidar.training.data import ensure_cache, split_data, synthetic_vocabulary
from relidar.training.feature_cache import CachedFrame, CacheReader
from relidar.training.metrics import SegmentationScores, confusion_matrix, miou_over, scores_from_confusion


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


@dataclass(frozen=True)
class PairStructure:
    """The structure of one set of pairs: the paper's gap and linear CKA (:func:`structural_gap`)."""

    gap: float
    cka: float


def structural_gap(k: np.ndarray, q: np.ndarray) -> PairStructure:
    """Mean over i≠j of |KKᵀ - QQᵀ| (rows normalised) and linear CKA between K and Q."""
    kn, qn = unit_rows(np.array(k, dtype=np.float64)), unit_rows(np.array(q, dtype=np.float64))
    n = kn.shape[0]
    diff = np.abs(kn @ kn.T - qn @ qn.T)
    gap = float((diff.sum() - np.trace(diff)) / max(n * (n - 1), 1))
    return PairStructure(gap=gap, cka=linear_cka(kn, qn))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019): ||Xcᵀ Yc||²_F / (||Xcᵀ Xc||_F ||Ycᵀ Yc||_F), columns centred."""
    xc = (x - x.mean(axis=0)).astype(np.float64)
    yc = (y - y.mean(axis=0)).astype(np.float64)
    num = np.linalg.norm(xc.T @ yc) ** 2
    den = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(num / den) if den > 0 else float("nan")


def balanced_pick(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``per_class`` indices of each label >= 0, drawn without replacement (sorted)."""
    chosen = []
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        chosen.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def knn_label_agreement(features: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Class-balanced share of each row's ``k`` nearest other rows (cosine) that carry its label: per
    class, the mean share over its rows; then the mean over classes. Classes with no more than ``k``
    rows are left out (their share could not reach 1); NaN when none is left."""
    classes, counts = np.unique(labels, return_counts=True)
    if not (counts > k).any():
        return float("nan")
    f = unit_rows(np.array(features, dtype=np.float64))
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    neighbours = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    share = (labels[neighbours] == labels[:, None]).mean(axis=1)
    return float(np.mean([share[labels == c].mean() for c, n in zip(classes, counts) if n > k]))


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
    """Labelled scans for evaluation: training scans (for few-shot) and held-out ones (scored), labels
    mapped to vocabulary ids."""

    name: str
    train_cache: CacheReader
    train: tuple[int, ...]
    val_cache: CacheReader
    val: tuple[int, ...]
    lut: np.ndarray

    def labels(self, cached: CachedFrame) -> np.ndarray:
        if cached.labels is None:
            raise EvaluationError(f"{self.name}: frame {cached.frame_id} has no labels; evaluation needs labelled data",
                                  path=self.train_cache.root)
        return to_vocabulary_labels(cached.labels.astype(np.int64), self.lut)


def labelled_set(name: str, data: DataConfig, vocabulary: Vocabulary, max_scans: int | None) -> LabelledSet:
    split = split_data(data)
    if not split.val:
        raise EvaluationError("no held-out scans", path=data.cache, field="data.val",
                              hint="set data.val (the validation split's cache, or another synthetic street)")
    lut = label_map(split.train_cache.class_names, vocabulary)
    if (lut < 0).all():
        raise EvaluationError(f"{data.cache}: none of its classes {list(split.train_cache.class_names)} is in the "
                              f"vocabulary {list(vocabulary.class_names)}")
    val = split.val[:max_scans] if max_scans else split.val
    return LabelledSet(name=name, train_cache=split.train_cache, train=split.train, val_cache=split.val_cache, val=val,
                       lut=lut)


def spread(frames: Sequence[int], count: int) -> list[int]:
    """``count`` of ``frames`` evenly spread over them (consecutive sweeps are near-duplicates)."""
    count = max(1, min(count, len(frames)))
    return [frames[int(i)] for i in np.linspace(0, len(frames) - 1, count).round().astype(int)]


def fraction_tag(fraction: float) -> str:
    """0.01 -> '1pct', 0.1 -> '10pct', 0.005 -> '0.5pct' (summary keys)."""
    return f"{100 * fraction:g}pct"


def _scores_json(scores: SegmentationScores, names: Sequence[str]) -> dict[str, Any]:
    return {**scores.as_dict(names), "confusion": scores.confusion.tolist()}


@dataclass(frozen=True)
class StructureResult:
    """The structural measures on held-out pairs (NaN where too few pairs): the paper's gap on uniform
    pairs and CKA (means over scans), the gap on class-balanced pairs, and the k-NN label agreement of
    the student's and of the teacher's features. Fields in the order of ``report.json``'s ``structure``."""

    gap: float
    gap_balanced: float
    cka: float
    knn_agreement: float
    teacher_knn_agreement: float

    def summary(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{name}": value for name, value in asdict(self).items()}


@dataclass(frozen=True)
class KeptScan:
    """One held-out scan's points, labels and zero-shot predictions, kept for pictures."""

    frame_id: str
    points: np.ndarray
    target: np.ndarray
    prediction: np.ndarray
    inside: np.ndarray


@dataclass(frozen=True)
class ZeroShotResult:
    """Zero-shot scores over the held-out scans: on all points inside the crop, on the camera-visible
    ones, and the teacher's own on its pairs; ``seen`` [C] marks the classes the teacher sees."""

    all_points: SegmentationScores
    visible: SegmentationScores
    teacher: SegmentationScores
    seen: np.ndarray
    inside_fraction: float
    scans: int
    structure: StructureResult
    kept: tuple[KeptScan, ...] = ()

    @property
    def miou(self) -> float:
        return self.all_points.miou

    @property
    def miou_seen(self) -> float:
        return miou_over(self.all_points, self.seen)

    @property
    def miou_visible(self) -> float:
        return self.visible.miou

    @property
    def miou_visible_seen(self) -> float:
        return miou_over(self.visible, self.seen)

    def seen_names(self, names: Sequence[str]) -> list[str]:
        return [n for n, s in zip(names, self.seen) if s]

    def summary(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}zero_shot_miou": self.miou,
            f"{prefix}zero_shot_miou_seen": self.miou_seen,
            f"{prefix}zero_shot_miou_visible": self.miou_visible,
            f"{prefix}zero_shot_miou_visible_seen": self.miou_visible_seen,
            f"{prefix}teacher_miou_visible": self.teacher.miou,
            f"{prefix}teacher_seen_classes": float(self.seen.sum()),
        }

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {"all": _scores_json(self.all_points, names), "visible": _scores_json(self.visible, names),
                "teacher_visible": _scores_json(self.teacher, names), "teacher_seen": self.seen_names(names),
                "inside_fraction": self.inside_fraction, "scans": self.scans}


@dataclass(frozen=True)
class ProbeResult:
    """The linear probe's scores on the held-out scans, trained on ``train_points`` points of ``scans`` scans."""

    scores: SegmentationScores
    scans: int
    train_points: int

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {"scans": self.scans, "train_points": self.train_points, **_scores_json(self.scores, names)}


@dataclass(frozen=True)
class FinetuneResult:
    """Scores on the held-out scans after fine-tuning ``steps`` steps on ``fraction`` (``scans`` scans)."""

    scores: SegmentationScores
    scans: int
    fraction: float
    steps: int

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {"fraction": self.fraction, "scans": self.scans, "steps": self.steps,
                **_scores_json(self.scores, names)}


def evaluate_zero_shot(model: Student | None, data: LabelledSet, vocabulary: Vocabulary, device: torch.device,
                       keep_predictions: int = 0, gap_pairs: int = 1024, seed: int = 0, knn: int = 10,
                       teacher_seen_iou: float = 0.05, on_scan: Callable[[], None] | None = None,
                       outputs: Callable[[CachedFrame, np.ndarray], ScanOutput] | None = None) -> ZeroShotResult:
    """Zero-shot scores over the held-out scans, the structural measures on their pairs, and the first
    ``keep_predictions`` scans' points, labels and predictions (for pictures). ``outputs(frame, labels)``
    replaces the student's forward pass (the oracle control: ``relidar.training.oracle``)."""
    text = vocabulary.embeddings.astype(np.float32)
    acc = ZeroShotAccumulator(vocabulary.num_classes)
    teacher_cm = np.zeros((vocabulary.num_classes, vocabulary.num_classes), dtype=np.int64)
    gaps: list[PairStructure] = []
    pool_k, pool_q, pool_y = [], [], []
    kept: list[KeptScan] = []
    for i, frame in enumerate(data.val):
        cached = data.val_cache[frame]
        target = data.labels(cached)
        out = outputs(cached, target) if outputs is not None else scan_output(model, cached.points, device)
        pred = zero_shot_predict(out.embedding, text)
        acc.add(pred, target, out.inside, cached.pair_point.astype(np.int64))
        # The teacher's own zero-shot labels of the paired points: the ceiling distillation aims at.
        pair_target = target[cached.pair_point]
        ok_t = pair_target >= 0
        teacher_cm += confusion_matrix(pair_target[ok_t],
                                       zero_shot_predict(cached.pair_features[ok_t].astype(np.float32), text),
                                       vocabulary.num_classes)
        # The paper's gap on uniformly drawn pairs of this scan whose point the student sees.
        rng = stream(seed, Purpose.GAP, frame)
        ok = np.flatnonzero(out.inside[cached.pair_point])
        if len(ok) >= 4:
            pick = rng.choice(ok, size=min(gap_pairs, len(ok)), replace=False)
            gaps.append(structural_gap(out.embedding[cached.pair_point[pick]],
                                       cached.pair_features[pick].astype(np.float32)))
        # A labelled pool for the measures that use classes.
        lab = np.flatnonzero(out.inside[cached.pair_point] & ok_t)
        if len(lab):
            pick = rng.choice(lab, size=min(gap_pairs, len(lab)), replace=False)
            pool_k.append(out.embedding[cached.pair_point[pick]])
            pool_q.append(cached.pair_features[pick].astype(np.float32))
            pool_y.append(pair_target[pick])
        if i < keep_predictions:
            kept.append(KeptScan(frame_id=cached.frame_id, points=cached.points, target=target, prediction=pred,
                                 inside=out.inside))
        if on_scan:
            on_scan()
    teacher = scores_from_confusion(teacher_cm)
    seen = np.nan_to_num(teacher.iou, nan=0.0) >= teacher_seen_iou
    gap_balanced = knn_agreement = teacher_knn_agreement = float("nan")
    if pool_y:
        y = np.concatenate(pool_y)
        classes = len(np.unique(y))
        rng = stream(seed, Purpose.BALANCE)
        pick = balanced_pick(y, max(2, gap_pairs // classes), rng)
        k_b, q_b, y_b = np.concatenate(pool_k)[pick], np.concatenate(pool_q)[pick], y[pick]
        if len(pick) >= 4:
            gap_balanced = structural_gap(k_b, q_b).gap
            knn_agreement = knn_label_agreement(k_b, y_b, knn)
            teacher_knn_agreement = knn_label_agreement(q_b, y_b, knn)
    structure = StructureResult(
        gap=float(np.mean([g.gap for g in gaps])) if gaps else float("nan"),
        gap_balanced=gap_balanced,
        cka=float(np.mean([g.cka for g in gaps])) if gaps else float("nan"),
        knn_agreement=knn_agreement,
        teacher_knn_agreement=teacher_knn_agreement,
    )
    return ZeroShotResult(
        all_points=scores_from_confusion(acc.all_points),
        visible=scores_from_confusion(acc.visible),
        teacher=teacher,
        seen=seen,
        inside_fraction=float(np.mean(acc.inside_fraction)) if acc.inside_fraction else 0.0,
        scans=len(data.val),
        structure=structure,
        kept=tuple(kept),
    )


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
            inputs, p2v = _inputs(model, cached.points, device)
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


def resolve_vocabulary(config: DistillConfig) -> Vocabulary:
    """The vocabulary ``config`` names, in the feature space of its cache (through the cache's projection
    when it keeps projected features)."""
    if config.eval.vocabulary:
        return ensure_cache(config.data).project_vocabulary(Vocabulary.load(config.eval.vocabulary))
    if config.data.synthetic is not None:
        return ensure_cache(config.data).project_vocabulary(synthetic_vocabulary(config.data.synthetic))
    raise EvaluationError("eval.vocabulary: no vocabulary given; pass the Vocabulary JSON of the teacher's text "
                          "encoder (eval.vocabulary=PATH), made with `relidar vocabulary build --classes ... --teacher ...`")


@dataclass(frozen=True)
class SetResult:
    """Everything measured on one labelled set (in-distribution, or out-of-distribution)."""

    zero_shot: ZeroShotResult
    linear_probe: ProbeResult
    finetune: tuple[FinetuneResult, ...]

    def summary(self, prefix: str = "") -> dict[str, float]:
        zs, probe = self.zero_shot, self.linear_probe.scores
        out = {
            **zs.summary(prefix),
            f"{prefix}probe_miou": probe.miou,
            f"{prefix}probe_miou_seen": miou_over(probe, zs.seen),
            **zs.structure.summary(prefix),
        }
        for ft in self.finetune:
            out[f"{prefix}finetune_miou_{fraction_tag(ft.fraction)}"] = ft.scores.miou
        return out

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {
            "zero_shot": self.zero_shot.to_json(names),
            "structure": asdict(self.zero_shot.structure),
            "linear_probe": self.linear_probe.to_json(names),
            "finetune": [ft.to_json(names) for ft in self.finetune],
        }


@dataclass
class EvaluationResult:
    """Everything a report shows; ``to_json`` drops the arrays kept for pictures."""

    vocabulary: Vocabulary
    in_distribution: SetResult
    ood: SetResult | None

    @property
    def zero_shot(self) -> ZeroShotResult:
        return self.in_distribution.zero_shot

    def summary(self) -> dict[str, float]:
        """The headline numbers (what `relidar compare` tabulates); out-of-distribution ones prefixed ``ood_``."""
        out = self.in_distribution.summary()
        if self.ood is not None:
            out.update(self.ood.summary("ood_"))
        return out

    def to_json(self) -> dict[str, Any]:
        names = self.vocabulary.class_names
        out: dict[str, Any] = {"summary": self.summary(), "classes": list(names),
                               **self.in_distribution.to_json(names)}
        if self.ood is not None:
            out["ood"] = self.ood.to_json(names)
        return out


def evaluate_set(model: Student, data: LabelledSet, config: DistillConfig, vocabulary: Vocabulary,
                 device: torch.device, keep_predictions: int = 0,
                 phase: Callable[[str], None] = lambda _name: None) -> SetResult:
    """Zero-shot, structural measures, linear probe and fine-tuning on one labelled set."""
    ev, seed = config.eval, config.train.seed
    phase(f"{data.name}: zero-shot")
    zs = evaluate_zero_shot(model, data, vocabulary, device, keep_predictions=keep_predictions,
                            gap_pairs=ev.gap_pairs, seed=seed, knn=ev.knn, teacher_seen_iou=ev.teacher_seen_iou)
    phase(f"{data.name}: linear probe")
    probe = evaluate_linear_probe(model, data, config, vocabulary.num_classes, device, seed)
    finetune = []
    if ev.few_shot.finetune_steps:
        for fraction in ev.few_shot.finetune_fractions:
            phase(f"{data.name}: fine-tuning on {fraction_tag(fraction)}")
            finetune.append(evaluate_finetune(model, data, config, vocabulary.num_classes, device, fraction, seed))
    return SetResult(zero_shot=zs, linear_probe=probe, finetune=tuple(finetune))


def evaluate(model: Student, config: DistillConfig, device: torch.device | str = "cpu",
             vocabulary: Vocabulary | None = None, on_phase: Callable[[str], None] | None = None) -> EvaluationResult:
    """Run every evaluation ``config.eval`` asks for on ``model`` (the run's own data and eval.ood)."""
    device = torch.device(device)
    vocabulary = vocabulary or resolve_vocabulary(config)
    if vocabulary.feature_dim != model.config.out_dim:
        raise EvaluationError(f"vocabulary embeddings are {vocabulary.feature_dim}-d but the student emits "
                              f"{model.config.out_dim}-d; use the vocabulary of the teacher it was distilled from")
    phase = on_phase or (lambda _name: None)
    data = labelled_set("in-distribution", config.data, vocabulary, config.eval.max_scans)
    result = evaluate_set(model, data, config, vocabulary, device, config.eval.bev_scans, phase)
    ood = None
    if config.eval.ood is not None:
        other = labelled_set("out-of-distribution", config.eval.ood, vocabulary, config.eval.max_scans)
        for cache in (other.train_cache, other.val_cache):
            if cache.feature_space != data.train_cache.feature_space:
                raise EvaluationError(f"{cache.root} holds {cache.feature_space}, the training cache "
                                      f"{data.train_cache.feature_space}", field="eval.ood",
                                      hint="prepare both with the same teacher and projection")
        ood = evaluate_set(model, other, config, vocabulary, device, 0, phase)
    return EvaluationResult(vocabulary=vocabulary, in_distribution=result, ood=ood)
