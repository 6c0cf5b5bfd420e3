"""The pinning scenario: Bitbrains VMs on two-cell NUMA hosts, scored by the contention model.

VMs are packed first-fit decreasing (vCPUs, then memory) up to ``vcpu_ratio`` vCPUs per pCPU and
the host's memory, the same packing for every policy (equal VM density). Every step the
contention model (:mod:`llmvirt.sim.numa`) gives each VM's slowdown; the result is the
contention-weighted mean slowdown (busy vCPUs x slowdown over busy vCPUs), its 95th percentile
over VM-steps, and how often pinnings changed. Policies decide every ``interval`` steps from
the history they have seen:

- ``none``: nothing pinned (libvirt's default);
- ``nova``: Nova's static ``hw:cpu_policy=dedicated``: ``dedicated_fraction`` of each cell's pCPUs
  form the dedicated set (``cpu_dedicated_set``) and the largest VMs get one exclusive pCPU per
  vCPU in one cell while they fit; the rest float over the shared set. Decided once, at boot.
- ``llmvirt[:POLICY]``: the pinning head. A policy with a ``sticky_horizon`` (the head's) keeps a
  host's pinnings unless the new ones pay for the move in the model (:func:`llmvirt.sim.numa.repin_pays`,
  with the policy's ``model_penalty``, which may differ from the scenario's ``remote_penalty``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from llmvirt.sim import numa
from llmvirt.sim.traces import TraceError, UsageTrace


@dataclass(frozen=True)
class PinSetup:
    """Host layout and density of the pinning scenario."""

    topo: numa.Topology = numa.Topology()  #: every host's NUMA layout
    vcpu_ratio: float = 3.0  #: provisioned vCPUs per pCPU (VM density)
    interval: int = 12  #: steps between pinning decisions (one hour of 300 s)
    dedicated_fraction: float = 0.5  #: Nova: share of each cell's pCPUs in the dedicated set
    remote_penalty: float = numa.REMOTE_PENALTY  #: the contention model's remote-memory penalty


PIN_SETUP = PinSetup()  #: the scenario as benchmarked


def demand_cores(trace: UsageTrace) -> np.ndarray:
    """Busy vCPUs of each VM per step (CPU used over one vCPU's MHz), within its vCPUs."""
    per_vcpu = trace.cpu_capacity_mhz / np.maximum(trace.vcpus, 1)
    return np.minimum(trace.cpu_mhz / np.maximum(per_vcpu, 1e-9)[:, None], trace.vcpus[:, None].astype(float))


def pack(trace: UsageTrace, setup: PinSetup) -> np.ndarray:
    """Host of each VM, first-fit decreasing within the vCPU ratio and host memory (VMs too large for
    one host's memory or vCPU limit are left out: -1)."""
    cpu_lim = setup.vcpu_ratio * setup.topo.cpus
    mem_lim = setup.topo.cells * setup.topo.mem_per_cell_mib
    used_c: list[float] = []
    used_m: list[float] = []
    host = np.full(len(trace.names), -1, dtype=np.int64)
    for v in np.lexsort((-trace.mem_capacity_mib, -trace.vcpus)):
        c, m = float(trace.vcpus[v]), float(trace.mem_capacity_mib[v])
        if c > setup.topo.cpus or m > mem_lim:
            continue
        h = next((i for i in range(len(used_c)) if used_c[i] + c <= cpu_lim and used_m[i] + m <= mem_lim), None)
        if h is None:
            used_c.append(0.0)
            used_m.append(0.0)
            h = len(used_c) - 1
        used_c[h] += c
        used_m[h] += m
        host[v] = h
    return host


class PinPolicy(Protocol):
    """Chooses pinning codes for the VMs of one host."""

    name: str

    def pinning(self, topo: numa.Topology, history: np.ndarray, vcpus: np.ndarray,
                mem: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes, dedicated) from busy-vCPU ``history`` (VMs x steps seen so far, newest last)."""
        ...


@dataclass
class NoPinning:
    """Nothing pinned."""

    name: str = "none"  #: display name

    def pinning(self, topo: numa.Topology, history: np.ndarray, vcpus: np.ndarray,
                mem: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every VM shared."""
        return np.full(vcpus.size, numa.SHARED), np.zeros(vcpus.size, dtype=bool)


@dataclass
class NovaDedicated:
    """Nova static dedicated pinning on part of each cell (see the module docstring)."""

    dedicated_fraction: float = 0.5  #: share of each cell's pCPUs in the dedicated set
    name: str = "nova"  #: display name

    def pinning(self, topo: numa.Topology, history: np.ndarray, vcpus: np.ndarray,
                mem: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Largest VMs first into the dedicated set, one cell each; the rest shared."""
        free = np.full(topo.cells, int(self.dedicated_fraction * topo.cpus_per_cell))
        codes, ded = np.full(vcpus.size, numa.SHARED), np.zeros(vcpus.size, dtype=bool)
        for v in np.argsort(-vcpus, kind="stable"):
            c = int(np.argmax(free))
            if free[c] >= vcpus[v]:
                free[c] -= int(vcpus[v])
                codes[v], ded[v] = c, True
        # shared VMs float over the pCPUs no dedicated VM holds; counting an unused part of the
        # dedicated set as shared favours Nova slightly
        return codes, ded


@dataclass
class PinMetrics:
    """Results of one run."""

    weighted_slowdown: float = 0.0  #: busy-vCPU-weighted mean slowdown
    p95_slowdown: float = 0.0  #: 95th percentile over busy VM-steps
    vms_per_host: float = 0.0  #: density
    repins: int = 0  #: pinning changes after the first decision
    per_step: list[float] = field(default_factory=list)  #: weighted slowdown per step

    def summary(self) -> dict[str, float]:
        """Headline figures."""
        return {"weighted_slowdown": self.weighted_slowdown, "p95_slowdown": self.p95_slowdown,
                "vms_per_host": self.vms_per_host, "repins": self.repins}


def run(trace: UsageTrace, setup: PinSetup, policy: PinPolicy, steps: int | None = None) -> PinMetrics:
    """Simulate the trace under ``policy``; the same packing for every policy."""
    host = pack(trace, setup)
    if not (host >= 0).any():
        raise TraceError(f"no VM of the trace fits the pinning scenario's host ({setup.topo.cpus} CPUs, "
                         f"{setup.topo.cells * setup.topo.mem_per_cell_mib / 1024:.0f} GiB)")
    demand = demand_cores(trace)
    n_steps = demand.shape[1] if steps is None else min(steps, demand.shape[1])
    hosts = [np.flatnonzero(host == h) for h in range(int(host.max()) + 1)]
    codes = {h: np.full(idx.size, numa.SHARED) for h, idx in enumerate(hosts)}
    ded = {h: np.zeros(idx.size, dtype=bool) for h, idx in enumerate(hosts)}
    moved = {h: np.zeros(idx.size, dtype=bool) for h, idx in enumerate(hosts)}
    m = PinMetrics(vms_per_host=float(sum(i.size for i in hosts) / max(1, len(hosts))))
    num = den = 0.0
    samples: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for t in range(n_steps):
        if t % setup.interval == 0:
            horizon = getattr(policy, "sticky_horizon", 0)
            for h, idx in enumerate(hosts):
                new, d = policy.pinning(setup.topo, demand[idx, :t + 1], trace.vcpus[idx],
                                        trace.mem_capacity_mib[idx].astype(float))
                guests = numa.Guests(demand[idx, t], trace.vcpus[idx], trace.mem_capacity_mib[idx].astype(float))
                if horizon and not numa.repin_pays(setup.topo, guests, numa.Pinning(codes[h], ded[h]),
                                                   numa.Pinning(new, d), horizon, policy.model_penalty):
                    new, d = codes[h], ded[h]  # sticky: a re-pin that does not pay for itself is not made
                changed = (new != codes[h]) | (d != ded[h])
                moved[h] = changed & (t > 0)
                m.repins += int(changed.sum()) if t > 0 else 0
                codes[h], ded[h] = new, d
        step_num = step_den = 0.0
        for h, idx in enumerate(hosts):
            d_now = demand[idx, t]
            guests = numa.Guests(d_now, trace.vcpus[idx], trace.mem_capacity_mib[idx].astype(float))
            slow = numa.slowdowns(setup.topo, guests, numa.Pinning(codes[h], ded[h]), moved[h], setup.remote_penalty)
            a, b = numa.weighted(d_now, slow)
            step_num, step_den = step_num + a, step_den + b
            samples.append(slow)
            weights.append(d_now)
            moved[h] = np.zeros_like(moved[h])
        num, den = num + step_num, den + step_den
        m.per_step.append(step_num / step_den if step_den else 1.0)
    m.weighted_slowdown = num / den if den else 1.0
    s, w = np.concatenate(samples), np.concatenate(weights)
    busy = w > 0.05
    m.p95_slowdown = float(np.percentile(s[busy], 95)) if busy.any() else 1.0
    return m


def make_pin_policy(name: str) -> PinPolicy:
    """A baseline pinning policy by name: none, nova[:FRACTION] (``llmvirt[:POLICY]`` resolves in
    :mod:`llmvirt.strategies.registry`: the simulator never imports the strategies)."""
    base, *args = name.split(":")
    if base == "none":
        return NoPinning()
    if base == "nova":
        try:
            return NovaDedicated(float(args[0]) if args else 0.5, name=name)
        except ValueError:
            raise ValueError(f"pinning policy {name!r}: parameter is not a number") from None
    raise ValueError(f"unknown pinning policy {name!r}: use none, nova[:FRACTION], llmvirt[:POLICY]")
