"""The neural consolidation policy: a network over host tokens that decides, each step, which hosts
consolidation may empty and which may receive VMs, on top of PABFD's moves.

Structure (the policy proposes, the rules dispose): overload relief is THR-MMT at the tuned threshold;
in the consolidation phase every host is one token, scored by the same small network (shared weights,
so it runs on 3 hosts or 10,000). The network reads the host's CPU use now and over the last hour (mean,
peak, spread, trend, from its VMs' own histories), how many VMs it holds and how large the largest is,
its size, the fleet's active share and load, and a learned forecast of the host's next-step demand: the
sum over its VMs of the 50 % and 90 % quantiles a small quantile network (:class:`Forecaster`, trained
on the training days' VMs) reads from each VM's last hour. Its two outputs are added to the tuned
gate's margin ``below - use``: a host is a candidate to empty when the first is positive (the highest first), may
receive when the second is. PABFD then empties candidates in that order, placing each VM on the open
host whose power rises least within the threshold; a host it cannot empty completely keeps its VMs.

With the output layer at zero the policy *is* its fallback, so ablation (a) is exact: the tuned gated
THR-MMT (``gated:0.95:1:0.5``), or the gated point the checkpoint names (``fallback_point``, e.g. the tuned
``gated:0.95:1:0.4:wake``, which charges a woken host its idle power); ablation (b) replaces the forecast
by the value now (``no-forecast``), ablation (c) every past sample, the forecast's input included
(``no-history``). Training
(:mod:`llmvirt.learn.train_consolidate_net`) moves the weights on the consolidation cost only. Deciding
needs numpy alone; the weights load from safetensors and are verified like every head's. Checkpoints of
feature spec 1 (no forecast) still load: their network reads the first ten columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.policy.balance_features import Forecaster
from llmvirt.policy.consolidate_head import GatedConsolidation, gated_point
from llmvirt.sim.engine import Simulation
from llmvirt.sim.overload import Thr

FEATURES_V1 = ("util_now", "util_mean_1h", "util_peak_1h", "util_std_1h", "util_trend_1h", "vms", "largest_vm",
               "host_size", "fleet_active", "fleet_util")  #: spec version 1 (no forecast), still read
FEATURES = (*FEATURES_V1, "forecast_q50", "forecast_q90")
HOUR = 12  #: 300 s samples in the history window (the forecaster's input too)
SPEC_NAME, SPEC_VERSION = "consolidate_net", 2  #: file stem and feature-spec version of the checkpoint
OLDER = {1: FEATURES_V1}  #: older feature specs a checkpoint may have (their networks read the first columns)
#: the fallback a checkpoint without ``fallback_point`` has: the tuned gated THR-MMT (policies/tuned.json), the start
FALLBACK = "gated:0.95:1:0.5"
MODES = ("full", "no-forecast", "no-history")  #: ablations (b) forecast -> value now, (c) no past samples


def vm_history(sim: Simulation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The placed VMs, their CPU use now and their last hour (:data:`HOUR` samples, oldest first, the
    forecaster's input), all as shares of each VM's own capacity (a VM with less history repeats its use now)."""
    placed = np.flatnonzero(sim.vm_host >= 0)
    now = sim.req[placed] / sim.dc.vm_mips[placed]
    short = np.arange(HOUR)[None, :] >= np.minimum(sim.history_len[placed], HOUR)[:, None]
    hist = np.where(short, now[:, None], sim.history[placed, :HOUR])
    return placed, now, hist[:, ::-1]


def host_features(sim: Simulation, mode: str = "full", forecaster: Forecaster | None = None) -> np.ndarray:
    """The tokens: one row of :data:`FEATURES` per host (shares of the host's own capacity); without a
    forecaster the forecast columns are the value now."""
    dc = sim.dc
    u = sim.util_mips / dc.total_mips
    placed, now, vm_hist = vm_history(sim)
    hosts = sim.vm_host[placed]
    share = dc.vm_mips[placed] / dc.total_mips[hosts]
    if mode == "no-history":  # every past sample is the value now, the forecaster's input too
        vm_hist, hist = np.repeat(now[:, None], HOUR, axis=1), np.repeat(u[:, None], HOUR, axis=1)
    else:
        hist = np.zeros((dc.n_hosts, HOUR))
        np.add.at(hist, hosts, vm_hist * share[:, None])
    q50 = q90 = now
    if forecaster is not None and mode != "no-forecast" and placed.size:
        q50, q90 = forecaster(vm_hist, np.ones(placed.size))
    f50, f90 = (np.bincount(hosts, q * share, minlength=dc.n_hosts) for q in (q50, q90))
    count = np.bincount(hosts, minlength=dc.n_hosts)
    largest = np.zeros(dc.n_hosts)
    np.maximum.at(largest, hosts, sim.req[placed] / dc.total_mips[hosts])
    active = count > 0
    fleet_util = float(sim.util_mips[active].sum() / max(dc.total_mips[active].sum(), 1.0))
    return np.column_stack([
        u, hist.mean(axis=1), hist.max(axis=1), hist.std(axis=1),
        hist[:, -3:].mean(axis=1) - hist[:, :-3].mean(axis=1), count / 10.0, largest,
        dc.total_mips / dc.total_mips.max(), np.full(dc.n_hosts, active.mean()), np.full(dc.n_hosts, fleet_util),
        f50, f90])


