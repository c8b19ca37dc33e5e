"""The end-to-end demo, offline: synthetic log -> teacher features -> relational distillation ->
zero-shot and few-shot evaluation -> model bundle -> a segmented scan in pictures.

The log holds two streets in SemanticKITTI's layout: sequence 00 (world ``seed``) is distilled on,
sequence 08 (world ``seed + 1``, SemanticKITTI's validation sequence number) is held out: every score
is on scans of a street the student never saw.

Every stage uses the product's own code path: the log is written in the SemanticKITTI layout and
read back with the dataset reader, the cache is ``relidar prepare``'s, training is ``relidar
distill``'s loop, the report is ``relidar evaluate``'s, the bundle is ``relidar export``'s writer and
the last scan is labelled by the runtime ``Segmenter`` from the bundle alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from pydantic import Field

from relidar.core.config import StrictModel, save_config


class DemoConfig(StrictModel):
    """The demo's budget; the defaults fit in about ten minutes on a 2-core CPU."""

    frames: int = Field(40, ge=2, description="synthetic sweeps of the training street (sequence 00)")
    val_frames: int = Field(8, ge=1, description="sweeps of the held-out street (sequence 08, world seed + 1)")
    seed: int = Field(0, ge=0, description="world and training seed")
    beams: int = Field(32, ge=4, description="lidar beams")
    horizontal_resolution_deg: float = Field(0.4, gt=0.0, description="lidar azimuth step")
    camera_width: int = Field(480, ge=32)
    camera_height: int = Field(270, ge=32)
    feature_dim: int = Field(64, ge=8, description="teacher / text embedding size (the student's out_dim)")
    steps: int = Field(800, ge=1, description="distillation optimizer steps (800: about 4 min on a 2-core CPU)")
    batch_size: int = Field(1, ge=1)
    pairs_per_batch: int = Field(2048, ge=8, description="pairs drawn over each batch")
    lr: float = Field(3e-3, gt=0.0)
    voxel_size: float = Field(0.1, gt=0.0, description="student voxel edge (m); the bundle keeps it")
    few_shot_scans: int = Field(4, ge=1, description="labelled training scans the linear probe uses (at most)")
    probe_steps: int = Field(150, ge=1)
    finetune_steps: int = Field(10, ge=0)
    # One thread: on a shared 2-core box, two intra-op threads competing with any other process were
    # measured 10-20x slower per step than one (OpenMP threads spin waiting for each other).
    threads: int | None = Field(1, ge=1, description="torch CPU threads (None: torch's choice)")


@dataclass
class DemoResult:
    out_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


TRAIN_SEQUENCE, VAL_SEQUENCE = "00", "08"


def write_log(out: Path, config: DemoConfig, on_frame: Callable[[int, int], None] | None = None) -> Path:
    """Two streets as SemanticKITTI sequences (scan, labels, front image, calibration): 00 from world
    ``seed`` (``frames`` sweeps) and 08 from world ``seed + 1`` (``val_frames`` sweeps)."""
    from relidar.synthetic.world import SynthConfig, SyntheticWorld
    from relidar.synthetic.writers import SemanticKittiWriter

    total = config.frames + config.val_frames
    done = 0
    for sequence, seed, frames in ((TRAIN_SEQUENCE, config.seed, config.frames),
                                   (VAL_SEQUENCE, config.seed + 1, config.val_frames)):
        world = SyntheticWorld(SynthConfig.model_validate({
            "seed": seed,
            "lidar": {"beams": config.beams, "horizontal_resolution_deg": config.horizontal_resolution_deg},
            "cameras": {"names": ["front"], "width": config.camera_width, "height": config.camera_height},
        }))
        with SemanticKittiWriter(out, sequence=int(sequence)) as writer:
            for sample in world.samples(frames):
                writer.write(sample)
                done += 1
                if on_frame:
                    on_frame(done, total)
    return out


