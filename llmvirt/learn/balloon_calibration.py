"""The balloon head's operating point, chosen by cross-validation over groups of training VMs (issue 16).

The operating point (quantile, margin, pressure feedback) decides how much memory the head dares to
take. It used to be chosen on all training VMs at once, with a safety factor picked after seeing
held-out results. Now:

1. The groups are the training VMs of each trace, July week 1 and August (the split of
   :func:`llmvirt.sim.split.split`, the same for every head); ``k`` > 1 cuts each further by a
   hash of the VM's name. (Smaller groups make MOM's own figures too thin to compare with: a group
   whose hosts never run short gives MOM nothing to reclaim and no pressure.)
2. Every point of a grid runs the memory scenario on every group, beside MOM on the same group.
3. A point is feasible when its guest-pressure time is at most ``pressure_factor`` x MOM's on its
   *worst* group; among feasible points the one with the largest worst-group reclaimed memory
   (as a multiple of MOM's) wins. The held-back VMs are not read.

The forecast depends on the use history only, so it is computed once per group and shared by every
point (:class:`~llmvirt.policy.sim_adapter.LearnedBalloon` ``forecasts``).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llmvirt.policy.balloon_feedback import Feedback
from llmvirt.policy.balloon_head import QUANTILES, BalloonForecaster, BalloonHead, OperatingPoint
from llmvirt.policy.sim_adapter import LearnedBalloon
from llmvirt.sim.field_balloons import MomBalloon
from llmvirt.sim.fleet import MEMORY_SETUP, FleetSim
from llmvirt.sim.traces import UsageTrace

FOLDS = 1  #: groups of training VMs per trace (the traces themselves are the folds)


def fold_of(names: tuple[str, ...], k: int = FOLDS) -> np.ndarray:
    """Each VM's group, 0..k-1, by a hash of its name (independent of the train/held-out hash)."""
    return np.array([int(hashlib.sha256(f"fold:{n}".encode()).hexdigest()[:8], 16) % k for n in names])


def forecasts(model: BalloonForecaster, part: UsageTrace) -> np.ndarray:
    """The forecaster's quantiles for every (VM, step) of ``part``: (VMs, steps, quantiles)."""
    from llmvirt.learn.train_balloon import trace_features

    feats, _ = trace_features(part)
    n, t, f = feats.shape
    with torch.no_grad():
        q = model(torch.from_numpy(feats.reshape(n * t, f))).numpy().astype(np.float64)
    return q.reshape(n, t, len(QUANTILES))


def max_last_day(part: UsageTrace) -> np.ndarray:
    """The ablation's "forecast": the maximum use over the last day, in every quantile slot."""
    from llmvirt.learn.train_balloon import trace_features

    feats, _ = trace_features(part)
    return np.repeat(feats[:, :, 2:3].astype(np.float64), len(QUANTILES), axis=2)


def memory_run(part: UsageTrace, balloon: Any) -> dict[str, float]:
    """The memory scenario's summary for one balloon policy on ``part``."""
    return FleetSim(part, MEMORY_SETUP).run(balloon=balloon).summary()


@dataclass
class Group:
    """One group of training VMs with what every point reuses: MOM's figures and the forecasts."""

    label: str  #: trace and fold, e.g. ``bitbrains-jul/0``
    part: UsageTrace
    mom: dict[str, float]
    need: np.ndarray  #: (VMs, steps, quantiles): forecasts or the max-of-last-day ablation


def groups(parts: dict[str, UsageTrace], need_of: Any, k: int = FOLDS) -> list[Group]:
    """The cross-validation groups of every trace's training VMs, each with MOM's run and its ``need``."""
    out = []
    for label, trace in parts.items():
        fold = fold_of(trace.names, k)
        for f in range(k):
            part = trace.select(np.flatnonzero(fold == f))
            name = label if k == 1 else f"{label}/{f}"
            out.append(Group(name, part, memory_run(part, MomBalloon()), need_of(part)))
    return out


def feedback_grid(quantiles: tuple[int, ...] = (3,), bases: tuple[float, ...] = (0.3, 0.45, 0.6),
                  widens: tuple[float, ...] = (3.0,), narrows: tuple[float, ...] = (0.99, 0.995, 0.998),
                  floors: tuple[float, ...] = (0.02, 0.05, 0.1), ceiling: float = 1.0) -> list[OperatingPoint]:
    """Operating points with pressure feedback (the margin field is unused with feedback)."""
    return [OperatingPoint(q, b, Feedback(base=b, widen=w, narrow=n, floor=f, ceiling=ceiling))
            for q, b, w, n, f in itertools.product(quantiles, bases, widens, narrows, floors) if f <= b]


def fixed_grid(quantiles: tuple[int, ...] = (2, 3),
               margins: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)) -> list[OperatingPoint]:
    """Operating points with one fixed margin for every VM (the feedback ablation)."""
    return [OperatingPoint(q, m) for q, m in itertools.product(quantiles, margins)]


def ratios(res: dict[str, float], mom: dict[str, float]) -> tuple[float, float]:
    """(reclaimed, pressure) as multiples of MOM's; MOM without pressure counts any pressure as infinite."""
    rec = res["reclaimed_gib_avg"] / mom["reclaimed_gib_avg"] if mom["reclaimed_gib_avg"] > 0 else float("inf")
    if mom["guest_pressure_h"] > 0:
        pres = res["guest_pressure_h"] / mom["guest_pressure_h"]
    else:
        pres = 0.0 if res["guest_pressure_h"] == 0 else float("inf")
    return rec, pres


def cross_validate(model: BalloonForecaster, grid: list[OperatingPoint], gs: list[Group]
                   ) -> list[dict[str, Any]]:
    """Every point on every group: its figures and its multiples of MOM's."""
    rows = []
    for point in grid:
        per = []
        for g in gs:
            res = memory_run(g.part, LearnedBalloon(head=BalloonHead(model, point), forecasts=g.need))
            rec, pres = ratios(res, g.mom)
            per.append({"group": g.label, "reclaimed_gib_avg": res["reclaimed_gib_avg"],
                        "guest_pressure_h": res["guest_pressure_h"], "x_mom_reclaimed": rec, "x_mom_pressure": pres})
        rows.append({"point": point.describe(), "groups": per,
                     "worst_x_mom_reclaimed": min(p["x_mom_reclaimed"] for p in per),
                     "worst_x_mom_pressure": max(p["x_mom_pressure"] for p in per)})
    return rows


def choose(grid: list[OperatingPoint], rows: list[dict[str, Any]], pressure_factor: float = 1.0
           ) -> tuple[OperatingPoint, dict[str, Any]]:
    """The feasible point (worst-group pressure at most ``pressure_factor`` x MOM's) with the largest
    worst-group reclaimed multiple; with none feasible, the one with the least worst-group pressure."""
    feasible = [i for i, r in enumerate(rows) if r["worst_x_mom_pressure"] <= pressure_factor]
    if feasible:
        best = max(feasible, key=lambda i: rows[i]["worst_x_mom_reclaimed"])
    else:
        best = min(range(len(rows)), key=lambda i: rows[i]["worst_x_mom_pressure"])
    return grid[best], rows[best]
