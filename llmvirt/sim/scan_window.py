"""The last hour of what scans showed, for every fleet of the batched balance simulator.

A scan measures use, and a host's use stops at its cores: on a host whose demand exceeds its cores each VM reads
its fair share (as :func:`llmvirt.bench.balance_rl.scan_view`), so the host reads just under its cores however far
above them its demand is. A controller's store holds the last hour of such scans; :class:`ScanTracker` keeps that
hour as the fleets run (before the first step: the fleet's hour of history scanned on its first placement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmvirt.sim.balance_env import BalanceEnv

HISTORY = 12  #: scans of the last hour (300 s apart), oldest first, the last one is now
SATURATED = 0.99  #: a host reading at or above this share of its cores reads as saturated


@dataclass
class ScanWindow:
    """The last hour of scans of a batch of fleets."""

    seen: np.ndarray  #: (E, V, HISTORY) each VM's reading, cores, oldest first
    saturated: np.ndarray  #: (E, V, HISTORY) its host read as saturated then (bool)
    host_reading: np.ndarray  #: (E, V) its host's reading now, share of the host's cores
    vcpus: np.ndarray  #: (E, V) vCPUs
    host: np.ndarray | None = None  #: (E, V) the index of its host now (None: not known)


def scan(env: BalanceEnv, demand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each VM's reading in cores, its host's reading as a share of its cores), both (E, V), of ``demand`` (E, V)
    on the placement now."""
    demand = demand * env.vm_valid
    host = env.host_sum(demand)
    share = np.minimum(1.0, env.cores * (1 - 1e-9) / np.maximum(host, 1e-9))  # never quite at the cores
    reading = np.minimum(host / env.cores, 1.0 - 1e-9)
    return (demand * np.take_along_axis(share, env.vm_host, axis=1),
            np.take_along_axis(reading, env.vm_host, axis=1))


class ScanTracker:
    """The last hour of scans of every fleet of ``env``; call :meth:`window` once a step, before its moves."""

    def __init__(self, env: BalanceEnv) -> None:
        """Scan the hour before the first step on the fleets' first placement."""
        self.env = env
        col = env.start + env.t[:, None]
        past = [scan(env, env.pool_cpu[env.vm_src, col - k].astype(np.float64)) for k in range(HISTORY - 1, 0, -1)]
        self.seen = np.stack([s for s, _ in past], axis=-1)
        self.sat = np.stack([r >= SATURATED for _, r in past], axis=-1)

    def window(self) -> ScanWindow:
        """Scan now; the hour ending with it."""
        seen, reading = scan(self.env, self.env.demand_now())
        self.seen = np.concatenate([self.seen[..., 1 - HISTORY:], seen[..., None]], axis=-1)
        self.sat = np.concatenate([self.sat[..., 1 - HISTORY:], (reading >= SATURATED)[..., None]], axis=-1)
        return ScanWindow(self.seen, self.sat, reading, self.env.pool_vcpus[self.env.vm_src].astype(np.float64),
                          self.env.vm_host.copy())


def next_demand(env: BalanceEnv) -> np.ndarray:
    """(E, V) every VM's true demand at the next step, cores (at the trace's end, its last sample)."""
    col = np.minimum(env.start + env.t[:, None] + 1, env.pool_cpu.shape[1] - 1)
    return env.pool_cpu[env.vm_src, col].astype(np.float64)
