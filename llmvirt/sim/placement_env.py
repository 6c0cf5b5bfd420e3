"""The placement scenario: VMs arrive in a running fleet and each is placed once, never moved.

A fleet is drawn as in the balance scenario (:func:`llmvirt.sim.balance_env.draw_fleet`: trace VMs, host
sizes, a load). A share of its VMs (``arrive_share``) runs from the start where the draw put them; the
others arrive one by one at random steps of the first three quarters of the day and are placed by the
policy, which sees what ``llmvirt place`` sees on a scanned cluster with a recorded history: each host's
CPU use now and its recent peak (:data:`llmvirt.model.usage.PEAK_QUANTILE` of its use over the last
:data:`~llmvirt.model.usage.PEAK_SCANS` steps, the VMs it ran then), its allocated vCPUs and memory and
its VM count, and the new VM's vCPUs and memory (not its future use: a new VM has none). Nothing
migrates, so what the placements cost shows alone:

- **cost**: unmet demand, core-hours: CPU the VMs on a host ask for above its cores (the balance
  scenario's cost without migrations); a VM no host can take (allocation limits) is unmet whole;
- **bound**: the fluid lower bound (the fleet's demand above all of its cores).

The simulator knows nothing of policies: :meth:`PlacementEpisode.run` asks a callback for each arrival's
host, given a :class:`Arrival`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llmvirt.model.usage import PEAK_QUANTILE, PEAK_SCANS
from llmvirt.sim.balance_env import EnvConfig, Fleet

ARRIVE_SHARE = 0.5  #: share of a fleet's VMs that arrive during the episode
ARRIVE_BY = 0.75  #: arrivals happen in this first share of the episode


@dataclass(frozen=True)
class Arrival:
    """What a placement policy reads for one arriving VM: the fleet now, and the VM's request."""

    used: np.ndarray  #: (H,) CPU in use on each host now, cores
    vcpus: np.ndarray  #: (H,) vCPUs allocated on each host
    mem_gib: np.ndarray  #: (H,) provisioned memory allocated on each host, GiB
    count: np.ndarray  #: (H,) VMs on each host
    cores: np.ndarray  #: (H,) each host's cores
    host_mem_gib: np.ndarray  #: (H,) each host's memory, GiB
    vm_vcpus: float  #: the new VM's vCPUs
    vm_mem_gib: float  #: the new VM's provisioned memory, GiB
    cpu_allocation_ratio: float  #: vCPUs allowed per core
    ram_allocation_ratio: float  #: provisioned memory allowed per host memory
    peak: np.ndarray | None = None  #: (H,) each host's recent peak CPU use, cores (None: unknown)


