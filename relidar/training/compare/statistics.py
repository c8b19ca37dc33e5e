"""The statistics that decide the paper's claims, readable on their own.

Every claim compares losses over *paired* seeds: seed s of every loss starts from the same weights and
sees the same scans in the same order, so the per-seed difference ``better - worse`` removes what the
seed alone does. A claim "A > B" is decided on the mean of those differences with its Student-t interval
(:func:`paired_differences`); a correlation claim ("the gap correlates negatively with mIoU") on
Pearson's r over all runs with its Fisher-z interval (:func:`correlation_interval`).

What a verdict means (:func:`verdict`), at the plan's confidence (95 % by default):

* ``holds``: the whole interval lies on the claimed side of zero -- the data support the claim;
* ``reversed``: the whole interval lies on the other side -- the data support the opposite;
* ``undecided``: the interval contains zero (or could not be computed: fewer than 2 seeds, fewer than 4
  runs for r) -- these runs cannot tell, at this budget and with these seeds. It is not evidence of no
  effect: more seeds narrow the interval.

A verdict is about these runs' budget, teacher and data, nothing wider; with several budgets each claim
gets one per budget (:func:`at_budget`), and :func:`flattening` says whether the curves have stopped
rising there: the last quarter's improvement of zero-shot mIoU on the validation street, mean over seeds
with its interval -- *flattened* when the interval lies below the plan's ``flat_within``, *still rising*
when it lies above zero (and not below ``flat_within``), *undecided* otherwise. A ranking taken while a
curve still rises measures speed, not the representation.

The per-loss selection (:func:`select_settings`) reads only the grid's runs, scored on the validation
street: the setting of highest mean, ties to the earlier one of the grid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import numpy as np

from relidar.training.compare.plan import CompareError, ComparePlan, Setting, quarter_step, switch_losses

Verdict = Literal["holds", "reversed", "undecided"]


def _t_quantile(confidence: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, dof))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and the half-width of its Student-t interval (NaNs dropped; half-width NaN below 2 values)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": float("nan"), "half": float("nan"), "n": 0}
    half = _t_quantile(confidence, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size) if v.size >= 2 else float("nan")
    return {"mean": float(v.mean()), "half": float(half), "n": int(v.size)}


def correlation_interval(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Pearson r of (x, y) with its Fisher-z interval (pairs with a NaN dropped); Spearman's rho beside."""
    from scipy.stats import norm, spearmanr

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    n = int(a.size)
    if n < 4 or a.std() == 0 or b.std() == 0:
        return {"r": float("nan"), "lo": float("nan"), "hi": float("nan"), "rho": float("nan"), "n": n}
    r = float(np.corrcoef(a, b)[0, 1])
    z, dz = math.atanh(max(min(r, 0.999999), -0.999999)), float(norm.ppf(0.5 + confidence / 2)) / math.sqrt(n - 3)
    return {"r": r, "lo": math.tanh(z - dz), "hi": math.tanh(z + dz), "rho": float(spearmanr(a, b).statistic), "n": n}


def verdict(lo: float, hi: float, positive: bool = True) -> Verdict:
    """``holds`` when [lo, hi] lies on the claimed side of 0 (above it when ``positive``), ``reversed``
    when on the other side, ``undecided`` otherwise (or when the interval is unknown)."""
    if math.isnan(lo) or math.isnan(hi):
        return "undecided"
    if (lo > 0) if positive else (hi < 0):
        return "holds"
    if (hi < 0) if positive else (lo > 0):
        return "reversed"
    return "undecided"


def paired_differences(runs: Sequence[dict], metric: str, better: str, worse: str, group: str = "main",
                       confidence: float = 0.95) -> dict[str, Any]:
    """Per-seed differences ``better - worse`` on ``metric`` within ``group`` (seeds both losses ran)."""
    by = {(r["loss"], r["seed"]): r["summary"].get(metric, float("nan")) for r in runs if r["group"] == group}
    seeds = sorted({s for (loss, s) in by if loss == better} & {s for (loss, s) in by if loss == worse})
    diffs = [by[(better, s)] - by[(worse, s)] for s in seeds]
    stats = mean_interval(diffs, confidence)
    return {**stats, "lo": stats["mean"] - stats["half"], "hi": stats["mean"] + stats["half"], "seeds": seeds,
            "diffs": diffs}


