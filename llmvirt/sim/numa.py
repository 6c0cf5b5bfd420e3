"""NUMA contention model: how much slower a VM runs for a given vCPU pinning on a host.

A host has ``cells`` NUMA cells of ``cpus_per_cell`` pCPUs and ``mem_per_cell_mib`` each. A VM's
pinning is one of (the candidates the pinning head chooses from):

- ``SHARED``: unpinned, its vCPUs float over every pCPU not dedicated to another VM;
- a cell ``c >= 0``: its vCPUs float within cell ``c``, its memory is allocated there;
- ``SPREAD``: vCPU ``i`` runs in cell ``i mod cells``, memory interleaved over the cells;
- dedicated (Nova ``hw:cpu_policy=dedicated``): one pCPU per vCPU, exclusively, in one cell.

Slowdown of a VM = CPU factor x (1 + REMOTE_PENALTY x remote fraction), where

- **CPU factor**: a pool's utilisation is its vCPU demand over its pCPUs; above 1 the Linux CFS
  fair-share scheduler gives each runnable vCPU ``pCPUs / demand`` of a pCPU, so work takes
  ``max(1, utilisation)`` times as long (CFS design document, kernel Documentation/scheduler/
  sched-design-CFS.rst). Unpinned vCPUs are balanced across cells by the scheduler, modelled as
  water-filling the shared demand into the cells' free capacity. A VM confined to one cell cannot
  use more pCPUs than the cell has.
- **Remote fraction**: the share of a VM's memory accesses that cross the interconnect. Floating
  and spread VMs: ``(cells - 1) / cells`` (their vCPUs are in every cell, their memory is spread or
  wherever it was first touched). A cell-pinned VM: only the part of its memory that did not fit in
  the cell. A VM that moved to another cell runs fully remote for one step while its memory follows.
- **REMOTE_PENALTY = 0.2**: a fully remote working set makes a VM 20 % slower. It is the product of
  the remote/local latency ratio minus one (about 1.5 on two-socket x86 servers: ACPI SLIT
  distances 10 vs 21, and Intel Memory Latency Checker measurements of roughly 90 ns local vs
  140 ns remote) and the share of time a typical server workload stalls on memory (about 0.4,
  Ferdman et al., "Clearing the Clouds", ASPLOS 2012). It is an assumption of the model, stated
  here so results can be re-run with another value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

SHARED, SPREAD = -1, -2  #: pinning codes; a code >= 0 is "compact in that cell"
REMOTE_PENALTY = 0.2  #: slowdown of a fully remote working set (see the module docstring)


@dataclass(frozen=True)
class Topology:
    """One host's NUMA layout."""

    cells: int = 2  #: NUMA cells
    cpus_per_cell: int = 16  #: pCPUs per cell
    mem_per_cell_mib: float = 128 * 1024.0  #: memory per cell

    @property
    def cpus(self) -> int:
        """pCPUs of the host."""
        return self.cells * self.cpus_per_cell


def _water_fill(load: np.ndarray, cap: np.ndarray, extra: float) -> np.ndarray:
    """Share ``extra`` demand over cells so their utilisation evens out (least utilised first)."""
    share = np.zeros_like(load)
    if extra <= 0 or cap.sum() <= 0:
        return share
    order = np.argsort(np.where(cap > 0, load / np.maximum(cap, 1e-9), np.inf))
    for k in range(len(order), 0, -1):
        idx = order[:k]
        level = (load[idx].sum() + extra) / max(cap[idx].sum(), 1e-9)
        if np.all(level * cap[idx] >= load[idx] - 1e-12):
            share[idx] = level * cap[idx] - load[idx]
            return share
    return share


class Guests(NamedTuple):
    """One host's VMs as the contention model sees them."""

    demand: np.ndarray  #: busy vCPUs (cores) now
    vcpus: np.ndarray  #: vCPUs
    mem_mib: np.ndarray  #: memory (working set) size


