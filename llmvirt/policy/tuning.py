"""Pinning and balloon plans for real hosts, within named safety limits.

Pinning (NUMA-aware): a VM's vCPUs go one-to-one onto free host CPUs of a single NUMA
cell when one has room (the cell with the most free CPUs); CPUs pinned by other VMs and
reserved host CPUs are never shared or used. A VM that fits no single cell is left
unpinned, with the reason.

Balloon: oVirt MOM's limits, named below (MAX_CHANGE, MIN_CHANGE, FLOOR_MARGIN), bound every
target whatever proposed it, and a guest under pressure (PRESSURE_USABLE, swap-in or major
faults rising) is deflated at once.
"""

from __future__ import annotations

import numpy as np

from llmvirt.model.action import Action
from llmvirt.model.cluster import Cluster, Vm
from llmvirt.model.pressure import pressure_flag

MAX_CHANGE = 0.05  #: MOM max_balloon_change_percent: at most 5 % of current size per cycle
MIN_CHANGE = 0.0025  #: MOM min_balloon_change_percent: skip changes under 0.25 %
FLOOR_MARGIN = 0.20  #: never below guest use + 20 % of current size (MOM min_guest_free_percent)
HOST_BUDGET = 0.80  #: balloons on a host add up to at most 80 % of its memory (MOM's pressure_threshold: 20 % free)


def plan_pinning(cluster: Cluster, reserved_cpus: int = 0) -> tuple[list[Action], dict[str, str]]:
    """Pin every running, unpinned VM into one NUMA cell if it fits; returns pin actions and skipped VMs."""
    plans: list[Action] = []
    skipped: dict[str, str] = {}
    for host in cluster.hosts:
        reserved = set(range(reserved_cpus))
        taken = {c for v in host.vms if v.running for cpus in v.pinning.values() for c in cpus
                 if len(cpus) == 1}
        for vm in sorted((v for v in host.vms if v.running and not v.pinning), key=lambda v: -v.vcpus):
            free_by_cell = [(cell, [c for c in cell.cpus if c not in taken and c not in reserved])
                            for cell in host.numa_cells]
            fitting = [(cell, free) for cell, free in free_by_cell if len(free) >= vm.vcpus]
            if not fitting:
                skipped[vm.name] = f"no NUMA cell of {host.name} has {vm.vcpus} free CPUs"
                continue
            cell, free = max(fitting, key=lambda cf: len(cf[1]))
            pins = {i: (free[i],) for i in range(vm.vcpus)}
            taken |= {free[i] for i in range(vm.vcpus)}
            plans.append(Action.pin(vm.name, host.name, pins, f"one vCPU per free CPU of cell {cell.id}", uuid=vm.uuid))
    return plans, skipped


def under_pressure(vm: Vm, previous: Vm | None) -> bool:
    """The guest shows memory pressure: swap-in or major faults rising, or usable memory low
    (:func:`llmvirt.model.pressure.pressure_flag`)."""
    b, p = vm.balloon, previous.balloon if previous is not None else None
    return pressure_flag(b.usable_mib, b.current_mib, b.swap_in_mib, p.swap_in_mib if p else None,
                         b.major_faults, p.major_faults if p else None)


def safe_targets(cur: np.ndarray, cap: np.ndarray, used: np.ndarray, proposed: np.ndarray,
                 pressure: np.ndarray) -> np.ndarray:
    """The safety limits on arrays (one code path for the simulator and real hosts).

    Pressure deflates at once to the maximum. Otherwise a step is at most MAX_CHANGE of the
    current size, except that the target never goes below use + FLOOR_MARGIN of the current size
    (as in MOM, the floor wins over the step limit) and never above the maximum. A change of at
    most MIN_CHANGE keeps the current size. Returns the new sizes.
    """
    stepped = np.minimum(np.maximum(proposed, cur * (1 - MAX_CHANGE)), cur * (1 + MAX_CHANGE))
    target = np.minimum(np.maximum(stepped, used + FLOOR_MARGIN * cur), cap)
    target = np.where(np.abs(target - cur) <= MIN_CHANGE * cur, cur, target)
    return np.where(pressure, cap, target)


