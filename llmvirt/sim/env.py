"""A step interface over the simulator, following gymnasium's Env API (reset/step), without the dependency.

One step is one scheduling interval: the agent's action is a list of migrations
``(vm, destination host)`` to start now; the environment plays them out and the
workload until the next decision time. The reward is the negative weighted cost of
the interval, from the same metrics the benchmark reports:

    reward = -(energy_kWh + sla_weight * SLA-violation host-hours + migration_weight * migrations)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from llmvirt.sim.datacenter import START_OFFSET_S, DataCenter
from llmvirt.sim.engine import Simulation
from llmvirt.sim.initial_placement import initial_pabfd


@dataclass
class RewardWeights:
    """Weights of the per-step cost terms."""

    sla_weight: float = 1.0  #: kWh-equivalent per host-hour with allocated < requested
    migration_weight: float = 0.001  #: kWh-equivalent per migration started


class CloudSimEnv:
    """Gymnasium-style environment: ``obs, info = reset(seed)``; ``obs, r, terminated, truncated, info = step(a)``."""

    def __init__(self, dc: DataCenter, weights: RewardWeights | None = None, end: float | None = None) -> None:
        """Wrap a data centre; nothing runs until :meth:`reset`. An episode ends at ``end`` seconds, by default
        where the trace does."""
        self.dc = dc
        self.weights = weights or RewardWeights()
        self.end = dc.duration_s if end is None else end
        self.sim: Simulation | None = None
        self.t = 0.0

    def _obs(self) -> dict[str, np.ndarray]:
        assert self.sim is not None
        return {"host_util": self.sim.util_mips / self.dc.total_mips, "vm_host": self.sim.vm_host.copy(),
                "vm_req_mips": self.sim.req.copy(), "vm_alive": self.sim.alive.copy()}

    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Place every VM (PABFD at time 0) and advance to the first decision time."""
        self.sim = Simulation(self.dc)
        self.sim.place_initial(initial_pabfd(self.sim))
        self.t = START_OFFSET_S + self.dc.interval_s
        self.sim.update(self.t)
        return self._obs(), {"t": self.t}

    def step(self, action: list[tuple[int, int]]) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Start ``action``'s migrations now, run to the next decision time, return the interval's reward."""
        sim = self.sim
        if sim is None:
            raise RuntimeError("call reset() first")
        m = sim.metrics
        before = (m.energy_ws, m.host_sla_s, m.migrations)
        sim.start_migrations(list(action), self.t)
        self.t += self.dc.interval_s
        terminated = self.t >= self.end
        if terminated:
            sim.finish_migrations_until(self.end)
        else:
            sim.finish_migrations_until(self.t)
            sim.update(self.t)
        energy_kwh = (m.energy_ws - before[0]) / 3.6e6
        sla_hours = (m.host_sla_s - before[1]) / 3600
        migrations = m.migrations - before[2]
        w = self.weights
        reward = -(energy_kwh + w.sla_weight * sla_hours + w.migration_weight * migrations)
        info = {"t": self.t, "energy_kwh": energy_kwh, "sla_host_hours": sla_hours, "migrations": migrations}
        return self._obs(), reward, terminated, False, info