class Pinning(NamedTuple):
    """One host's pinnings: a code per VM, and which VMs hold exclusive pCPUs (their code is then a cell)."""

    codes: np.ndarray  #: SHARED, SPREAD or a cell index
    dedicated: np.ndarray | None = None  #: exclusive pCPUs (None: none)


def slowdowns(topo: Topology, guests: Guests, pins: Pinning, moved: np.ndarray | None = None,
              penalty: float = REMOTE_PENALTY) -> np.ndarray:
    """Slowdown (>= 1) of each VM on one host with ``pins``. ``moved``: VMs that changed cell (their memory
    is fully remote for the step); ``penalty``: slowdown of a fully remote working set."""
    demand, vcpus, mem_mib = guests
    mode = pins.codes
    n, k = demand.size, topo.cells
    dedicated = np.zeros(n, dtype=bool) if pins.dedicated is None else pins.dedicated
    excl = np.bincount(mode[dedicated], vcpus[dedicated].astype(float), minlength=k)[:k] if dedicated.any() \
        else np.zeros(k)
    cap = np.maximum(topo.cpus_per_cell - excl, 0.0)
    compact = (mode >= 0) & ~dedicated
    spread, shared = mode == SPREAD, mode == SHARED
    load = np.bincount(mode[compact], demand[compact], minlength=k)[:k] + demand[spread].sum() / k
    share = _water_fill(load, cap, float(demand[shared].sum()))
    util = np.divide(load + share, cap, out=np.full(k, np.inf), where=cap > 0)
    factor = np.maximum(1.0, util)
    cpu = np.ones(n)
    cell = np.clip(mode, 0, k - 1)
    cpu[compact] = np.maximum(factor[cell[compact]], demand[compact] / np.maximum(cap[cell[compact]], 1e-9))
    cpu[spread] = factor.mean()
    if shared.any():
        cpu[shared] = float((share * factor).sum() / share.sum()) if share.sum() > 0 else float(factor[cap > 0].min())
    remote = np.where(compact | dedicated, 0.0, (k - 1) / k)
    in_cell = np.bincount(mode[compact | dedicated], mem_mib[compact | dedicated], minlength=k)[:k]
    over = np.maximum(in_cell - topo.mem_per_cell_mib, 0.0) / np.maximum(in_cell, 1e-9)
    pinned = compact | dedicated
    remote[pinned] = np.maximum(remote[pinned], over[cell[pinned]])
    if moved is not None:
        remote[moved & pinned] = 1.0
    return cpu * (1.0 + penalty * remote)


def weighted(demand: np.ndarray, slow: np.ndarray) -> tuple[float, float]:
    """(demand x slowdown, demand): sums for a contention-weighted mean slowdown."""
    return float((demand * slow).sum()), float(demand.sum())


REPIN_MARGIN = 0.01  #: a re-pin must lower the weighted slowdown over its horizon by this share


def repin_pays(topo: Topology, guests: Guests, old: Pinning, new: Pinning, horizon: int,
               penalty: float = REMOTE_PENALTY) -> bool:
    """Whether changing one host's pinnings from ``old`` to ``new`` pays for its cost in this model: over
    ``horizon`` steps at the current demand, the new pinning's contention-weighted slowdown, with every VM
    that changes cell fully remote for the first step while its memory follows, must be at least
    REPIN_MARGIN lower than keeping the old one."""
    none = np.zeros(old.codes.size, dtype=bool)
    old_d = none if old.dedicated is None else old.dedicated
    new_d = none if new.dedicated is None else new.dedicated
    changed = (new.codes != old.codes) | (new_d != old_d)
    if not changed.any():
        return False
    keep, _ = weighted(guests.demand, slowdowns(topo, guests, old, None, penalty))
    first, _ = weighted(guests.demand, slowdowns(topo, guests, new, changed, penalty))
    then, _ = weighted(guests.demand, slowdowns(topo, guests, new, None, penalty))
    return first + (horizon - 1) * then < (1.0 - REPIN_MARGIN) * horizon * keep
