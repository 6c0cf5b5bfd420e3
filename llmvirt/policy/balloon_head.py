"""The balloon head: forecast a guest's memory need as quantiles, size its balloon from it.

Input: a VM's memory-use history as fractions of its maximum, one sample per 300 s step (the
trace's interval, and the cron interval the operations guide recommends). Features:
use now, the maximum over the last hour, the last day and all history seen, the day's mean,
standard deviation and largest one-step rise, and the VM's size. Output: the quantiles
:data:`QUANTILES` of the next step's use, monotone by construction, trained with the pinball loss
on the training split of the Bitbrains VMs.

The head only *proposes*: target = maximum x (chosen quantile + margin). The quantile and the
margin are the operating point, chosen on the training VMs in the memory scenario (the most
memory reclaimed with no more guest pressure than MOM's rules there) and stored in the head's
metadata. Every proposal then passes :func:`llmvirt.policy.tuning.safe_targets` (floor, step
limit, immediate deflation under pressure), in the simulator and on real hosts alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmvirt.model.action import Action
from llmvirt.model.cluster import Cluster
from llmvirt.policy import balloon_feedback
from llmvirt.policy.balloon_feedback import Feedback
from llmvirt.policy.checkpoint import HeadSpec

HOUR, DAY = 12, 288  #: windows in 300 s steps
QUANTILES = (0.5, 0.9, 0.99, 0.999)  #: forecast quantiles of the next step's use
BALLOON_FEATURES = ("use_now", "max_1h", "max_1d", "max_seen", "mean_1d", "std_1d", "rise_1d", "log2_size_gib")
BALLOON_SPEC_VERSION = 1


class BalloonForecaster(nn.Module):
    """MLP: features -> monotone quantiles of the next step's memory use (fraction of the maximum)."""

    def __init__(self, n_features: int = len(BALLOON_FEATURES), hidden: int = 32,
                 n_quantiles: int = len(QUANTILES)) -> None:
        """Layers sized by the arguments."""
        super().__init__()
        self.n_features, self.hidden, self.n_quantiles = n_features, hidden, n_quantiles
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_quantiles))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantiles, shape (n, n_quantiles), non-decreasing along the last axis."""
        raw = self.net(x)
        steps = nn.functional.softplus(raw[:, 1:])
        return torch.cat([raw[:, :1], raw[:, :1] + torch.cumsum(steps, dim=1)], dim=1)

    def config(self) -> dict[str, int]:
        """Constructor parameters, stored in the checkpoint metadata."""
        return {"n_features": self.n_features, "hidden": self.hidden, "n_quantiles": self.n_quantiles}


SPEC = HeadSpec("balloon", BALLOON_SPEC_VERSION, BALLOON_FEATURES,
                lambda c: BalloonForecaster(int(c["n_features"]), int(c["hidden"]), int(c["n_quantiles"])))


def window_features(window: np.ndarray, seen_max: np.ndarray, cap_mib: np.ndarray) -> np.ndarray:
    """Features from use fractions ``window`` (n VMs x DAY steps, oldest first, left-padded with the
    first sample), the maximum ever seen and the VMs' sizes."""
    day = window[:, -DAY:]
    rise = np.diff(day, axis=1).max(axis=1, initial=0.0)
    return np.stack([day[:, -1], day[:, -HOUR:].max(axis=1), day.max(axis=1), np.maximum(seen_max, day.max(axis=1)),
                     day.mean(axis=1), day.std(axis=1), np.maximum(rise, 0.0),
                     np.log2(np.maximum(cap_mib, 1.0) / 1024.0) / 6.0], axis=1).astype(np.float32)


def pad_history(series: list[float] | np.ndarray, length: int = DAY) -> np.ndarray:
    """The last ``length`` samples, left-padded with the first one (a short history looks flat)."""
    arr = np.asarray(series, dtype=np.float64)[-length:]
    if arr.size == 0:
        raise ValueError("empty history")
    return np.concatenate([np.full(length - arr.size, arr[0]), arr])


@dataclass
class OperatingPoint:
    """How forecasts become targets: target = maximum x min(1, quantile + margin). With ``feedback``
    the margin is each VM's own, from its recent pressure (:mod:`llmvirt.policy.balloon_feedback`)."""

    quantile: int = len(QUANTILES) - 1  #: index into QUANTILES
    margin: float = 0.1  #: added headroom, fraction of the maximum (without feedback)
    feedback: Feedback | None = None  #: per-VM margins from pressure feedback

    def margins(self, pressure: np.ndarray | None, n: int) -> np.ndarray:
        """The margin of each of ``n`` VMs given their pressure flags (VMs x steps, oldest first)."""
        if self.feedback is None:
            return np.full(n, self.margin)
        if pressure is None:
            return np.full(n, self.feedback.base)
        return balloon_feedback.margins(pressure, self.feedback)

    def describe(self) -> dict[str, Any]:
        """For the checkpoint metadata and reports."""
        out: dict[str, Any] = {"quantile": self.quantile, "margin": self.margin}
        if self.feedback is not None:
            out["feedback"] = self.feedback.as_dict()
        return out


