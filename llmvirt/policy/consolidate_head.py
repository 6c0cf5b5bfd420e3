"""The consolidation head: a gated PABFD consolidation policy whose parameters are learned in the
``cloudsim`` scenario by policy search (:mod:`llmvirt.learn.train_consolidate`).

It keeps CloudSim's structure (overload detection, minimum-migration-time selection, power-aware
best-fit placement, emptying under-used hosts) and learns three numbers:

- ``overload_threshold``: a host counts as overloaded above this CPU use, and no VM is placed on a
  host it would push above it;
- ``consolidate_every``: under-used hosts are emptied every this many 300 s steps, not every step
  (the baselines' every-step consolidation is where most of their migrations come from);
- ``consolidate_below``: only hosts under this CPU use are candidates to be emptied.

The parameters live in ``consolidate.safetensors`` beside the other heads, checked like them. On
real hosts ``rebalance --goal consolidate`` runs this very policy on arrays built from the scanned
cluster (:mod:`llmvirt.strategies.registry`), so what the cloudsim scenario measures is what runs;
each run is one decision step, the cron interval standing in for ``consolidate_every``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.sim.cloudsim_policies import PabfdPolicy
from llmvirt.sim.engine import Simulation
from llmvirt.sim.overload import Thr

PARAMS = ("overload_threshold", "consolidate_every", "consolidate_below")
BOUNDS = ((0.6, 1.0), (1.0, 12.0), (0.1, 1.0))  #: search range of each parameter


SPEC_NAME, SPEC_VERSION = "consolidate", 1  #: file stem and feature-spec version of the head's checkpoint


def clip(x: np.ndarray) -> np.ndarray:
    """Parameters within their bounds; ``consolidate_every`` a whole number of steps."""
    out = np.array([min(max(float(v), lo), hi) for v, (lo, hi) in zip(x, BOUNDS, strict=True)])
    out[1] = round(out[1])
    return out


@dataclass
class GatedConsolidation(PabfdPolicy):
    """PABFD with a learned overload threshold and a gated, less frequent consolidation."""

    every: int = 2  #: consolidate every this many steps
    below: float = 0.5  #: only hosts under this CPU use are emptied
    reasons: dict[int, str] = field(default_factory=dict)  #: per VM moved by the last decision: why
    _step: int = 0

    def decide(self, sim: Simulation, t: float) -> list[tuple[int, int]]:
        """One step, with a reason per move naming what drove it (:attr:`reasons`)."""
        dc = sim.dc
        placed = sim.vm_host >= 0
        demand = np.bincount(sim.vm_host[placed], sim.req[placed], minlength=dc.n_hosts) / dc.total_mips
        use = sim.util_mips / dc.total_mips
        plan = super().decide(sim, t)
        self.reasons = {vm: self._reason(int(sim.vm_host[vm]), demand, use) for vm, _ in plan}
        return plan

    def _destination(self) -> str:
        """How the destination was chosen."""
        if self.wake_cost:
            return "the destination's power rises least, a switched-off host counted at its idle power"
        return "the destination's power rises least"

    def _reason(self, src: int, demand: np.ndarray, use: np.ndarray) -> str:
        """Why a VM leaves host ``src``: its overload, or emptying it."""
        if demand[src] > self.detector.threshold:
            return (f"overload avoided: its host's CPU demand is {demand[src]:.0%}, above the "
                    f"{self.detector.threshold:.0%} threshold; {self._destination()}")
        return (f"energy saved: its host is emptied and can be switched off (CPU {use[src]:.0%}, under the "
                f"{self.below:.0%} gate); {self._destination()}")

    def consolidate_next_step(self) -> None:
        """Make the next decision a consolidating one: on real hosts each run is one decision step that
        the operator chose to take (the cron interval stands in for ``every``)."""
        self._step = self.every - 1

    def _consolidate(self, sim: Simulation, s: Any, over_mask: np.ndarray, p_stale: np.ndarray) -> list:
        self._step += 1
        if self._step % self.every:
            return []
        return super()._consolidate(sim, s, over_mask, p_stale)

    def _gates(self, sim: Simulation) -> tuple[np.ndarray, np.ndarray]:
        """Hosts above ``below`` are neither emptied nor filled."""
        above = sim.util_mips / sim.dc.total_mips > self.below
        return above, above


def gated_point(name: str) -> tuple[float, int, float, bool]:
    """``gated:THRESHOLD:EVERY:BELOW[:wake]`` as (threshold, every, below, wake_cost); ValueError if malformed."""
    parts = name.split(":")
    wake = parts[-1:] == ["wake"]
    try:
        if parts[0] != "gated":
            raise ValueError(name)
        thr, every, below = (float(x) for x in parts[1:-1 if wake else None])
    except ValueError:
        raise ValueError(f"{name!r}: use gated:THRESHOLD:EVERY:BELOW[:wake], e.g. gated:0.9:2:0.5") from None
    return thr, max(1, int(every)), below, wake


def policy(values: np.ndarray, name: str = "llmvirt") -> GatedConsolidation:
    """The policy for parameter vector ``values`` (clipped to the bounds)."""
    thr, every, below = clip(values)
    return GatedConsolidation(Thr(float(thr)), "mmt", name=name, every=int(every), below=float(below))


def load(directory: Path | str, name: str = "llmvirt") -> tuple[GatedConsolidation, dict[str, Any]]:
    """The consolidation policy of the checkpoint in ``directory`` (verified like every checkpoint; read
    without torch, since deciding needs only the three numbers)."""
    from llmvirt.policy.weights import CheckpointError, load_arrays

    arrays, meta = load_arrays(Path(directory), SPEC_NAME, SPEC_VERSION, list(PARAMS))
    values = arrays.get("values")
    if values is None or values.shape != (len(PARAMS),):
        raise CheckpointError(f"{directory}: the {SPEC_NAME} head's weights do not fit ({len(PARAMS)} values)")
    return policy(values.astype(np.float64), name), meta