def fit_to_hosts(proposed: np.ndarray, floor: np.ndarray, host_of: np.ndarray, host_mem: np.ndarray,
                 budget: float = HOST_BUDGET) -> np.ndarray:
    """Shrink proposals on hosts whose balloons would add up to more than ``budget`` of their memory.

    Each VM gives up the same share of its slack above ``floor`` (what it was predicted not to
    need), so the host stays out of memory overload before any guest is squeezed below its need.
    """
    total = np.bincount(host_of, proposed, minlength=host_mem.size)
    slack = np.maximum(proposed - floor, 0.0)
    room = np.bincount(host_of, slack, minlength=host_mem.size)
    excess = np.maximum(total - budget * host_mem, 0.0)
    share = np.minimum(np.divide(excess, room, out=np.zeros_like(excess), where=room > 0), 1.0)
    return proposed - slack * share[host_of]


def safe_target(vm: Vm, proposed: float, pressure: bool) -> int | None:
    """Clamp a proposed balloon target for one VM (see :func:`safe_targets`); None when nothing changes."""
    b = vm.balloon
    cur, cap = b.current_mib, b.maximum_mib or vm.memory_mib
    if cur is None or not cap:
        return None
    target = float(safe_targets(np.array([cur], float), np.array([cap], float), np.array([used_mib(vm)], float),
                                np.array([proposed], float), np.array([pressure]))[0])
    return None if target == cur else int(target)


def used_mib(vm: Vm) -> float:
    """Memory the guest uses: balloon size minus guest-reported unused; the balloon size without stats."""
    b = vm.balloon
    if b.available_mib is not None and b.unused_mib is not None:
        return float(b.available_mib - b.unused_mib)
    return float(b.current_mib if b.current_mib is not None else vm.memory_mib)


def plan_balloons(cluster: Cluster, previous: Cluster | None = None, rule: str = "mom") -> list[Action]:
    """A field baseline's balloon rule as the proposal, with the very arithmetic the memory scenario
    benchmarks, one cycle per run: oVirt MOM (``mom[:PRESSURE:GUEST_FREE]``,
    :meth:`llmvirt.sim.field_balloons.MomBalloon.round`) or Proxmox VE's auto-ballooning
    (``proxmox[:TARGET:MIN_FRACTION]``, :meth:`llmvirt.sim.field_balloons.ProxmoxAutoBalloon.round`),
    at the daemons' defaults unless the name sets the limits. Each target then passes
    :func:`safe_target` (a guest under pressure is deflated at once). Returns a balloon action for every
    VM whose balloon should change."""
    from llmvirt.sim.field_balloons import make_balloon

    rows = [(h, host, v) for h, host in enumerate(cluster.hosts) for v in host.vms
            if v.running and v.balloon.current_mib]
    if not rows:
        return []
    policy = make_balloon(rule)
    cur = np.array([float(v.balloon.current_mib or v.memory_mib) for _, _, v in rows])
    cap = np.array([float(v.balloon.maximum_mib or v.memory_mib) for _, _, v in rows])
    host_of = np.array([h for h, _, _ in rows], dtype=np.int64)
    host_mem = np.array([float(max(1, host.memory_mib)) for host in cluster.hosts])
    proposed = policy.round(cur, cap, np.array([used_mib(v) for _, _, v in rows]), host_of, host_mem)
    use = np.bincount(host_of, cur, minlength=host_mem.size) / host_mem
    out = []
    for i, (h, host, vm) in enumerate(rows):
        prev_host = previous.host(host.name) if previous else None
        pressure = under_pressure(vm, prev_host.vm(vm.name) if prev_host else None)
        target = safe_target(vm, float(proposed[i]), pressure)
        if target is not None:
            why = "guest under memory pressure: deflate" if pressure else _balloon_reason(policy, use[h])
            out.append(Action.balloon(vm.name, host.name, target, why, uuid=vm.uuid))
    return out