def distill_config(config: DemoConfig, cache: Path, val_cache: Path, vocabulary: Path):
    from relidar.training.config import DistillConfig

    steps_per_epoch = max(1, config.frames // config.batch_size)
    return DistillConfig.model_validate({
        "data": {"cache": str(cache), "val": {"cache": str(val_cache)}},
        "student": {"profile": "fast", "voxel_size": config.voxel_size, "out_dim": config.feature_dim},
        "loss": {"type": "relational"},
        "sampling": {"scope": "batch", "pairs_per_batch": config.pairs_per_batch},
        "optimizer": {"lr": config.lr},
        "schedule": {"warmup_steps": min(10, config.steps // 10)},
        "train": {"epochs": -(-config.steps // steps_per_epoch), "max_steps": config.steps,
                  "batch_size": config.batch_size, "seed": config.seed, "threads": config.threads},
        "logging": {"every_steps": 1, "checkpoint_every": max(1, config.steps // 2), "progress": True},
        "eval": {"vocabulary": str(vocabulary),
                 "few_shot": {"probe_max_scans": config.few_shot_scans, "probe_steps": config.probe_steps,
                              "finetune_fractions": [0.01], "finetune_steps": config.finetune_steps,
                              "points_per_scan": 4096},
                 "bev_scans": 1},
    })


def segment_pictures(bundle: Path, points: np.ndarray, target: np.ndarray, class_names: tuple[str, ...],
                     out: Path, frame_id: str) -> dict[str, Path]:
    """Label ``points`` with the bundle's Segmenter and draw BEVs of the labels, their scores and the truth."""
    from relidar.core.segmenter import Segmenter
    from relidar.core.viz.bev import BevView, render_bev

    seg = Segmenter(bundle, backend="onnxruntime")
    result = seg(points)
    voc = seg.vocabulary
    view = BevView(resolution=0.15)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "segmented": render_bev(out / "segmented_bundle.png", points[:, :3], labels=result.labels, palette=voc.colors,
                                class_names=voc.class_names, view=view, ignore_label="outside the crop box",
                                title=f"{frame_id}: labels from the bundle ({seg.backend})"),
    }
    index = {n: i for i, n in enumerate(voc.class_names)}
    lut = np.array([index.get(n, -1) for n in class_names])
    truth = np.where(target >= 0, lut[np.clip(target, 0, len(lut) - 1)], -1)
    paths["ground_truth"] = render_bev(out / "ground_truth.png", points[:, :3], labels=truth, palette=voc.colors,
                                       class_names=voc.class_names, view=view, ignore_label="unlabelled",
                                       title=f"{frame_id}: ground truth")
    paths["scores"] = render_bev(out / "scores_bundle.png", points[:, :3], values=result.scores,
                                 value_label="score of the label (softmax)", view=view,
                                 title=f"{frame_id}: label scores")
    ok = (truth >= 0) & (result.labels >= 0)
    agreement = float((result.labels[ok] == truth[ok]).mean()) if ok.any() else float("nan")
    (out / "segmentation.json").write_text(json.dumps({
        "frame_id": frame_id, "points": int(len(points)), "backend": seg.backend,
        "accuracy_vs_truth": agreement, "timings_ms": result.timings_ms}, indent=2) + "\n")
    paths["segmentation_json"] = out / "segmentation.json"
    # The labelled scan as `relidar segment` writes it, so `relidar view OUT/pictures` opens it in a browser.
    from relidar.export.labelled import LABELS_YAML, LabelledScan, write_labelled_ply, write_labels_yaml

    scan = LabelledScan(frame_id, points, result.labels, result.scores)
    paths["labelled_ply"] = write_labelled_ply(out / "segmented.ply", scan, voc.colors)
    write_labels_yaml(out / LABELS_YAML, voc.class_names, voc.colors)
    return paths


def run_demo(out: Path, config: DemoConfig = DemoConfig(),
             on_stage: Callable[[str], None] | None = None,
             on_progress: Callable[[int, int], None] | None = None) -> DemoResult:
    """Run every stage into ``out`` (created); see the module docstring."""
    import torch

    threads_before = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _run_demo(Path(out), config, on_stage, on_progress)
    finally:
        torch.set_num_threads(threads_before)


def _run_demo(out: Path, config: DemoConfig, on_stage: Callable[[str], None] | None,
              on_progress: Callable[[int, int], None] | None) -> DemoResult:

    from relidar.model.weights import load_student
    from relidar.synthetic.teacher import SimulatedTeacher, SimulatedTeacherConfig
    from relidar.training.config import SyntheticSource
    from relidar.training.data import synthetic_vocabulary
    from relidar.training.distill import distill
    from relidar.training.evaluate import evaluate
    from relidar.training.feature_cache import CacheReader, prepare_cache
    from relidar.training.readers.base import open_dataset
    from relidar.training.report import write_report

    stage = on_stage or (lambda _s: None)
    out.mkdir(parents=True, exist_ok=True)
    res = DemoResult(out_dir=out)
    save_config(config, out / "demo_config.yaml")
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        res.seconds[name] = now - t
        t = now

    stage("writing the synthetic log (SemanticKITTI layout)")
    res.paths["log"] = write_log(out / "log", config, on_progress)
    lap("log")

    stage("preparing teacher features (simulated MaskCLIP-like teacher, version 2)")
    teacher_cfg = {"feature_dim": config.feature_dim, "seed": config.seed, "version": 2}
    teacher = SimulatedTeacher(SimulatedTeacherConfig.model_validate(teacher_cfg))
    teacher.truth.scan(out / "log")  # the renderer's masks the log writer put beside the images
    for sequence, cache_dir in ((TRAIN_SEQUENCE, out / "cache"), (VAL_SEQUENCE, out / "cache_val")):
        reader = open_dataset(out / "log", sequences=[sequence])
        report = prepare_cache(reader, cache_dir, teacher,
                               on_frame=(lambda d, n, _s: on_progress(d, n)) if on_progress else None)
        if report.failed:
            res.notes.append(f"{len(report.failed)} frame(s) of sequence {sequence} failed to prepare: "
                             f"{report.failed[0][1]}")
    res.paths["cache"] = out / "cache"
    res.paths["cache_val"] = out / "cache_val"
    vocabulary = synthetic_vocabulary(SyntheticSource(teacher=teacher_cfg))
    res.paths["vocabulary"] = vocabulary.save(out / "vocabulary.json")
    lap("prepare")

    stage("distilling with the relational loss (student 'fast', voxels %.2f m)" % config.voxel_size)
    dcfg = distill_config(config, out / "cache", out / "cache_val", res.paths["vocabulary"])
    run = distill(dcfg, out=out / "distill",
                  on_step=(lambda s, n, _l: on_progress(s, n)) if on_progress else None)
    res.paths["run"] = run.run_dir
    res.paths["weights"] = run.weights
    lap("distill")

    stage("evaluating zero-shot and few-shot")
    model = load_student(run.weights).eval()
    evaluation = evaluate(model, dcfg, vocabulary=vocabulary)
    files = write_report(out / "report", evaluation, title="relidar demo: evaluation",
                         extra={"weights": str(run.weights)})
    res.paths["report"] = files["markdown"]
    res.summary = evaluation.summary()
    # The done-criterion: the student's camera-visible zero-shot mIoU against its teacher's own.
    res.summary["student_over_teacher_visible"] = (res.summary["zero_shot_miou_visible"]
                                                   / res.summary["teacher_miou_visible"])
    lap("evaluate")

    stage("exporting the model bundle")
    from relidar.export.bundle import write_bundle
    from relidar.synthetic.teacher import synthetic_text_encoder

    cache = CacheReader(out / "cache_val")
    val_frame = cache[len(cache) - 1]
    res.paths["bundle"] = write_bundle(out / "bundle", model, vocabulary,
                                       synthetic_text_encoder(config.feature_dim, config.seed),
                                       trace_points=val_frame.points)
    lap("export")

    stage("segmenting a held-out scan with the bundle")
    target = val_frame.labels.astype(np.int64) if val_frame.labels is not None else np.full(len(val_frame.points), -1)
    pics = segment_pictures(res.paths["bundle"], val_frame.points, target, cache.class_names, out / "pictures",
                            val_frame.frame_id)
    res.paths.update({f"picture_{k}": v for k, v in pics.items()})
    lap("segment")
    res.notes.append("the bundle is trained on synthetic data (a procedural street and a simulated teacher); "
                     "it is not a model for real sensors")
    res.seconds["total"] = sum(res.seconds.values())
    (out / "demo_summary.json").write_text(json.dumps({
        "summary": res.summary, "seconds": res.seconds, "paths": {k: str(v) for k, v in res.paths.items()},
        "notes": res.notes}, indent=2) + "\n")
    res.paths["summary"] = out / "demo_summary.json"
    return res
