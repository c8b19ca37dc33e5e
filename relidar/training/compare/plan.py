"""The comparison's plan: what `relidar compare` runs and how it decides, fixed before any result is seen.

A plan names the losses, the paired seeds, the budgets, the per-loss grid and how it is decided
(:class:`Selection`, on the data's validation street), the claims' metrics, the confidence of their
intervals and the controls (random init, oracle, the fixed-setting comparison, relational-term ablations,
switches of the teacher or the config); :meth:`ComparePlan.claims` turns it into the paper's claims it can
test with those losses.

Budgets are multiples of the config's steps. They cost one run per (loss, seed) at the largest budget:
a smaller budget is that run's checkpoint at its step. Whether that checkpoint *is* the shorter run
depends on the schedule. Under ``schedule: constant`` (the config's linear warm-up, then its peak lr) the
lr at a step does not depend on the run's length, and the data order and pair draws are functions of
(seed, epoch, step) only (``relidar.training.data``), so the checkpoint at step b·S of a longer run is
bit for bit the run of budget b. Under ``schedule: config`` with a cosine schedule it is not: the cosine
spans the longest run, so at step S of a 4x run the lr is still at ~87 % of its peak where a 1x run would
have annealed to ``min_lr_ratio``; the smaller budgets are then read at their step of the longest run,
not annealed, and plan.md says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
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
    """The comparison rerun with one thing changed: properties of the teacher (synthetic data only) and/or
    settings of the run's config (e.g. ``sampling.mode: balanced``), each loss at its main setting."""

    teacher: dict = Field(default_factory=dict, description="overrides of every synthetic source's teacher config")
    config: dict = Field(default_factory=dict, description="overrides of the run's config, section by section "
                                                           "(e.g. {sampling: {mode: balanced}})")
    why: str = Field("", description="the property switched and what the paper's explanation says it does")
    predict: dict[str, Literal["larger", "smaller"]] = Field(
        default_factory=dict, description="claim key -> how its paired difference should move against the main runs")
    seeds: int | None = Field(None, ge=2, description="default: the plan's seeds")
    losses: list[LossName] | None = Field(None, description="losses to rerun; default: those of the claims it predicts "
                                                            "(each claim compares two)")


@dataclass(frozen=True)
class Setting:
    """One point of a loss's grid: its learning rate times ``lr_factor``; the contrastive temperature, if set."""

    lr_factor: float = 1.0
    temperature: float | None = None

    @property
    def label(self) -> str:
        text = f"lr ×{factor_text(self.lr_factor)}"
        return text if self.temperature is None else f"{text}, τ {self.temperature:g}"


def factor_text(factor: float) -> str:
    """1/3 for 0.333..., 3 for 3.0: a grid's factors as the plan writes them."""
    fraction = Fraction(factor).limit_denominator(12)
    return str(fraction) if abs(float(fraction) - factor) < 1e-6 else f"{factor:g}"


class Selection(StrictModel):
    """The pre-registered grid each loss is tuned on, at the base budget (1x), decided on the data's
    validation street (``data.selection``, never the held-out scans): the setting of highest mean
    ``metric`` over ``seeds`` seeds, ties going to the earlier setting of the grid."""

    seeds: int = Field(2, ge=1, description="seeds per setting; they follow the main seeds, so no main run is a "
                                            "selection run")
    lr_factors: list[float] = Field(default_factory=lambda: [1 / 3, 1.0, 3.0],
                                    description="multiples of each loss's learning rate (optimizer.per_loss applied)")
    temperatures: list[float] = Field(default_factory=lambda: [0.04, 0.07, 0.1],
                                      description="contrastive only: the InfoNCE temperatures tried")
    metric: Literal["zero_shot_miou", "zero_shot_miou_seen", "zero_shot_miou_visible"] = Field(
        "zero_shot_miou", description="zero-shot summary key on the validation street (the grid is scored zero-shot only)")

    @model_validator(mode="after")
    def _check(self) -> "Selection":
        for name, values in (("lr_factors", self.lr_factors), ("temperatures", self.temperatures)):
            if not values or any(v <= 0 for v in values) or len(set(values)) != len(values):
                raise ValueError(f"selection.{name} {values}: give distinct positive values")
        return self

    def settings(self, loss: str) -> list[Setting]:
        """The grid of ``loss`` in its fixed order (temperature outer, learning rate inner)."""
        temperatures: list[float | None] = list(self.temperatures) if loss == "contrastive" else [None]
        return [Setting(f, t) for t in temperatures for f in self.lr_factors]


class ComparePlan(StrictModel):
    """What `relidar compare` runs and how it decides; fixed before any result is seen."""

    losses: list[LossName] = Field(default_factory=lambda: list(LOSS_NAMES))
    seeds: int = Field(5, ge=2, description="paired seeds per loss (train.seed, train.seed+1, ...)")
    zero_shot_metric: str = Field("zero_shot_miou", description="summary key of the zero-shot claims")
    few_shot_metric: str = Field("finetune_miou_1pct", description="summary key of the few-shot claims; out of "
                                                                   "distribution: the same with the ood_ prefix")
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    budgets: list[int] = Field(default_factory=lambda: [1], description="multiples of the config's steps each (loss, "
                                                                        "seed) is scored at; one run, continued")
    schedule: Literal["config", "constant"] = Field(
        "config", description="constant: the config's warm-up then its peak lr, so a smaller budget's checkpoint is "
                              "the shorter run; config: the config's schedule over the largest budget")
    flat_within: float | None = Field(None, ge=0.0, description="measure flattening: a curve has flattened at a budget "
                                                                "when the last quarter's improvement's interval lies "
                                                                "below this (mIoU, 0.01 = 1 point); none: not measured")
    selection: Selection | None = Field(None, description="per-loss grid decided on data.selection; none: every loss at "
                                                          "the config's setting")
    curve_points: int = Field(4, ge=0, description="checkpoints per run scored zero-shot for the learning curves")
    curve_scans: int | None = Field(4, ge=1, description="scans the learning-curve points are scored on: the validation "
                                                         "street's (data.selection), else the held-out ones")
    random_init: bool = Field(True, description="control: randomly initialised students, one per seed")
    fixed_setting: bool = Field(False, description="control (with selection): the main runs again at the config's own "
                                                   "setting for every loss")
    oracle: OracleConfig | None = Field(OracleConfig(), description="control: one free vector per true class, per loss")
    ablations: dict[str, RelationalWeights] = Field(default_factory=dict, description="relational-term ablations")
    ablation_seeds: int | None = Field(None, ge=2, description="default: the plan's seeds")
    teacher_switches: dict[str, TeacherSwitch] = Field(default_factory=dict)
    workers: int = Field(1, ge=1, description="runs in parallel (one torch thread each)")

    @model_validator(mode="after")
    def _check(self) -> "ComparePlan":
        if len(set(self.losses)) != len(self.losses) or not self.losses:
            raise ValueError(f"losses {self.losses}: give each loss once")
        if not self.budgets or sorted(set(self.budgets)) != self.budgets or self.budgets[0] < 1:
            raise ValueError(f"budgets {self.budgets}: give distinct multiples of the config's steps, >= 1, ascending")
        if self.flat_within is not None and not self.curve_points:
            raise ValueError("flat_within is measured on the learning curves; set curve_points >= 1")
        if self.fixed_setting and self.selection is None:
            raise ValueError("fixed_setting is the control of a per-loss selection; set selection or drop it")
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


def quarter_step(step: int) -> int:
    """Where the last quarter of a run of ``step`` steps starts (the flattening measure's first point)."""
    return max(1, round(0.75 * step))


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
