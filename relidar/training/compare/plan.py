"""The comparison's plan: what `relidar compare` runs and how it decides, fixed before any result is seen.

A plan names the losses, the paired seeds, the claims' metrics, the confidence of their intervals and the
controls (random init, oracle, relational-term ablations, teacher switches); :meth:`ComparePlan.claims`
turns it into the paper's claims it can test with those losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from relidar.core.config import StrictModel
from relidar.core.errors import RelidarError
from relidar.training.losses import LOSS_NAMES, LossName
from relidar.training.oracle import OracleConfig


class CompareError(RelidarError, ValueError):
    """A comparison that cannot run (unknown loss, too few seeds, a bad plan); names the option."""


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims: ``better`` > ``worse`` on ``metric`` (paired over seeds), or a negative
    correlation over all runs between the gap and ``metric``."""

    key: str
    text: str
    kind: Literal["greater", "negative_correlation"]
    metric: str
    better: str | None = None
    worse: str | None = None


class RelationalWeights(StrictModel):
    """The three relational terms' weights of an ablation."""

    intra_weight: float = Field(1.0, ge=0.0)
    cross_diag_weight: float = Field(1.0, ge=0.0)
    cross_offdiag_weight: float = Field(1.0, ge=0.0)


class TeacherSwitch(StrictModel):
    """The comparison rerun on a teacher with some properties changed (synthetic data only)."""

    teacher: dict = Field(..., description="overrides of every synthetic source's teacher config")
    why: str = Field("", description="the property switched and what the paper's explanation says it does")
    predict: dict[str, Literal["larger", "smaller"]] = Field(
        default_factory=dict, description="claim key -> how its paired difference should move against the base teacher")
    seeds: int | None = Field(None, ge=2, description="default: the plan's seeds")
    losses: list[LossName] | None = Field(None, description="losses to rerun; default: those of the claims it predicts "
                                                            "(each claim compares two)")


class ComparePlan(StrictModel):
    """What `relidar compare` runs and how it decides; fixed before any result is seen."""

    losses: list[LossName] = Field(default_factory=lambda: list(LOSS_NAMES))
    seeds: int = Field(5, ge=2, description="paired seeds per loss (train.seed, train.seed+1, ...)")
    zero_shot_metric: str = Field("zero_shot_miou", description="summary key of the zero-shot claims")
    few_shot_metric: str = Field("finetune_miou_1pct", description="summary key of the few-shot claims; out of "
                                                                   "distribution: the same with the ood_ prefix")
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    curve_points: int = Field(4, ge=0, description="checkpoints per run scored zero-shot for the learning curves")
    curve_scans: int | None = Field(4, ge=1, description="held-out scans the learning-curve points are scored on")
    random_init: bool = Field(True, description="control: randomly initialised students, one per seed")
    oracle: OracleConfig | None = Field(OracleConfig(), description="control: one free vector per true class, per loss")
    ablations: dict[str, RelationalWeights] = Field(default_factory=dict, description="relational-term ablations")
    ablation_seeds: int | None = Field(None, ge=2, description="default: the plan's seeds")
    teacher_switches: dict[str, TeacherSwitch] = Field(default_factory=dict)
    workers: int = Field(1, ge=1, description="runs in parallel (one torch thread each)")

    @model_validator(mode="after")
    def _check(self) -> "ComparePlan":
        if len(set(self.losses)) != len(self.losses) or not self.losses:
            raise ValueError(f"losses {self.losses}: give each loss once")
        keys = {c.key for c in self.claims()}
        for name, switch in self.teacher_switches.items():
            unknown = set(switch.predict) - keys
            if unknown:
                raise ValueError(f"teacher_switches.{name}.predict: unknown claim(s) {sorted(unknown)}; claims are "
                                 f"{sorted(keys)}")
        return self

    def claims(self) -> list[Claim]:
        """The claims this plan can test with its losses."""
        have = set(self.losses)
        zs, fs = self.zero_shot_metric, self.few_shot_metric
        out = []
        if {"relational", "contrastive"} <= have:
            out.append(Claim("rel_gt_con_zero_shot", "relational > contrastive, zero-shot", "greater", zs,
                             "relational", "contrastive"))
        if {"relational", "similarity"} <= have:
            out.append(Claim("rel_gt_sim_few_shot", "relational > similarity, few-shot in distribution", "greater", fs,
                             "relational", "similarity"))
            out.append(Claim("rel_gt_sim_few_shot_ood", "relational > similarity, few-shot out of distribution",
                             "greater", f"ood_{fs}", "relational", "similarity"))
        if len(have) >= 2:
            out.append(Claim("gap_vs_zero_shot", "the structural gap correlates negatively with zero-shot mIoU",
                             "negative_correlation", zs))
            out.append(Claim("gap_vs_few_shot", "the structural gap correlates negatively with few-shot mIoU",
                             "negative_correlation", fs))
        return out


def switch_losses(plan: ComparePlan, switch: TeacherSwitch) -> list[str]:
    """The losses a teacher switch reruns: its own list, or the two of every claim it predicts."""
    if switch.losses is not None:
        return list(switch.losses)
    claims = {c.key: c for c in plan.claims()}
    named = {loss for key in switch.predict for loss in (claims[key].better, claims[key].worse) if loss}
    return [loss for loss in plan.losses if loss in named] or list(plan.losses)


def parse_losses(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in LOSS_NAMES]
    if not names or unknown:
        raise CompareError(f"--losses: {unknown or text!r} not understood; choose from {', '.join(LOSS_NAMES)}")
    return names
