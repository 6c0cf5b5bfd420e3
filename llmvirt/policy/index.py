"""Placement's hard rules and features for every host at once, on the one array model of a cluster.

``mask`` and ``features`` give exactly what :func:`constraints.check_host` and
:func:`features.pair_features` give host by host (a test holds them equal), but for all hosts at
once from :class:`~llmvirt.model.arrays.ClusterArrays`' per-host totals, so a decision among
1,000 hosts takes a few array operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmvirt.model.arrays import ClusterArrays
from llmvirt.policy import constraints as c
from llmvirt.policy.constraints import Limits, Request


def mask(arrays: ClusterArrays, req: Request, limits: Limits) -> np.ndarray:
    """Per host: "" when feasible, else the first constraint it violates (check_host's order)."""
    t, n = arrays.totals(), arrays.n_hosts
    cpus, mem = arrays.host_sizes()
    reason = np.full(n, "", dtype=object)

    def first(cond: np.ndarray, name: str) -> None:
        reason[(reason == "") & cond] = name

    first(arrays.maintenance, c.MAINTENANCE)
    if req.allowed_hosts:
        first(np.array([arrays.host_name(h) not in req.allowed_hosts for h in range(n)], dtype=bool), c.HOST_PINNING)
    need_cpu = t.vcpus + req.vcpus
    over_cpu = need_cpu > (cpus - limits.reserved_cpus) * limits.cpu_allocation_ratio
    fits_raw = need_cpu <= cpus * limits.cpu_allocation_ratio
    first(over_cpu & fits_raw, c.RESERVED_CAPACITY)
    first(over_cpu, c.CAPACITY_CPU)
    need_mem = t.memory + req.memory_mib
    over_mem = need_mem > (mem - limits.reserved_memory_mib) * limits.ram_allocation_ratio
    first(over_mem & (need_mem <= mem * limits.ram_allocation_ratio), c.RESERVED_CAPACITY)
    first(over_mem, c.CAPACITY_MEMORY)
    rules = arrays.rules
    if req.gpus:
        first(t.free_gpus < req.gpus, c.GPU_AVAILABILITY)
    if req.vgpu_type:
        none = np.zeros(n, dtype=bool)
        offered = rules.vgpu_offered.get(req.vgpu_type, none) if rules else none
        free = rules.vgpu_free.get(req.vgpu_type, none) if rules else none
        first(~free & ~offered, c.GPU_TYPE)
        first(~free, c.GPU_AVAILABILITY)
    if req.anti_affinity and req.anti_affinity in t.groups:
        first(t.groups[req.anti_affinity], c.ANTI_AFFINITY)
    return reason


def features(arrays: ClusterArrays, req: Request, vm_util: float, limits: Limits, rows: np.ndarray,
             peak: np.ndarray | None = None) -> np.ndarray:
    """pair_features for a new VM on each host in ``rows``; ``peak``: every host's recent peak CPU use, CPUs."""
    t, (all_cpus, all_mem) = arrays.totals(), arrays.host_sizes()
    return host_features(HostTotals(t.used[rows], t.vcpus[rows], t.memory[rows], t.count[rows], all_cpus[rows],
                                    all_mem[rows], None if peak is None else peak[rows]),
                         req.vcpus, req.memory_mib, vm_util, limits)


@dataclass(frozen=True)
class HostTotals:
    """What placement reads of each candidate host (rows follow the candidates)."""

    used: np.ndarray  #: CPU in use, CPUs
    vcpus: np.ndarray  #: allocated vCPUs
    memory_mib: np.ndarray  #: allocated memory, MiB
    count: np.ndarray  #: VMs
    cpus: np.ndarray  #: the host's CPUs
    host_memory_mib: np.ndarray  #: the host's memory, MiB
    peak: np.ndarray | None = None  #: the host's recent peak CPU use, CPUs (NaN or None: unknown, its use now)


def host_features(h: HostTotals, vcpus: float, memory_mib: float, vm_util: float, limits: Limits) -> np.ndarray:
    """The placement features (:data:`llmvirt.policy.features.FEATURES`) of a new VM of ``vcpus`` and
    ``memory_mib``, expected to use ``vm_util`` of its vCPUs, on each host: one formula for scanned clusters and
    the simulator's placement scenario."""
    cpus = np.maximum(1, h.cpus)
    mem = np.maximum(1, h.host_memory_mib)
    used = h.used / cpus
    add = vcpus * vm_util / cpus
    return np.column_stack([
        used, used + add,
        (h.vcpus + vcpus) / (cpus * limits.cpu_allocation_ratio),
        (h.memory_mib + memory_mib) / (mem * limits.ram_allocation_ratio),
        h.count / 32, (h.count == 0).astype(float),
        vcpus / cpus, memory_mib / mem, np.full(cpus.size, vm_util),
        np.maximum(-1.0, 1.0 - used - add), np.zeros(cpus.size),
        (used if h.peak is None else np.where(np.isnan(h.peak), used, h.peak / cpus)) + add,
    ]).astype(np.float32)
