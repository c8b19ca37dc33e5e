"""The distillation run's typed config (YAML): data, student, loss, sampling, optimisation, logging, evaluation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from relidar.core.config import StrictModel
from relidar.model.network import StudentConfig
from relidar.training.augment import AugmentConfig
from relidar.training.feature_cache import CacheStorage
from relidar.training.losses import LossConfig
from relidar.training.sampling import SamplingConfig
from relidar.training.teachers.online import OnlineSource


class SyntheticSource(StrictModel):
    """Build the data from the synthetic world when the cache folder does not exist yet.

    ``world`` holds ``relidar.training.synthetic.world.SynthConfig`` fields (seed, lidar.beams, ...)
    and ``teacher`` those of its ``SimulatedTeacherConfig``; kept as plain mappings here so that
    this config stays readable without importing the synthetic world.
    """

    frames: int = Field(24, ge=2, description="sweeps to generate")
    world: dict = Field(default_factory=dict, description="SynthConfig fields, e.g. {seed: 0, lidar: {beams: 32}}")
    teacher: dict = Field(default_factory=dict, description="SimulatedTeacherConfig fields, e.g. {feature_dim: 64}")
    storage: CacheStorage = Field(CacheStorage(), description="how the cache keeps the teacher's features")


class LoaderConfig(StrictModel):
    """Batch preparation in DataLoader workers (``relidar.training.data.step_loader``)."""

    workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field("auto", description="worker processes; auto: none on the CPU, else the "
                                                               "cores per rank less one, at most 8")
    prefetch: int = Field(2, ge=1, description="batches each worker prepares ahead")
    pin_memory: Literal["auto", "on", "off"] = Field("auto", description="page-locked batches (auto: when training on CUDA)")


class DataConfig(StrictModel):
    cache: str = Field(..., description="teacher feature cache folder (written by `relidar prepare`)")
    synthetic: SyntheticSource | None = Field(None, description="generate + prepare the synthetic world into `cache` if absent")
    val_fraction: float = Field(0.25, ge=0.0, lt=1.0, description="last fraction of the frames, held out for evaluation")
    max_frames: int | None = Field(None, ge=1, description="use only the first frames of the cache")
    online: OnlineSource | None = Field(None, description="train on this dataset with the teacher in the training step "
                                                          "(no cache; meant for GPUs); `cache` is then only evaluated on")
    loader: LoaderConfig = LoaderConfig()


class OptimizerConfig(StrictModel):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")


class ScheduleConfig(StrictModel):
    name: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0.0, le=1.0, description="cosine: final lr as a fraction of the peak")


class TrainConfig(StrictModel):
    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (before the epochs end)")
    batch_size: int = Field(2, ge=1, description="scans per optimizer step (global, over all data-parallel ranks)")
    seed: int = 0
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision on GPU (ignored on CPU)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    sparse_maps: Literal["auto", "pairs", "table"] = Field(
        "auto", description="sparse-conv formulation: pair lists or neighbour tables (relidar.model.sparse.functional); "
                            "auto = tables on CUDA, pairs on the CPU (where tables measured slower)")
    grad_clip: float | None = Field(10.0, gt=0.0)
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice)")


class LoggingConfig(StrictModel):
    every_steps: int = Field(1, ge=1, description="CSV/TensorBoard row every N steps")
    checkpoint_every: int = Field(50, ge=1, description="checkpoint every N optimizer steps (and at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="how many step checkpoints to keep")
    tensorboard: bool = True
    progress: bool = True


class FewShotConfig(StrictModel):
    scans: int = Field(4, ge=1, description="k labelled scans for the linear probe")
    probe_steps: int = Field(150, ge=1)
    probe_lr: float = Field(5e-2, gt=0.0)
    points_per_scan: int = Field(8192, ge=16, description="labelled points per scan the probe trains on")
    finetune_fraction: float = Field(0.25, gt=0.0, le=1.0, description="fraction of the labelled train scans fine-tuned on")
    finetune_steps: int = Field(0, ge=0, description="0 skips fine-tuning")
    finetune_lr: float = Field(1e-3, gt=0.0)


class EvalConfig(StrictModel):
    vocabulary: str | None = Field(None, description="Vocabulary JSON (`relidar vocabulary build`); default: the synthetic "
                                                     "teacher's, when data.synthetic is set")
    max_scans: int | None = Field(None, ge=1, description="evaluate at most this many held-out scans")
    few_shot: FewShotConfig = FewShotConfig()
    gap_pairs: int = Field(1024, ge=4, description="held-out pairs per scan for the structural gap")
    ood: DataConfig | None = Field(None, description="another dataset for out-of-distribution few-shot and zero-shot")
    bev_scans: int = Field(1, ge=0, description="BEV pictures of prediction vs ground truth")


class DistillConfig(StrictModel):
    data: DataConfig
    student: StudentConfig = StudentConfig()
    loss: LossConfig = LossConfig()
    sampling: SamplingConfig = SamplingConfig()
    augment: AugmentConfig = AugmentConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    logging: LoggingConfig = LoggingConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _check(self) -> "DistillConfig":
        if self.loss.superpixel_pooling and "contrastive" not in self.loss.terms():
            raise ValueError("loss.superpixel_pooling applies to the contrastive loss only; set it false")
        return self
