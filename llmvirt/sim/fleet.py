"""The balance and memory scenarios: a fleet of identical KVM hosts running Bitbrains VMs.

Each step is one 300 s sample of the trace. A VM needs its measured CPU (MHz) and
memory (MiB); hosts have a CPU capacity (cores x MHz) and memory, and allocation
limits like Nova's allocation ratios (provisioned vCPUs and memory per host).

- **balance**: the policy may migrate VMs each step. Measured: host overload time
  (CPU demand above capacity, or memory demand above host memory), migrations, GiB
  migrated (the VM's memory in use), and the spread of host CPU load.
- **memory**: hosts are memory-overcommitted; the policy sets each VM's balloon
  target each step. A VM's resident memory is its balloon target (an unconstrained
  guest fills its memory with page cache), so a host is overloaded when the targets
  add up to more than its memory. Measured: memory reclaimed (maximum minus target,
  averaged), guest memory-pressure time (demand above target) and host overload time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from llmvirt.model.arrays import ClusterArrays, FleetSetup
from llmvirt.model.score import Score, memory_cost
from llmvirt.sim.traces import UsageTrace

BALANCE_SETUP = FleetSetup(cpu_allocation_ratio=4.0, ram_allocation_ratio=1.0, fill=0.9)
MEMORY_SETUP = FleetSetup(cpu_allocation_ratio=8.0, ram_allocation_ratio=1.6, fill=1.0)


class BalancePolicy(Protocol):
    """Chooses migrations each step."""

    name: str

    def decide(self, view: ClusterArrays) -> list[tuple[int, int]]:
        """Migrations ``(vm, destination host)`` to make now."""
        ...


class BalloonPolicy(Protocol):
    """Chooses balloon targets each step."""

    name: str

    def targets(self, view: ClusterArrays) -> np.ndarray:
        """New balloon target of every VM, MiB."""
        ...


@dataclass
class FleetMetrics:
    """Results of one run."""

    steps: int = 0  #: steps simulated
    hours: float = 0.0  #: simulated hours
    host_overload_h: float = 0.0  #: host-hours with CPU or memory demand above capacity
    cpu_overload_h: float = 0.0  #: host-hours with CPU demand above capacity
    mem_overload_h: float = 0.0  #: host-hours with memory demand above host memory
    migrations: int = 0  #: migrations made
    gib_migrated: float = 0.0  #: memory in use of the migrated VMs
    guest_pressure_h: float = 0.0  #: VM-hours with memory demand above the balloon target
    reclaimed_gib_h: float = 0.0  #: integral of (maximum - target) memory
    needed_reclaimed_gib_h: float = 0.0  #: of it, what hosts needed: at most each host's overcommit of maxima
    cpu_spread: list[float] = field(default_factory=list)  #: per step: max - min host CPU utilisation
    per_step_overloaded: list[int] = field(default_factory=list)  #: hosts overloaded at each step

    def score(self) -> Score:
        """The run as the shared scoring code sees it."""
        return Score(overload_h=self.host_overload_h, pressure_h=self.guest_pressure_h,
                     gib_migrated=self.gib_migrated, migrations=self.migrations,
                     reclaimed_gib_h=self.reclaimed_gib_h)

    def summary(self) -> dict[str, float]:
        """Headline figures."""
        return {"host_overload_h": self.host_overload_h, "cpu_overload_h": self.cpu_overload_h,
                "mem_overload_h": self.mem_overload_h, "migrations": self.migrations,
                "gib_migrated": self.gib_migrated, "guest_pressure_h": self.guest_pressure_h,
                "reclaimed_gib_avg": self.reclaimed_gib_h / self.hours if self.hours else 0.0,
                "needed_reclaimed_gib_avg": self.needed_reclaimed_gib_h / self.hours if self.hours else 0.0,
                "cpu_spread_avg": float(np.mean(self.cpu_spread)) if self.cpu_spread else 0.0,
                "memory_cost": memory_cost({"guest_pressure_h": self.guest_pressure_h,
                                            "mem_overload_h": self.mem_overload_h,
                                            "needed_reclaimed_gib_h": self.needed_reclaimed_gib_h})}


def first_fit_decreasing(trace: UsageTrace, setup: FleetSetup) -> np.ndarray:
    """Initial placement: VMs by provisioned memory (then vCPUs), largest first, onto the first host
    with room under ``fill`` x the allocation limits; hosts are opened as needed."""
    order = np.lexsort((-trace.vcpus, -trace.mem_capacity_mib))
    cpu_lim = setup.fill * setup.cpu_allocation_ratio * setup.host_cores
    mem_lim = setup.fill * setup.ram_allocation_ratio * setup.host_mem_mib
    cpu_used: list[float] = []
    mem_used: list[float] = []
    host = np.full(len(trace.names), -1, dtype=np.int64)
    for v in order:
        c, m = trace.vcpus[v], trace.mem_capacity_mib[v]
        for h in range(len(cpu_used)):
            if cpu_used[h] + c <= cpu_lim and mem_used[h] + m <= mem_lim:
                break
        else:
            cpu_used.append(0.0)
            mem_used.append(0.0)
            h = len(cpu_used) - 1
        cpu_used[h] += c
        mem_used[h] += m
        host[v] = h
    return host


def allocation_ok(view: ClusterArrays, vm: int, dst: int, vm_host: np.ndarray) -> bool:
    """The destination stays within the fleet's allocation limits with ``vm`` added."""
    s = view.setup
    cores, mem = view.host_sizes()
    on = vm_host == dst
    return bool(view.vm_vcpus[on].sum() + view.vm_vcpus[vm] <= s.cpu_allocation_ratio * cores[dst]
                and view.vm_mem_cap[on].sum() + view.vm_mem_cap[vm] <= s.ram_allocation_ratio * mem[dst])