def _balloon_reason(policy: object, host_use: float) -> str:
    """Why a field rule moved a balloon, from its host's memory use (balloons over host memory)."""
    from llmvirt.sim.field_balloons import MomBalloon

    if isinstance(policy, MomBalloon):
        free, limit = 1 - host_use, policy.pressure_threshold
        return (f"host free memory {100 * free:.0f} % < {100 * limit:.0f} %: shrink (MOM)" if free < limit
                else "host has room: give memory back (MOM)")
    target = policy.target  # type: ignore[attr-defined]
    return (f"host balloons at {100 * host_use:.0f} % of its memory, above {100 * target:.0f} %: shrink (Proxmox)"
            if host_use > target else
            f"host balloons at {100 * host_use:.0f} % of its memory, under {100 * target:.0f} %: grow (Proxmox)")


def plan_nova_pinning(cluster: Cluster, fraction: float = 0.5, reserved_cpus: int = 0) -> tuple[list[Action],
                                                                                              dict[str, str]]:
    """Nova's static ``hw:cpu_policy=dedicated`` on real hosts, decided by the very code the pinning
    scenario benchmarks (:class:`llmvirt.sim.pinning.NovaDedicated`): ``fraction`` of each NUMA cell's
    CPUs form the dedicated set; the largest VMs get one exclusive CPU per vCPU in one cell while they
    fit; every other VM floats over the CPUs no dedicated VM holds. Reserved host CPUs are never used.
    Returns pin actions for the VMs whose pinning changes, and VMs left alone with why."""
    from llmvirt.sim.numa import Topology
    from llmvirt.sim.pinning import NovaDedicated

    nova, out, held = NovaDedicated(fraction), [], {}
    reserved = set(range(reserved_cpus))
    for host in cluster.hosts:
        vms = [v for v in host.vms if v.running]
        cells = [[c for c in cell.cpus if c not in reserved] for cell in host.numa_cells]
        if not vms or not cells or not all(cells):
            continue
        topo = Topology(len(cells), min(len(c) for c in cells), float(min(c.memory_mib for c in host.numa_cells)))
        codes, dedicated = nova.pinning(topo, np.zeros((0, len(vms))), np.array([v.vcpus for v in vms]),
                                        np.array([float(v.memory_mib) for v in vms]))
        free = {k: list(cell[len(cell) - int(fraction * topo.cpus_per_cell):]) for k, cell in enumerate(cells)}
        pins: dict[str, dict[int, tuple[int, ...]]] = {}
        for i in sorted(np.flatnonzero(dedicated), key=lambda i: -vms[i].vcpus):
            taken = [free[int(codes[i])].pop(0) for _ in range(vms[i].vcpus)]
            pins[vms[i].name] = {k: (c,) for k, c in enumerate(taken)}
        held_cpus = {c for p in pins.values() for cs in p.values() for c in cs}
        shared = tuple(sorted(c for cell in cells for c in cell if c not in held_cpus))
        every = tuple(sorted(c for cell in host.numa_cells for c in cell.cpus))  # unpinned: floats over all
        for i, vm in enumerate(vms):
            want = pins.get(vm.name) or {k: shared for k in range(vm.vcpus)}
            if not shared and vm.name not in pins:
                held[vm.name] = f"every CPU of {host.name} is dedicated: nothing left to float over"
                continue
            if {k: tuple(vm.pinning.get(k, every)) for k in range(vm.vcpus)} == want:
                continue
            why = (f"Nova dedicated: one CPU per vCPU in cell {int(codes[i])}" if vm.name in pins else
                   f"Nova shared: floats over the {len(shared)} CPUs no dedicated VM holds")
            out.append(Action.pin(vm.name, host.name, want, why, uuid=vm.uuid))
    return out, held
