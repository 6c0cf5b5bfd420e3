"""A vectorised view of a Cluster for fast placement: per-host arrays built once per snapshot.

``mask`` and ``features`` give exactly what :func:`constraints.check_host` and
:func:`features.pair_features` give host by host (a test holds them equal), but for
all hosts at once, so a decision among 1,000 hosts takes a few array operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmvirt.model.cluster import Cluster, Host
from llmvirt.policy import constraints as c
from llmvirt.policy.constraints import Limits, Request
from llmvirt.policy.features import expected_util


@dataclass
class ClusterIndex:
    """Per-host totals of the running VMs."""

    hosts: list[Host]  #: in cluster order
    cpus: np.ndarray  #: host CPUs
    mem: np.ndarray  #: host memory, MiB
    maintenance: np.ndarray  #: bool
    vcpus: np.ndarray  #: allocated vCPUs
    memory: np.ndarray  #: allocated memory (balloon sizes)
    used: np.ndarray  #: expected CPU use, in CPUs
    count: np.ndarray  #: running VMs
    free_gpus: np.ndarray  #: GPUs nobody holds
    vgpu_offered: dict[str, np.ndarray]  #: mdev type -> host offers it
    vgpu_free: dict[str, np.ndarray]  #: mdev type -> host can still create one
    groups: dict[str, np.ndarray]  #: anti-affinity group -> host runs a member
    row: dict[str, int] = None  # type: ignore[assignment]  #: host name -> row
    _groups: dict[str, str] = None  # type: ignore[assignment]  # VM -> group, for refresh

    @classmethod
    def build(cls, cluster: Cluster, groups: dict[str, str]) -> ClusterIndex:
        """One pass over the cluster."""
        n = len(cluster.hosts)
        z = np.zeros(n)
        idx = cls(list(cluster.hosts), z.copy(), z.copy(), np.zeros(n, dtype=bool), z.copy(), z.copy(), z.copy(),
                  z.copy(), z.copy(), {}, {}, {})
        idx._groups = groups
        idx.row = {h.name: i for i, h in enumerate(cluster.hosts)}
        for i in range(n):
            idx.refresh(i)
        return idx

    def refresh(self, i: int) -> None:
        """Recompute host ``i``'s totals from its current VMs (after a planned move)."""
        h = self.hosts[i]
        n = len(self.hosts)
        self.cpus[i], self.mem[i], self.maintenance[i] = h.cpus, h.memory_mib, h.maintenance
        running = [v for v in h.vms if v.running]
        self.vcpus[i] = sum(v.vcpus for v in running)
        self.memory[i] = sum(v.balloon_mib for v in running)
        self.used[i] = sum(v.vcpus * expected_util(v.cpu_util) for v in running)
        self.count[i] = len(running)
        self.free_gpus[i] = c.free_gpus(h)
        for table in (self.vgpu_offered, self.vgpu_free, self.groups):
            for arr in table.values():
                arr[i] = False
        for g in h.gpus:
            for t in g.mdev_types:
                self.vgpu_offered.setdefault(t.type, np.zeros(n, dtype=bool))[i] = True
                if t.available > 0:
                    self.vgpu_free.setdefault(t.type, np.zeros(n, dtype=bool))[i] = True
        for v in running:
            if v.name in self._groups:
                self.groups.setdefault(self._groups[v.name], np.zeros(n, dtype=bool))[i] = True

    def load(self) -> np.ndarray:
        """Expected CPU use of every host, as a fraction of its CPUs."""
        return self.used / np.maximum(1, self.cpus)

    def mask(self, req: Request, limits: Limits) -> np.ndarray:
        """Per host: "" when feasible, else the first constraint it violates (check_host's order)."""
        n = len(self.hosts)
        reason = np.full(n, "", dtype=object)

        def first(cond: np.ndarray, name: str) -> None:
            reason[(reason == "") & cond] = name

        first(self.maintenance, c.MAINTENANCE)
        if req.allowed_hosts:
            first(np.array([h.name not in req.allowed_hosts for h in self.hosts], dtype=bool), c.HOST_PINNING)
        need_cpu = self.vcpus + req.vcpus
        over_cpu = need_cpu > (self.cpus - limits.reserved_cpus) * limits.cpu_allocation_ratio
        fits_raw = need_cpu <= self.cpus * limits.cpu_allocation_ratio
        first(over_cpu & fits_raw, c.RESERVED_CAPACITY)
        first(over_cpu, c.CAPACITY_CPU)
        need_mem = self.memory + req.memory_mib
        over_mem = need_mem > (self.mem - limits.reserved_memory_mib) * limits.ram_allocation_ratio
        first(over_mem & (need_mem <= self.mem * limits.ram_allocation_ratio), c.RESERVED_CAPACITY)
        first(over_mem, c.CAPACITY_MEMORY)
        if req.gpus:
            first(self.free_gpus < req.gpus, c.GPU_AVAILABILITY)
        if req.vgpu_type:
            offered = self.vgpu_offered.get(req.vgpu_type, np.zeros(n, dtype=bool))
            free = self.vgpu_free.get(req.vgpu_type, np.zeros(n, dtype=bool))
            first(~free & ~offered, c.GPU_TYPE)
            first(~free, c.GPU_AVAILABILITY)
        if req.anti_affinity and req.anti_affinity in self.groups:
            first(self.groups[req.anti_affinity], c.ANTI_AFFINITY)
        return reason

    def features(self, req: Request, vm_util: float, limits: Limits, rows: np.ndarray) -> np.ndarray:
        """pair_features for a new VM on each host in ``rows``."""
        cpus = np.maximum(1, self.cpus[rows])
        mem = np.maximum(1, self.mem[rows])
        used = self.used[rows] / cpus
        add = req.vcpus * vm_util / cpus
        return np.column_stack([
            used, used + add,
            (self.vcpus[rows] + req.vcpus) / (cpus * limits.cpu_allocation_ratio),
            (self.memory[rows] + req.memory_mib) / (mem * limits.ram_allocation_ratio),
            self.count[rows] / 32, (self.count[rows] == 0).astype(float),
            req.vcpus / cpus, req.memory_mib / mem, np.full(rows.size, vm_util),
            np.maximum(-1.0, 1.0 - used - add), np.zeros(rows.size),
        ]).astype(np.float32)