class FleetSim:
    """Runs a trace through a fleet under a balance policy and/or a balloon policy."""

    def __init__(self, trace: UsageTrace, setup: FleetSetup, extra_hosts: int = 0) -> None:
        """Place the VMs first-fit decreasing; ``extra_hosts`` empty hosts are added as headroom."""
        self.trace = trace
        self.setup = setup
        self.vm_host = first_fit_decreasing(trace, setup)
        self.n_hosts = int(self.vm_host.max()) + 1 + extra_hosts
        self.balloon = trace.mem_capacity_mib.astype(np.float64).copy()

    def view(self, t: int) -> ClusterArrays:
        """The state at step ``t``."""
        tr = self.trace
        return ClusterArrays(self.setup, self.vm_host.copy(), tr.vcpus, tr.mem_capacity_mib, tr.cpu_mhz[:, t],
                         tr.mem_mib[:, t], self.balloon.copy(),
                         np.maximum(self.balloon - tr.mem_mib[:, t], 0.0), self.n_hosts,
                         np.zeros(self.n_hosts, dtype=bool))

    def run(self, balance: BalancePolicy | None = None, balloon: BalloonPolicy | None = None,
            steps: int | None = None) -> FleetMetrics:
        """Simulate; each step: measure, then let the policies act for the next step."""
        tr, s = self.trace, self.setup
        m = FleetMetrics()
        n = tr.cpu_mhz.shape[1] if steps is None else min(steps, tr.cpu_mhz.shape[1])
        dt_h = tr.interval_s / 3600
        for t in range(n):
            cpu = np.bincount(self.vm_host, tr.cpu_mhz[:, t], minlength=self.n_hosts)
            used = tr.mem_mib[:, t]
            if balloon is None:
                mem = np.bincount(self.vm_host, used, minlength=self.n_hosts)
            else:  # resident memory is the balloon target
                mem = np.bincount(self.vm_host, self.balloon, minlength=self.n_hosts)
                m.guest_pressure_h += float((used > self.balloon + 1e-6).sum()) * dt_h
                m.reclaimed_gib_h += float((tr.mem_capacity_mib - self.balloon).sum()) / 1024 * dt_h
                taken = np.bincount(self.vm_host, tr.mem_capacity_mib - self.balloon, minlength=self.n_hosts)
                short = np.maximum(np.bincount(self.vm_host, tr.mem_capacity_mib, minlength=self.n_hosts)
                                   - s.host_mem_mib, 0.0)
                m.needed_reclaimed_gib_h += float(np.minimum(taken, short).sum()) / 1024 * dt_h
            cpu_over = cpu > s.host_mhz
            mem_over = mem > s.host_mem_mib
            m.cpu_overload_h += float(cpu_over.sum()) * dt_h
            m.mem_overload_h += float(mem_over.sum()) * dt_h
            m.host_overload_h += float((cpu_over | mem_over).sum()) * dt_h
            busy = np.bincount(self.vm_host, minlength=self.n_hosts) > 0
            util = cpu / s.host_mhz
            m.cpu_spread.append(float(util[busy].max() - util[busy].min()) if busy.any() else 0.0)
            m.per_step_overloaded.append(int((cpu_over | mem_over).sum()))
            m.steps += 1
            m.hours += dt_h
            view = self.view(t)
            if balance is not None:
                for vm, dst in balance.decide(view):
                    if dst == self.vm_host[vm]:
                        continue
                    self.vm_host[vm] = dst
                    m.migrations += 1
                    m.gib_migrated += float(used[vm]) / 1024
            if balloon is not None:
                target = balloon.targets(view)
                self.balloon = np.clip(target, 0.0, tr.mem_capacity_mib)
        return m
