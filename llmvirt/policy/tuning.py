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


def plan_balloons(cluster: Cluster, previous: Cluster | None = None,
                  host_free_threshold: float = 0.20) -> list[Action]:
    """oVirt MOM's default rules as the proposal, with the very arithmetic the memory scenario
    benchmarks (:meth:`llmvirt.sim.field_policies.MomBalloon.round`, one cycle per run), each target
    then passed through :func:`safe_target` (a guest under pressure is deflated at once).
    Returns a balloon action for every VM whose balloon should change."""
    from llmvirt.sim.field_policies import MomBalloon

    rows = [(h, host, v) for h, host in enumerate(cluster.hosts) for v in host.vms
            if v.running and v.balloon.current_mib]
    if not rows:
        return []
    mom = MomBalloon(pressure_threshold=host_free_threshold)
    cur = np.array([float(v.balloon.current_mib or v.memory_mib) for _, _, v in rows])
    cap = np.array([float(v.balloon.maximum_mib or v.memory_mib) for _, _, v in rows])
    host_of = np.array([h for h, _, _ in rows], dtype=np.int64)
    host_mem = np.array([float(max(1, host.memory_mib)) for host in cluster.hosts])
    proposed = mom.round(cur, cap, np.array([used_mib(v) for _, _, v in rows]), host_of, host_mem)
    free = (host_mem - np.bincount(host_of, cur, minlength=host_mem.size)) / host_mem
    out = []
    for i, (h, host, vm) in enumerate(rows):
        prev_host = previous.host(host.name) if previous else None
        pressure = under_pressure(vm, prev_host.vm(vm.name) if prev_host else None)
        target = safe_target(vm, float(proposed[i]), pressure)
        if target is not None:
            why = "guest under memory pressure: deflate" if pressure else (
                f"host free memory {100 * free[h]:.0f} % < {100 * host_free_threshold:.0f} %: shrink (MOM)"
                if free[h] < host_free_threshold else "host has room: give memory back (MOM)")
            out.append(Action.balloon(vm.name, host.name, target, why, uuid=vm.uuid))
    return out