@dataclass
class PlacementEpisode:
    """One fleet, its arrivals and their demand over the episode (see the module docstring)."""

    demand: np.ndarray  #: (V, T) CPU demand of each VM at each step, cores
    vcpus: np.ndarray  #: (V,)
    mem_gib: np.ndarray  #: (V,) provisioned memory
    arrive: np.ndarray  #: (V,) step each VM arrives (0: runs from the start)
    host: np.ndarray  #: (V,) initial host of VMs running from the start, -1 for arrivals
    cores: np.ndarray  #: (H,)
    cfg: EnvConfig  #: allocation limits, memory per core, step length
    hosts_placed: np.ndarray | None = None  #: (V,) after :meth:`run`: each VM's host, -1 where none took it
    peak_window: tuple[int, float] = (PEAK_SCANS, PEAK_QUANTILE)  #: the hosts' recent peak: steps, quantile

    @classmethod
    def draw(cls, rng: np.random.Generator, fleet: Fleet, pool: tuple[np.ndarray, np.ndarray, np.ndarray],
             cfg: EnvConfig, arrive_share: float = ARRIVE_SHARE) -> PlacementEpisode:
        """The episode of ``fleet`` (its VMs' demand from the trace ``pool``: CPU cores by step, vCPUs,
        provisioned GiB), a random ``arrive_share`` of its VMs arriving at random steps."""
        pool_cpu, pool_vcpus, pool_mcap = pool
        t = cfg.episode_steps
        cols = fleet.start[:, None] + np.arange(t)
        demand = pool_cpu[fleet.vms[:, None], cols].astype(np.float64)
        n = fleet.vms.size
        late = rng.random(n) < arrive_share
        arrive = np.where(late, rng.integers(1, max(2, int(t * ARRIVE_BY)), size=n), 0)
        return cls(demand, pool_vcpus[fleet.vms].astype(np.float64), pool_mcap[fleet.vms].astype(np.float64),
                   arrive, np.where(late, -1, fleet.vm_host), fleet.cores.astype(np.float64), cfg)

    def run(self, choose: Callable[[Arrival], int]) -> dict[str, float]:
        """Place every arrival with ``choose`` (a host index, or -1 for none) and return the episode's figures:
        cost, unmet_core_h, overload_host_h, demand_core_h, bound_core_h, rejected, placed."""
        c = self.cfg
        h, t = self.cores.size, self.demand.shape[1]
        load = np.zeros((h, t))
        vc, mem, count = np.zeros(h), np.zeros(h), np.zeros(h)
        host_mem = self.cores * c.mem_gib_per_core
        vc_lim = c.cpu_allocation_ratio * self.cores + 1e-9
        mem_lim = c.ram_allocation_ratio * host_mem + 1e-9
        unplaced = np.zeros(t)
        rejected = 0
        self.hosts_placed = np.full(self.arrive.size, -1)
        for v in np.lexsort((np.arange(self.arrive.size), self.arrive)):
            a = int(self.arrive[v])
            dst = int(self.host[v])
            if a > 0:
                dst = choose(Arrival(load[:, a].copy(), vc.copy(), mem.copy(), count.copy(), self.cores, host_mem,
                                     float(self.vcpus[v]), float(self.mem_gib[v]), c.cpu_allocation_ratio,
                                     c.ram_allocation_ratio, recent_peak(load, a, *self.peak_window)))
                if not (0 <= dst < h and vc[dst] + self.vcpus[v] <= vc_lim[dst]
                        and mem[dst] + self.mem_gib[v] <= mem_lim[dst]):
                    rejected += 1
                    unplaced[a:] += self.demand[v, a:]
                    continue
            load[dst, a:] += self.demand[v, a:]
            self.hosts_placed[v] = dst
            vc[dst] += self.vcpus[v]
            mem[dst] += self.mem_gib[v]
            count[dst] += 1
        return self._figures(load, unplaced, rejected)

    def _figures(self, load: np.ndarray, unplaced: np.ndarray, rejected: int) -> dict[str, float]:
        dt_h = self.cfg.interval_s / 3600
        over = np.maximum(load - self.cores[:, None], 0.0)
        unmet = float(over.sum() + unplaced.sum()) * dt_h
        present = self.demand * (np.arange(self.demand.shape[1]) >= self.arrive[:, None])
        total = present.sum(axis=0)
        return {"cost": unmet, "unmet_core_h": unmet, "overload_host_h": float((over > 1e-9).sum()) * dt_h,
                "demand_core_h": float(total.sum()) * dt_h,
                "bound_core_h": float(np.maximum(total - self.cores.sum(), 0.0).sum()) * dt_h,
                "rejected": float(rejected), "placed": float((self.arrive > 0).sum() - rejected)}


def recent_peak(load: np.ndarray, step: int, window: int = PEAK_SCANS, quantile: float = PEAK_QUANTILE) -> np.ndarray:
    """Each host's recent peak at ``step`` from its load so far (H x steps, cores): by default the quantile
    ``place`` reads from a store's history (:func:`llmvirt.policy.features.recent_peaks`), over the ``window``
    steps up to ``step``."""
    return np.quantile(load[:, max(0, step + 1 - window): step + 1], quantile, axis=1)