class BalloonHead:
    """A trained forecaster with its operating point."""

    def __init__(self, model: BalloonForecaster, point: OperatingPoint, meta: dict[str, Any] | None = None) -> None:
        """Wrap ``model``; ``point`` turns quantiles into targets."""
        self.model, self.point, self.meta = model, point, meta or {}

    def forecast(self, feats: np.ndarray) -> np.ndarray:
        """Quantiles of the next step's use fraction, (n, len(QUANTILES))."""
        with torch.no_grad():
            return self.model(torch.from_numpy(np.asarray(feats, dtype=np.float32))).numpy().astype(np.float64)

    def propose(self, feats: np.ndarray, cap_mib: np.ndarray, pressure: np.ndarray | None = None,
                quantiles: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Proposed balloon sizes and the forecast need (the chosen quantile), MiB, before the safety limits.
        ``pressure``: each VM's pressure flags (VMs x steps) for the feedback margin; ``quantiles``: the
        forecast when it was computed already (it depends on the use history only)."""
        q = self.forecast(feats) if quantiles is None else quantiles
        need = np.maximum(q[:, self.point.quantile], feats[:, 0])
        margin = self.point.margins(pressure, len(need))
        return np.minimum(1.0, need + margin) * cap_mib, np.minimum(need, 1.0) * cap_mib


def fit_proposals(proposed: np.ndarray, need: np.ndarray, used: np.ndarray, cap: np.ndarray, host_of: np.ndarray,
                  host_mem: np.ndarray) -> np.ndarray:
    """Keep each host's balloons within its budget: give up the margin above the forecast need first,
    then the need above the safety floor (use + 20 % of the size)."""
    from llmvirt.policy import tuning

    floor = np.minimum(used / (1 - tuning.FLOOR_MARGIN), cap)
    out = tuning.fit_to_hosts(proposed, np.maximum(need, floor), host_of, host_mem)
    return tuning.fit_to_hosts(out, floor, host_of, host_mem)


def load(directory: Path | str) -> BalloonHead:
    """The balloon head of the policy in ``directory`` (verified like every checkpoint)."""
    from llmvirt.policy import checkpoint

    model, meta = checkpoint.load_head(Path(directory), SPEC)
    op = meta.get("operating_point", {})
    try:
        fb = Feedback.from_dict(op["feedback"]) if op.get("feedback") is not None else None
        point = OperatingPoint(int(op["quantile"]), float(op["margin"]), fb)
    except (KeyError, TypeError, ValueError):
        raise checkpoint.CheckpointError(f"{directory}: balloon head has no valid operating point") from None
    if not 0 <= point.quantile < len(QUANTILES) or not 0.0 <= point.margin <= 1.0:
        raise checkpoint.CheckpointError(f"{directory}: balloon head operating point out of range: {op}")
    return BalloonHead(model, point, meta)  # type: ignore[arg-type]


def plan(cluster: Cluster, history: dict[str, list[tuple[float, float, float]]], head: BalloonHead,
         previous: Cluster | None = None, pressure: dict[str, list[bool]] | None = None,
         unchanged: dict[str, str] | None = None) -> list[Action]:
    """Balloon targets for real hosts: the head's proposals, fitted to each host's budget and passed
    through the safety limits. ``history`` is :func:`llmvirt.store.snapshots.vm_usage_history`;
    ``pressure`` each VM's pressure flags per scan (:func:`llmvirt.store.snapshots.vm_pressure_history`)
    for the feedback margin. Returns a balloon action for every VM whose balloon should change."""
    from llmvirt.policy import tuning

    out: list[Action] = []
    for host in cluster.hosts:
        vms = [v for v in host.vms if v.running and v.balloon.current_mib]
        if not vms:
            continue
        cap = np.array([float(v.balloon.maximum_mib or v.memory_mib) for v in vms])
        used = np.array([tuning.used_mib(v) for v in vms])
        series = [[u for _, u, _ in history.get(v.uuid, [])] or [used[i]] for i, v in enumerate(vms)]
        window = np.stack([pad_history(np.asarray(s) / cap[i]) for i, s in enumerate(series)])
        seen = np.array([max(s) for s in series]) / cap
        flags = None
        if pressure is not None:
            rows = [pressure.get(v.uuid, []) for v in vms]
            width = max((len(r) for r in rows), default=0)
            flags = np.array([[False] * (width - len(r)) + list(r) for r in rows], dtype=bool).reshape(len(vms), width)
        margin = head.point.margins(flags, len(vms))
        proposed, need = head.propose(window_features(window, seen, cap), cap, flags)
        proposed = fit_proposals(proposed, need, used, cap, np.zeros(len(vms), dtype=np.int64),
                                 np.array([float(host.memory_mib)]))
        for i, vm in enumerate(vms):
            prev_host = previous.host(host.name) if previous else None
            under = tuning.under_pressure(vm, prev_host.vm(vm.name) if prev_host else None)
            target = tuning.safe_target(vm, float(proposed[i]), under)
            why = ("guest under memory pressure: deflate" if under else
                   f"forecast need {need[i]:.0f} MiB (q{QUANTILES[head.point.quantile]}) + "
                   f"{100 * margin[i]:.0f} % margin{' (pressure feedback)' if head.point.feedback else ''}: "
                   f"toward {proposed[i]:.0f} MiB")
            if target is None:
                if unchanged is not None:
                    unchanged[vm.name] = f"keeps {vm.balloon.current_mib} MiB: {why}"
                continue
            out.append(Action.balloon(vm.name, host.name, target, why, uuid=vm.uuid))
    return out
