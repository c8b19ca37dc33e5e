"""The distillation run's typed config (YAML): data, student, loss, sampling, optimisation, logging, evaluation."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Mapping

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from relidar.core.config import StrictModel
from relidar.model.network import StudentConfig
from relidar.synthetic.teacher import SimulatedTeacherConfig
from relidar.synthetic.world import SynthConfig
from relidar.training.augment import AugmentConfig
from relidar.training.feature_cache import CacheStorage
from relidar.training.losses import LossConfig, LossName
from relidar.training.sampling import SamplingConfig
from relidar.training.teachers.online import OnlineSource


class SyntheticSource(StrictModel):
    """Build the data from the synthetic world when the cache folder does not exist yet: ``frames`` sweeps of
    the world ``world`` describes, with teacher features from the simulated teacher ``teacher`` describes
    (the schemas live beside the code they drive, in ``relidar.synthetic``)."""

    frames: int = Field(24, ge=2, description="sweeps to generate")
    world: SynthConfig = Field(SynthConfig(), description="the world: seed, lidar (beams, ...), cameras")
    teacher: SimulatedTeacherConfig = Field(SimulatedTeacherConfig(), description="the simulated teacher, e.g. {feature_dim: 64}")
    storage: CacheStorage = Field(CacheStorage(), description="how the cache keeps the teacher's features")


class LoaderConfig(StrictModel):
    """Batch preparation in DataLoader workers (``relidar.training.data.step_loader``)."""

    workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field("auto", description="worker processes; auto: none on the CPU, else the "
                                                               "cores per rank less one, at most 8")
    prefetch: int = Field(2, ge=1, description="batches each worker prepares ahead")
    pin_memory: Literal["auto", "on", "off"] = Field("auto", description="page-locked batches (auto: when training on CUDA)")


class ScanSource(StrictModel):
    """One set of scans: a teacher feature cache (built from the synthetic world first, if asked)."""

    cache: str = Field(..., description="teacher feature cache folder (written by `relidar prepare`)")
    synthetic: SyntheticSource | None = Field(None, description="generate + prepare the synthetic world into `cache` if absent")
    max_frames: int | None = Field(None, ge=1, description="use only the first frames of the cache")


class DataConfig(ScanSource):
    """Training scans (``cache``) and the held-out ones evaluation scores on.

    Held-out scans come from their own cache (``val``): the official validation split of a dataset
    (nuScenes: the devkit's ``val`` scenes; SemanticKITTI: sequence 08, training on 00-07 and 09-10),
    or, in the synthetic world, another street (another world seed). ``val_fraction`` (the tail of
    ``cache``) exists for data without a split; consecutive sweeps re-scan the same objects, so such
    scans are not independent of the training ones. ``selection`` holds the scans settings are chosen on
    (``relidar compare``'s per-loss grid) so that the held-out scans score only what was chosen without
    them: in the synthetic world a third street; on a dataset with two official splits, scenes kept out
    of training.
    """

    val: ScanSource | None = Field(None, description="held-out scans: the official validation split's cache, or "
                                                     "(synthetic) another world seed")
    selection: ScanSource | None = Field(None, description="validation scans `relidar compare` chooses each loss's setting "
                                                           "on (its per-loss grid), never the held-out ones: (synthetic) "
                                                           "a third street")
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="without `val` only: hold out the last fraction of "
                                                                 "`cache` (not independent of the training scans)")
    online: OnlineSource | None = Field(None, description="train on this dataset with the teacher in the training step "
                                                          "(no cache; meant for GPUs); `cache` is then read by evaluation "
                                                          "only (few-shot training scans)")
    loader: LoaderConfig = LoaderConfig()

    @model_validator(mode="after")
    def _check_split(self) -> "DataConfig":
        if self.val is not None and self.val_fraction > 0:
            raise ValueError("give held-out scans either as `val` (a cache) or as `val_fraction`, not both")
        if self.selection is not None and self.selection.cache in (self.cache, self.val.cache if self.val else None):
            raise ValueError(f"selection: {self.selection.cache} is the training or the held-out cache; settings are "
                             "chosen on scans of their own (a third street, or scenes kept out of training)")
        return self


class OptimizerSettings(StrictModel):
    """Overrides of the optimizer for one loss (unset fields keep the common value)."""

    name: Literal["adamw", "sgd"] | None = None
    lr: float | None = Field(None, gt=0.0)
    weight_decay: float | None = Field(None, ge=0.0)
    momentum: float | None = Field(None, ge=0.0, lt=1.0)
    dampening: float | None = Field(None, ge=0.0, lt=1.0)


class OptimizerConfig(StrictModel):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    dampening: float = Field(0.0, ge=0.0, lt=1.0, description="sgd only (SLidR uses 0.1)")
    per_loss: dict[LossName, OptimizerSettings] = Field(
        default_factory=dict, description="settings for one loss.type, e.g. {contrastive: {name: sgd, lr: 0.5}}: each "
                                          "loss trained as its own paper trains it")

    def for_loss(self, loss: str) -> "OptimizerConfig":
        """The settings a run with ``loss.type == loss`` uses (per_loss overrides applied)."""
        over = self.per_loss.get(loss)  # type: ignore[call-overload]
        if over is None:
            return self
        fields = {k: v for k, v in over.model_dump().items() if v is not None}
        return self.model_copy(update=fields)


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
    formulation: Literal["auto", "pairs", "table"] = Field(
        "auto", description="sparse-conv formulation: pair lists or neighbour tables (relidar.model.sparse.functional); "
                            "auto = tables on CUDA, pairs on the CPU (where tables measured slower)")
    grad_clip: float | None = Field(10.0, gt=0.0)
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice)")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # configs and overrides written before the rename would otherwise get pydantic's bare "extra input"
        if isinstance(data, Mapping) and "sparse_maps" in data:
            raise PydanticCustomError("renamed", "train.sparse_maps was renamed to train.formulation")
        return data


class LoggingConfig(StrictModel):
    every_steps: int = Field(1, ge=1, description="CSV/TensorBoard row every N steps")
    checkpoint_every: int = Field(50, ge=1, description="checkpoint every N optimizer steps (and at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="how many step checkpoints to keep")
    checkpoint_steps: list[int] = Field(default_factory=list, description="also checkpoint after these optimizer steps "
                                                                          "(relidar compare: budgets, curve points)")
    tensorboard: bool = True
    progress: bool = True


class FewShotConfig(StrictModel):
    """Few-shot evaluation as the literature measures it (SLidR, ST-SLidR, ScaLR): a linear probe on the
    frozen backbone trained on the labelled training scans (they use 100 %), and fine-tuning the
    backbone with a new linear classifier on 1 % of them (SLidR/ST-SLidR ``dataset_skip_step: 100``; ScaLR ``finetune_1p``)."""

    probe_fraction: float = Field(1.0, gt=0.0, le=1.0, description="fraction of the labelled training scans the linear "
                                                                    "probe trains on (SLidR/ScaLR: 100 %)")
    probe_max_scans: int | None = Field(None, ge=1, description="at most this many of them (a CPU budget)")
    probe_steps: int = Field(150, ge=1)
    probe_lr: float = Field(5e-2, gt=0.0)
    points_per_scan: int = Field(8192, ge=16, description="labelled points per scan the probe and fine-tuning train on")
    finetune_fractions: list[float] = Field(
        default_factory=lambda: [0.01, 0.1], description="fractions of the labelled training scans fine-tuned on "
                                                         "(at least one scan each): 1 % as SLidR/ST-SLidR/ScaLR, and 10 %")
    finetune_steps: int = Field(0, ge=0, description="optimizer steps per fine-tuning; 0 skips fine-tuning")
    finetune_lr: float = Field(1e-3, gt=0.0, description="backbone learning rate of fine-tuning (AdamW)")
    finetune_head_lr: float = Field(1e-2, gt=0.0, description="learning rate of the new classifier (ST-SLidR: 100x the "
                                                              "backbone's)")

    @model_validator(mode="after")
    def _check(self) -> "FewShotConfig":
        if any(not 0 < f <= 1 for f in self.finetune_fractions):
            raise ValueError(f"finetune_fractions {self.finetune_fractions} must each be in (0, 1]")
        return self


class EvalConfig(StrictModel):
    vocabulary: str | None = Field(None, description="Vocabulary JSON (`relidar vocabulary build`); default: the synthetic "
                                                     "teacher's, when data.synthetic is set")
    max_scans: int | None = Field(None, ge=1, description="evaluate at most this many held-out scans")
    few_shot: FewShotConfig = FewShotConfig()
    gap_pairs: int = Field(1024, ge=4, description="held-out pairs per scan for the structural gap and k-NN agreement")
    knn: int = Field(10, ge=1, description="neighbours of the k-NN label agreement")
    teacher_seen_iou: float = Field(0.05, ge=0.0, le=1.0, description="a class counts as seen by the teacher when the "
                                                                      "teacher's own zero-shot IoU on the held-out pairs "
                                                                      "reaches this")
    ood: DataConfig | None = Field(None, description="another dataset (another world and sensor) for out-of-distribution "
                                                     "zero-shot and few-shot; its `val` holds its scored scans")
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