class GateNet:
    """The network's numpy inference: tanh hidden layer, two outputs (empty, receive)."""

    SHAPES = {"hidden.weight": ("H", "F"), "hidden.bias": ("H",), "out.weight": (2, "H"), "out.bias": (2,)}

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        """Check the shapes: ``hidden.weight`` (H, F) with F the features of this or an older spec,
        ``out.weight`` (2, H)."""
        from llmvirt.policy.weights import CheckpointError

        try:
            self.w1, self.b1 = arrays["hidden.weight"].astype(np.float64), arrays["hidden.bias"].astype(np.float64)
            self.w2, self.b2 = arrays["out.weight"].astype(np.float64), arrays["out.bias"].astype(np.float64)
        except KeyError as exc:
            raise CheckpointError(f"weights do not fit the consolidation network: missing {exc}") from None
        h = self.w1.shape[0]
        widths = {len(FEATURES), *(len(f) for f in OLDER.values())}
        if (self.w1.ndim != 2 or self.w1.shape[1] not in widths or self.b1.shape != (h,) or self.w2.shape != (2, h)
                or self.b2.shape != (2,)):
            raise CheckpointError("weights do not fit the consolidation network: wrong shapes")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(n, 2) outputs for (n, len(FEATURES)) tokens (an older network reads its first columns)."""
        return np.tanh(x[:, :self.w1.shape[1]] @ self.w1.T + self.b1) @ self.w2.T + self.b2


def zero_net(hidden: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A start: random hidden layer, output layer at zero (the policy is then exactly its fallback)."""
    return {"hidden.weight": rng.normal(0.0, 1.0 / np.sqrt(len(FEATURES)), (hidden, len(FEATURES))),
            "hidden.bias": rng.normal(0.0, 0.1, hidden), "out.weight": np.zeros((2, hidden)), "out.bias": np.zeros(2)}


@dataclass
class NeuralConsolidation(GatedConsolidation):
    """THR-MMT whose consolidation phase opens and closes hosts by the network's two outputs."""

    net: GateNet | None = None  #: None: the fallback (the tuned gate alone)
    mode: str = "full"  #: one of :data:`MODES` (the ablations)
    forecaster: Forecaster | None = None  #: the demand forecast (None: the value now)

    def _gates(self, sim: Simulation) -> tuple[np.ndarray, np.ndarray]:
        x = host_features(sim, self.mode, self.forecaster)
        margin = self.below - x[:, 0]
        out = self.net(x) if self.net is not None else np.zeros((x.shape[0], 2))
        self._x, self._empty = x, margin + out[:, 0]
        return self._empty < 0, margin + out[:, 1] < 0

    def _empty_order(self, eligible: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The highest emptying score first (CloudSim's ascending use when the network adds nothing; ties by
        use, then id)."""
        return eligible[np.lexsort((u[eligible], -self._empty[eligible]))]

    def _reason(self, src: int, demand: np.ndarray, use: np.ndarray) -> str:
        """Why a VM leaves host ``src``: its overload, or the network's choice to empty it, with what it read."""
        if demand[src] > self.detector.threshold:
            return super()._reason(src, demand, use)
        x = dict(zip(FEATURES, self._x[src], strict=True))
        forecasts = self.forecaster is not None and self.mode == "full"
        forecast = f", {x['forecast_q90']:.0%} forecast (90 % quantile)" if forecasts else ""
        return (f"energy saved: its host is emptied and can be switched off (CPU {x['util_now']:.0%} now, "
                f"{x['util_peak_1h']:.0%} peak in "
                f"the last hour{forecast}; the network's emptying score {self._empty[src]:+.2f}); "
                f"{self._destination()}")


def forecaster(arrays: dict[str, np.ndarray]) -> Forecaster | None:
    """The checkpoint's demand forecaster (``forecast.*`` arrays), None where it has none (spec version 1)."""
    from llmvirt.policy.weights import CheckpointError

    if not any(k.startswith("forecast.") for k in arrays):
        return None
    try:
        fc = Forecaster(arrays)
    except KeyError as exc:
        raise CheckpointError(f"weights do not fit the consolidation forecaster: missing {exc}") from None
    if fc.layers[0][0].shape[1] != HOUR + 1 or fc.layers[-1][0].shape[0] != 2:
        raise CheckpointError("weights do not fit the consolidation forecaster: wrong shapes")
    return fc


def policy(arrays: dict[str, np.ndarray] | None, name: str = "llmvirt-net", mode: str = "full",
           fallback: str = FALLBACK) -> NeuralConsolidation:
    """The policy with weights ``arrays`` (None: its fallback, the gated point ``fallback``: by default the tuned
    gated THR-MMT)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    thr, every, below, wake = gated_point(fallback)
    return NeuralConsolidation(Thr(thr), "mmt", name=name, every=every, below=below, wake_cost=wake,
                               net=GateNet(arrays) if arrays is not None else None, mode=mode,
                               forecaster=forecaster(arrays) if arrays is not None else None)


def load(directory: Path | str, name: str = "llmvirt-net", mode: str = "full") -> tuple[NeuralConsolidation,
                                                                                          dict[str, Any]]:
    """The policy of the checkpoint in ``directory`` (verified; read without torch), on the fallback its metadata
    names (``fallback_point``; older checkpoints: :data:`FALLBACK`)."""
    from llmvirt.policy.weights import CheckpointError, load_arrays

    arrays, meta = load_arrays(Path(directory), SPEC_NAME, SPEC_VERSION, list(FEATURES), OLDER)
    try:
        return policy(arrays, name, mode, str(meta.get("fallback_point", FALLBACK))), meta
    except ValueError as exc:
        raise CheckpointError(f"{directory}: {exc}") from None
