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

from dataclasses import dataclass

from llmvirt.cluster import Cluster, Host, Vm

MAX_CHANGE = 0.05  #: MOM max_balloon_change_percent: at most 5 % of current size per cycle
MIN_CHANGE = 0.0025  #: MOM min_balloon_change_percent: skip changes under 0.25 %
FLOOR_MARGIN = 0.20  #: never below guest use + 20 % of current size (MOM min_guest_free_percent)
PRESSURE_USABLE = 0.10  #: usable memory under 10 % of the balloon, or swap-in / major faults rising: deflate now


@dataclass
class PinPlan:
    """vCPU -> host CPUs for one VM."""

    vm: Vm  #: the VM
    host: Host  #: its host
    pins: dict[int, tuple[int, ...]]  #: the pinning
    cell: int  #: NUMA cell chosen


def plan_pinning(cluster: Cluster, reserved_cpus: int = 0) -> tuple[list[PinPlan], dict[str, str]]:
    """Pin every running, unpinned VM into one NUMA cell if it fits; returns plans and skipped VMs."""
    plans: list[PinPlan] = []
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
            plans.append(PinPlan(vm, host, pins, cell.id))
    return plans, skipped


def under_pressure(vm: Vm, previous: Vm | None) -> bool:
    """The guest shows memory pressure: swap-in or major faults rising, or usable memory low."""
    b = vm.balloon
    if b.usable_mib is not None and b.current_mib and b.usable_mib < PRESSURE_USABLE * b.current_mib:
        return True
    if previous is not None:
        p = previous.balloon
        if b.swap_in_mib is not None and p.swap_in_mib is not None and b.swap_in_mib > p.swap_in_mib:
            return True
        if b.major_faults is not None and p.major_faults is not None and b.major_faults > p.major_faults:
            return True
    return False


def safe_target(vm: Vm, proposed: float, pressure: bool) -> int | None:
    """Clamp a proposed balloon target to the safety limits; None when no change is worth making.

    Pressure deflates at once to the maximum. Otherwise a step is at most MAX_CHANGE of the
    current size, except that the target never goes below use + FLOOR_MARGIN (as in MOM, the
    floor wins over the step limit) and never above the maximum.
    """
    b = vm.balloon
    cur, cap = b.current_mib, b.maximum_mib or vm.memory_mib
    if cur is None or not cap:
        return None
    if pressure:
        return cap if cap != cur else None
    used = (b.available_mib - b.unused_mib) if (b.available_mib is not None and b.unused_mib is not None) else cur
    floor = used + FLOOR_MARGIN * cur
    stepped = min(max(proposed, cur * (1 - MAX_CHANGE)), cur * (1 + MAX_CHANGE))
    target = min(max(stepped, floor), cap)  # the floor protects the guest and wins over the step limit
    if abs(target - cur) <= MIN_CHANGE * cur:
        return None
    return int(target)


def plan_balloons(cluster: Cluster, previous: Cluster | None = None,
                  host_free_threshold: float = 0.20) -> list[tuple[Vm, Host, int, str]]:
    """MOM's default rule as the proposal (shrink when the host is short of memory, else grow back),
    passed through :func:`safe_target`. Returns (VM, host, target MiB, why)."""
    out = []
    for host in cluster.hosts:
        running = [v for v in host.vms if v.running and v.balloon.current_mib]
        free = 1 - sum(v.balloon_mib for v in running) / max(1, host.memory_mib)
        for vm in running:
            prev_host = previous.host(host.name) if previous else None
            prev = prev_host.vm(vm.name) if prev_host else None
            pressure = under_pressure(vm, prev)
            cur = vm.balloon.current_mib or vm.memory_mib
            proposed = cur * (1 - MAX_CHANGE) if free < host_free_threshold else float(vm.memory_mib)
            target = safe_target(vm, proposed, pressure)
            if target is not None:
                why = "guest under memory pressure: deflate" if pressure else (
                    f"host free memory {100 * free:.0f} % < {100 * host_free_threshold:.0f} %: shrink"
                    if free < host_free_threshold else "host has room: give memory back")
                out.append((vm, host, target, why))
    return out
