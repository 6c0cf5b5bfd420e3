"""The neural consolidation policy: a network over host tokens that decides, each step, which hosts
consolidation may empty and which may receive VMs, on top of PABFD's moves.

Structure (the policy proposes, the rules dispose): overload relief is THR-MMT at the tuned threshold;
in the consolidation phase every host is one token, scored by the same small network (shared weights,
so it runs on 3 hosts or 10,000). The network reads the host's CPU use now and over the last hour (mean,
peak, spread, trend, from its VMs' own histories), how many VMs it holds and how large the largest is,
its size, and the fleet's active share and load. Its two outputs are added to the tuned gate's margin
``below - use``: a host is a candidate to empty when the first is positive (the highest first), may
receive when the second is. PABFD then empties candidates in that order, placing each VM on the open
host whose power rises least within the threshold; a host it cannot empty completely keeps its VMs.

With the output layer at zero the policy *is* the tuned gated THR-MMT (``gated:0.95:1:0.5``), its
fallback, so ablation (a) is exact; training (:mod:`llmvirt.learn.train_consolidate_net`) moves the
weights on the consolidation cost only. Deciding needs numpy alone; the weights load from safetensors
and are verified like every head's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.policy.consolidate_head import GatedConsolidation
from llmvirt.sim.engine import Simulation
from llmvirt.sim.overload import Thr

FEATURES = ("util_now", "util_mean_1h", "util_peak_1h", "util_std_1h", "util_trend_1h", "vms", "largest_vm",
            "host_size", "fleet_active", "fleet_util")
HOUR = 12  #: 300 s samples in the history window
SPEC_NAME, SPEC_VERSION = "consolidate_net", 1  #: file stem and feature-spec version of the checkpoint
FALLBACK = (0.95, 0.5)  #: the tuned gated THR-MMT's threshold and gate (policies/tuned.json), the start
MODES = ("full", "last-value")  #: ablation (b): every past sample replaced by the value now


def host_history(sim: Simulation) -> np.ndarray:
    """Each host's CPU use as a share of its capacity over the last hour, most recent first, from its VMs'
    own histories (a VM with less history repeats its current use)."""
    dc = sim.dc
    placed = np.flatnonzero(sim.vm_host >= 0)
    hosts = sim.vm_host[placed]
    now = sim.req[placed] / dc.vm_mips[placed]
    hist = sim.history[placed, :HOUR]
    short = np.arange(HOUR)[None, :] >= np.minimum(sim.history_len[placed], HOUR)[:, None]
    hist = np.where(short, now[:, None], hist) * (dc.vm_mips[placed] / dc.total_mips[hosts])[:, None]
    out = np.zeros((dc.n_hosts, HOUR))
    np.add.at(out, hosts, hist)
    return out


def host_features(sim: Simulation, mode: str = "full") -> np.ndarray:
    """The tokens: one row of :data:`FEATURES` per host (shares of the host's own capacity)."""
    dc = sim.dc
    u = sim.util_mips / dc.total_mips
    hist = host_history(sim) if mode == "full" else np.repeat(u[:, None], HOUR, axis=1)
    placed = np.flatnonzero(sim.vm_host >= 0)
    hosts = sim.vm_host[placed]
    count = np.bincount(hosts, minlength=dc.n_hosts)
    largest = np.zeros(dc.n_hosts)
    np.maximum.at(largest, hosts, sim.req[placed] / dc.total_mips[hosts])
    active = count > 0
    fleet_util = float(sim.util_mips[active].sum() / max(dc.total_mips[active].sum(), 1.0))
    return np.column_stack([
        u, hist.mean(axis=1), hist.max(axis=1), hist.std(axis=1),
        hist[:, :3].mean(axis=1) - hist[:, 3:].mean(axis=1), count / 10.0, largest,
        dc.total_mips / dc.total_mips.max(), np.full(dc.n_hosts, active.mean()), np.full(dc.n_hosts, fleet_util)])


class GateNet:
    """The network's numpy inference: tanh hidden layer, two outputs (empty, receive)."""

    SHAPES = {"hidden.weight": ("H", "F"), "hidden.bias": ("H",), "out.weight": (2, "H"), "out.bias": (2,)}

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        """Check the shapes: ``hidden.weight`` (H, len(FEATURES)), ``out.weight`` (2, H)."""
        from llmvirt.policy.weights import CheckpointError

        try:
            self.w1, self.b1 = arrays["hidden.weight"].astype(np.float64), arrays["hidden.bias"].astype(np.float64)
            self.w2, self.b2 = arrays["out.weight"].astype(np.float64), arrays["out.bias"].astype(np.float64)
        except KeyError as exc:
            raise CheckpointError(f"weights do not fit the consolidation network: missing {exc}") from None
        h = self.w1.shape[0]
        if (self.w1.shape != (h, len(FEATURES)) or self.b1.shape != (h,) or self.w2.shape != (2, h)
                or self.b2.shape != (2,)):
            raise CheckpointError("weights do not fit the consolidation network: wrong shapes")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(n, 2) outputs for (n, len(FEATURES)) tokens."""
        return np.tanh(x @ self.w1.T + self.b1) @ self.w2.T + self.b2


def zero_net(hidden: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A start: random hidden layer, output layer at zero (the policy is then exactly its fallback)."""
    return {"hidden.weight": rng.normal(0.0, 1.0 / np.sqrt(len(FEATURES)), (hidden, len(FEATURES))),
            "hidden.bias": rng.normal(0.0, 0.1, hidden), "out.weight": np.zeros((2, hidden)), "out.bias": np.zeros(2)}


@dataclass
class NeuralConsolidation(GatedConsolidation):
    """THR-MMT whose consolidation phase opens and closes hosts by the network's two outputs."""

    net: GateNet | None = None  #: None: the fallback (the tuned gate alone)
    mode: str = "full"  #: "last-value": ablation (b)
    reasons: dict[int, str] = field(default_factory=dict)  #: per VM moved by the last consolidation: why

    def _gates(self, sim: Simulation) -> tuple[np.ndarray, np.ndarray]:
        x = host_features(sim, self.mode)
        margin = self.below - x[:, 0]
        out = self.net(x) if self.net is not None else np.zeros((x.shape[0], 2))
        self._x, self._empty = x, margin + out[:, 0]
        return self._empty < 0, margin + out[:, 1] < 0

    def _empty_order(self, eligible: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The highest emptying score first (CloudSim's ascending use when the network adds nothing; ties by
        use, then id)."""
        return eligible[np.lexsort((u[eligible], -self._empty[eligible]))]

    def decide(self, sim: Simulation, t: float) -> list[tuple[int, int]]:
        """One step, with a reason per move naming what drove it."""
        dc = sim.dc
        placed = sim.vm_host >= 0
        demand = np.bincount(sim.vm_host[placed], sim.req[placed], minlength=dc.n_hosts) / dc.total_mips
        plan = super().decide(sim, t)
        self.reasons = {vm: self._reason(int(sim.vm_host[vm]), demand) for vm, _ in plan}
        return plan

    def _reason(self, src: int, demand: np.ndarray) -> str:
        if demand[src] > self.detector.threshold:
            return (f"overload avoided: its host's CPU demand is {demand[src]:.0%}, above the "
                    f"{self.detector.threshold:.0%} threshold; the destination's power rises least")
        x = self._x[src]
        return (f"energy saved: its host is emptied and can be switched off (CPU {x[0]:.0%} now, {x[2]:.0%} peak in "
                f"the last hour; the network's emptying score {self._empty[src]:+.2f}); the destination's power rises "
                "least")


def policy(arrays: dict[str, np.ndarray] | None, name: str = "llmvirt-net", mode: str = "full") -> NeuralConsolidation:
    """The policy with weights ``arrays`` (None: its fallback, the tuned gated THR-MMT)."""
    thr, below = FALLBACK
    return NeuralConsolidation(Thr(thr), "mmt", name=name, every=1, below=below,
                               net=GateNet(arrays) if arrays is not None else None, mode=mode)


def load(directory: Path | str, name: str = "llmvirt-net", mode: str = "full") -> tuple[NeuralConsolidation,
                                                                                          dict[str, Any]]:
    """The policy of the checkpoint in ``directory`` (verified; read without torch)."""
    from llmvirt.policy.weights import load_arrays

    arrays, meta = load_arrays(Path(directory), SPEC_NAME, SPEC_VERSION, list(FEATURES))
    return policy(arrays, name, mode), meta