def decide(plan: ComparePlan, runs: Sequence[dict], group: str = "main") -> list[dict[str, Any]]:
    """Each claim of ``plan`` on ``runs`` of ``group``: its statistic, interval and verdict."""
    out = []
    rows = [r for r in runs if r["group"] == group]
    for claim in plan.claims():
        if claim.kind == "greater":
            d = paired_differences(rows, claim.metric, claim.better, claim.worse, group, plan.confidence)
            out.append({"claim": claim.key, "text": claim.text, "metric": claim.metric, "statistic": "paired difference",
                        "value": d["mean"], "lo": d["lo"], "hi": d["hi"], "n": d["n"],
                        "verdict": verdict(d["lo"], d["hi"], positive=True)})
        else:
            c = correlation_interval([r["summary"].get("gap", float("nan")) for r in rows],
                                     [r["summary"].get(claim.metric, float("nan")) for r in rows], plan.confidence)
            out.append({"claim": claim.key, "text": claim.text, "metric": claim.metric, "statistic": "Pearson r",
                        "value": c["r"], "lo": c["lo"], "hi": c["hi"], "n": c["n"], "rho": c["rho"],
                        "verdict": verdict(c["lo"], c["hi"], positive=False)})
    return out


def aggregate(runs: Sequence[dict], confidence: float = 0.95) -> dict[str, dict[str, dict[str, float]]]:
    """(group/loss label) -> summary key -> mean and interval over seeds."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for label in dict.fromkeys(run_label(r) for r in runs):
        rows = [r["summary"] for r in runs if run_label(r) == label]
        keys = dict.fromkeys(k for row in rows for k in row)
        table[label] = {k: mean_interval([row.get(k, float("nan")) for row in rows], confidence) for k in keys}
    return table


def run_label(run: dict) -> str:
    return run["loss"] if run["group"] == "main" else f"{run['group']}: {run['loss']}"


def switch_analysis(plan: ComparePlan, runs: Sequence[dict]) -> list[dict[str, Any]]:
    """For each teacher switch and each paired claim: the difference under the switch, under the base
    teacher, the change (paired by seed) and whether it moved as the plan predicted."""
    out = []
    for name, switch in plan.teacher_switches.items():
        group = f"switch {name}"
        rerun = set(switch_losses(plan, switch))
        for claim in plan.claims():
            if claim.kind != "greater" or not {claim.better, claim.worse} <= rerun:
                continue
            base = paired_differences(runs, claim.metric, claim.better, claim.worse, "main", plan.confidence)
            under = paired_differences(runs, claim.metric, claim.better, claim.worse, group, plan.confidence)
            common = sorted(set(base["seeds"]) & set(under["seeds"]))
            change = mean_interval([under["diffs"][under["seeds"].index(s)] - base["diffs"][base["seeds"].index(s)]
                                    for s in common], plan.confidence)
            lo, hi = change["mean"] - change["half"], change["mean"] + change["half"]
            expected = switch.predict.get(claim.key)
            moved = verdict(lo, hi, positive=True)  # holds: larger; reversed: smaller
            direction = {"holds": "larger", "reversed": "smaller", "undecided": "no clear change"}[moved]
            outcome = ("no prediction" if expected is None else
                       "as predicted" if direction == expected else
                       "undecided" if moved == "undecided" else "against the prediction")
            out.append({"switch": name, "claim": claim.key, "text": claim.text, "base": base["mean"], "under": under["mean"],
                        "change": change["mean"], "lo": lo, "hi": hi, "n": change["n"], "moved": direction,
                        "predicted": expected, "outcome": outcome})
    return out


def at_budget(runs: Sequence[dict], budget: int) -> list[dict]:
    """The rows as they stand at ``budget``: a distilled run's summary at that budget's checkpoint (its
    ``budget`` and ``step`` added); rows without budgets (untrained students, oracles) as they are."""
    out = []
    for r in runs:
        if "budgets" not in r:
            out.append(r)
            continue
        for b in r["budgets"]:
            if b["budget"] == budget:
                out.append({**r, "summary": b["summary"], "budget": budget, "step": b["step"]})
    return out


def flat_state(lo: float, hi: float, within: float) -> str:
    """``flattened`` when the improvement's interval lies below ``within``, ``still rising`` when above 0."""
    if math.isnan(lo) or math.isnan(hi):
        return "undecided"
    if hi < within:
        return "flattened"
    return "still rising" if lo > 0 else "undecided"


