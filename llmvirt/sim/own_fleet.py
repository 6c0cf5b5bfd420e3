"""An operator's own fleet in the simulator: the store's hosts and VMs, one day of their history.

``llmvirt tune --from-store`` simulates the cluster the history came from, not CloudSim's: each host with its
own CPUs, clock and memory (from its latest scan), each VM with its own vCPUs and memory, and each day starting
from where the VMs really were at its start, however much the real cluster overcommitted its CPUs. The mapping
to the simulator's units is the one ``rebalance`` uses on a scanned cluster (:mod:`llmvirt.sim.cluster_arrays`):
a host's capacity is its CPUs x its MHz and its PE is the whole host; a VM's size is its vCPUs x the fleet's
median MHz; power is the generic linear model ``rebalance`` predicts energy with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmvirt.sim.cluster_arrays import real_host_units
from llmvirt.sim.datacenter import HOST_BW, VM_BW, DataCenter
from llmvirt.sim.traces import UsageTrace, load_usage_once


@dataclass(frozen=True)
class OwnHost:
    """One of the operator's hosts as its latest scan saw it."""

    name: str
    cpus: int
    mhz: float
    memory_mib: float


@dataclass(frozen=True)
class OwnFleetDay:
    """Day ``day`` (0-based, 24 h) of the generic-format history at ``path``, on ``hosts``; ``start_host[i]`` is
    the index in ``hosts`` of the host VM ``i`` (the trace's name order) ran on at the day's start."""

    path: str
    day: int
    hosts: tuple[OwnHost, ...]
    start_host: tuple[int, ...]

    @property
    def label(self) -> str:
        """A short name for reports: ``<file>:own:<day>``."""
        return f"{Path(self.path).name}:own:{self.day}"


def _trace(path: str) -> UsageTrace:
    """The history, loaded once per process while unchanged (a tuning runs the same day many times)."""
    return load_usage_once(Path(path))


def whole_days(path: Path) -> int:
    """How many whole days the history at ``path`` covers."""
    trace = _trace(str(path))
    return trace.cpu_mhz.shape[1] // (86_400 // trace.interval_s)


def vm_names(path: Path) -> tuple[str, ...]:
    """The history's VMs, in the order :attr:`OwnFleetDay.start_host` follows."""
    return _trace(str(path)).names


def datacenter(day: OwnFleetDay) -> DataCenter:
    """A fresh data centre for ``day``: the operator's hosts and VMs, each VM starting on its recorded host."""
    trace = _trace(day.path)
    per_day = 86_400 // trace.interval_s
    util = np.clip(trace.cpu_util[:, day.day * per_day:(day.day + 1) * per_day], 0.0, 1.0)
    mhz = np.array([h.mhz for h in day.hosts], dtype=np.float64)
    pe, total, power = real_host_units(np.array([h.cpus for h in day.hosts]), mhz)
    n_h, n_v = len(day.hosts), len(trace.names)
    return DataCenter(
        pe_mips=pe, total_mips=total, power_table=power,
        ram_mb=np.array([h.memory_mib for h in day.hosts], dtype=np.float64), bw=np.full(n_h, HOST_BW, dtype=float),
        vm_mips=trace.vcpus.astype(np.float64) * float(np.median(mhz)),
        vm_ram=trace.mem_capacity_mib.astype(np.float64), vm_bw=np.full(n_v, VM_BW, dtype=np.float64),
        util=np.hstack([util, util[:, -1:]]), interval_s=trace.interval_s, names=trace.names,
        initial_host=np.array(day.start_host, dtype=np.int64))