def flattening(plan: ComparePlan, runs: Sequence[dict], group: str = "main") -> list[dict[str, Any]]:
    """Per loss and budget of ``group``: the last quarter's improvement of the learning curve (from 3/4 of the
    budget's steps to its end), mean over seeds with its interval, and whether the curve has flattened."""
    if plan.flat_within is None:
        return []
    rows = [r for r in runs if r["group"] == group and r.get("curve") and r.get("budgets")]
    out = []
    for loss in dict.fromkeys(r["loss"] for r in rows):
        for budget in plan.budgets:
            diffs = []
            for r in (x for x in rows if x["loss"] == loss):
                curve = {int(step): value for step, value in r["curve"]}
                for b in r["budgets"]:
                    if b["budget"] == budget and b["step"] in curve and quarter_step(b["step"]) in curve:
                        diffs.append(curve[b["step"]] - curve[quarter_step(b["step"])])
            stats = mean_interval(diffs, plan.confidence)
            lo, hi = stats["mean"] - stats["half"], stats["mean"] + stats["half"]
            out.append({"group": group, "loss": loss, "budget": budget, "improvement": stats["mean"], "lo": lo,
                        "hi": hi, "n": stats["n"], "state": flat_state(lo, hi, plan.flat_within)})
    return out


def select_settings(plan: ComparePlan, runs: Sequence[dict]) -> tuple[dict[str, Setting], list[dict[str, Any]]]:
    """The setting chosen per loss from the grid's runs (group ``select``, scored on the validation street),
    and the grid's table: every setting's scores over seeds, the choice, and whether it lies on the grid's
    edge (the best setting may then lie outside it)."""
    if plan.selection is None:
        return {}, []
    metric = plan.selection.metric
    rows = [r for r in runs if r["group"] == "select"]
    chosen: dict[str, Setting] = {}
    table: list[dict[str, Any]] = []
    for loss in plan.losses:
        grid = plan.selection.settings(loss)
        entries = []
        for setting in grid:
            values = [r["summary"].get(metric, float("nan")) for r in rows
                      if r["loss"] == loss and Setting(r["setting"]["lr_factor"], r["setting"]["temperature"]) == setting]
            entries.append({"loss": loss, "setting": {**asdict(setting), "label": setting.label}, "values": values,
                            **mean_interval(values, plan.confidence), "chosen": False, "edge": False})
        scored = [i for i, e in enumerate(entries) if not math.isnan(e["mean"])]
        if not scored:
            raise CompareError(f"selection: no setting of {loss} has a finite `{metric}` on the validation street")
        best = max(scored, key=lambda i: (entries[i]["mean"], -i))
        chosen[loss] = grid[best]
        factors, temperatures = sorted(plan.selection.lr_factors), sorted(plan.selection.temperatures)
        entries[best]["chosen"] = True
        entries[best]["edge"] = (len(factors) > 1 and grid[best].lr_factor in (factors[0], factors[-1])) or (
            grid[best].temperature is not None and len(temperatures) > 1
            and grid[best].temperature in (temperatures[0], temperatures[-1]))
        table += entries
    return chosen, table


@dataclass(frozen=True)
class Findings:
    """Everything the report states, computed from the runs: per budget the table over seeds, the claims
    (main runs, and the fixed-setting control) and the switches; the curves' flattening; the grid."""

    budgets: list[int]
    tables: dict[int, dict[str, dict[str, dict[str, float]]]]
    claims: dict[int, list[dict[str, Any]]]
    fixed_claims: dict[int, list[dict[str, Any]]]
    switches: dict[int, list[dict[str, Any]]]
    flattening: list[dict[str, Any]]
    grid: list[dict[str, Any]]
    chosen: dict[str, dict[str, Any]]


def findings(plan: ComparePlan, runs: Sequence[dict]) -> Findings:
    """:class:`Findings` of ``runs`` (rows of every job, the selection's included) under ``plan``."""
    chosen, grid = select_settings(plan, runs)
    rest = [r for r in runs if r["group"] != "select"]
    by_budget = {b: at_budget(rest, b) for b in plan.budgets}
    return Findings(
        budgets=list(plan.budgets),
        tables={b: aggregate(rows, plan.confidence) for b, rows in by_budget.items()},
        claims={b: decide(plan, rows) for b, rows in by_budget.items()},
        fixed_claims={b: decide(plan, rows, group="fixed") for b, rows in by_budget.items()} if plan.fixed_setting else {},
        switches={b: switch_analysis(plan, rows) for b, rows in by_budget.items()},
        flattening=flattening(plan, rest) + (flattening(plan, rest, "fixed") if plan.fixed_setting else []),
        grid=grid,
        chosen={loss: {**asdict(s), "label": s.label} for loss, s in chosen.items()},
    )
