"""One array model of a cluster: what every strategy decides on, in the simulator and on real hosts.

:class:`ClusterArrays` holds hosts and VMs by index, with their names beside the arrays (VMs are
never identified by parsing a name). It is built from a trace by the simulator (identical hosts,
one per :class:`FleetSetup`) or from a scanned or stored :class:`~llmvirt.model.cluster.Cluster`
by :meth:`ClusterArrays.from_cluster` (hosts of any size, GPUs, vGPU types, anti-affinity groups).
Only running VMs are in it.

Units: CPU demand in MHz (``vm_cpu_mhz``, what the simulator's traces measure) and in CPUs
(``vm_cpus_used``, what placement weighs); memory in MiB. Per-host totals of the running VMs
(:meth:`ClusterArrays.totals`) are kept in each host's VM order, so a planned move
(:meth:`ClusterArrays.move`) gives exactly the sums a fresh build of the edited cluster gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmvirt.model.cluster import Balloon, Cluster, Host, NumaCell, Vm

DEFAULT_MHZ = 1000.0  #: a host that reports no clock speed (libvirt's test driver) counts this per CPU
DEFAULT_UTIL = 0.5  #: CPU use assumed for a VM with no measurement yet


def expected_util(vm_cpu_util: float | None, default: float = DEFAULT_UTIL) -> float:
    """The CPU use to expect from a VM: its measured utilisation, or ``default`` when unknown."""
    return default if vm_cpu_util is None else float(vm_cpu_util)


@dataclass(frozen=True)
class FleetSetup:
    """Host size and allocation limits of a fleet of identical hosts (the simulator's scenarios).
    The defaults make a fleet that overloads now and then."""

    host_cores: int = 64  #: physical cores per host
    mhz_per_core: float = 2600.0  #: per core
    host_mem_mib: float = 768 * 1024.0  #: per host
    cpu_allocation_ratio: float = 4.0  #: provisioned vCPUs per core allowed
    ram_allocation_ratio: float = 1.0  #: provisioned memory per host memory allowed
    fill: float = 1.0  #: initial packing: fraction of the allocation limits used by first-fit decreasing
    migration_gbit_s: float = 10.0  #: network for migration time

    @property
    def host_mhz(self) -> float:
        """CPU capacity of one host."""
        return self.host_cores * self.mhz_per_core


@dataclass
class HostRules:
    """What the hard placement rules read beyond sizes: GPUs, vGPU types, anti-affinity groups."""

    plain_gpus: list[frozenset[str]]  #: per host: PCI addresses of its GPUs without mediated devices
    vm_gpus: list[frozenset[str]]  #: per VM: GPU PCI addresses it holds (passthrough, or a vGPU's parent)
    vgpu_offered: dict[str, np.ndarray]  #: mdev type -> per host: offers it
    vgpu_free: dict[str, np.ndarray]  #: mdev type -> per host: can still create one
    vm_group: list[str | None]  #: per VM: its anti-affinity group


@dataclass
class HostTotals:
    """Per-host totals of the running VMs, in each host's VM order."""

    vcpus: np.ndarray  #: allocated vCPUs
    memory: np.ndarray  #: allocated memory (balloon sizes), MiB
    used: np.ndarray  #: expected CPU use, in CPUs
    count: np.ndarray  #: running VMs
    free_gpus: np.ndarray  #: GPUs nobody holds
    groups: dict[str, np.ndarray]  #: anti-affinity group -> host runs a member


@dataclass
class ClusterArrays:
    """A cluster's state as arrays (the same figures a scan gives for real hosts)."""

    setup: FleetSetup  #: host size (of identical hosts) and allocation limits
    vm_host: np.ndarray  #: host of each VM
    vm_vcpus: np.ndarray  #: provisioned vCPUs
    vm_mem_cap: np.ndarray  #: provisioned memory, MiB
    vm_cpu_mhz: np.ndarray  #: CPU used now
    vm_mem_mib: np.ndarray  #: memory used now
    vm_balloon: np.ndarray  #: balloon target now, MiB
    vm_unused_mib: np.ndarray  #: guest-reported unused memory (target minus use)
    n_hosts: int  #: hosts in the fleet
    maintenance: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  #: per host
    host_names: list[str] = field(default_factory=list)  #: per host index (empty: ``sim-<index>``)
    vm_names: list[str] = field(default_factory=list)  #: per VM index (empty: ``vm-<index>``)
    vm_uuids: list[str] = field(default_factory=list)  #: per VM index (stored history is keyed by it)
    movable: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  #: per VM: may live-migrate
    host_cpus: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: per scanned host CPUs (see host_sizes)
    host_mem_mib: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: per scanned host memory, MiB
    vm_cpus_used: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: per VM expected CPU use, in CPUs
    rules: HostRules | None = None  #: GPUs, vGPU types, groups (None: none of them)
    _host_vms: list[list[int]] | None = field(default=None, init=False, repr=False)  # per host, its VMs in order
    _totals: HostTotals | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        """Fill what a trace-built model leaves out: no host in maintenance, every VM movable."""
        n_v = int(self.vm_host.size)
        if self.maintenance.size == 0:
            self.maintenance = np.zeros(self.n_hosts, dtype=bool)
        if self.movable.size == 0:
            self.movable = np.ones(n_v, dtype=bool)

    @classmethod
    def from_cluster(cls, cluster: Cluster, setup: FleetSetup | None = None,
                     groups: dict[str, str] | None = None) -> ClusterArrays:
        """The running VMs of a scanned or stored cluster. ``setup`` carries the allocation ratios (its host
        size is the first host's when not given); ``groups`` maps a VM name to its anti-affinity group."""
        hosts = cluster.hosts
        rows = []  # one pass over the running VMs, host by host
        for h, host in enumerate(hosts):
            mhz = float(host.cpu_mhz or DEFAULT_MHZ)
            for v in host.vms:
                if v.running:
                    util, b = expected_util(v.cpu_util), float(v.balloon_mib)
                    rows.append((h, v.vcpus, float(v.memory_mib), util * v.vcpus * mhz, _mem_used(v, b), b,
                                 v.vcpus * util, not v.has_pci_passthrough))
        cols = list(zip(*rows, strict=True)) if rows else [()] * 8
        first = hosts[0] if hosts else Host(name="", uri="")
        setup = setup or FleetSetup()
        setup = FleetSetup(max(1, first.cpus), float(first.cpu_mhz or DEFAULT_MHZ), float(first.memory_mib),
                           setup.cpu_allocation_ratio, setup.ram_allocation_ratio, setup.fill, setup.migration_gbit_s)
        used, balloon = np.array(cols[4], dtype=float), np.array(cols[5], dtype=float)
        running = [v for host in hosts for v in host.vms if v.running]
        with_rules = groups or any(host.gpus for host in hosts) or any(v.gpus for v in running)
        return cls(
            setup, np.array(cols[0], dtype=np.int64), np.array(cols[1], dtype=np.int64),
            np.array(cols[2], dtype=float), np.array(cols[3], dtype=float), used, balloon,
            np.maximum(balloon - used, 0.0), len(hosts), np.array([h.maintenance for h in hosts], dtype=bool),
            [h.name for h in hosts], [v.name for v in running], [v.uuid for v in running],
            np.array(cols[7], dtype=bool), np.array([float(h.cpus) for h in hosts]),
            np.array([float(h.memory_mib) for h in hosts]), np.array(cols[6], dtype=float),
            _rules(hosts, running, groups or {}) if with_rules else None)

    # names ---------------------------------------------------------------------------------------------------

    def vm_name(self, v: int) -> str:
        """Name of VM ``v``."""
        return self.vm_names[v] if self.vm_names else f"vm-{v}"

    def host_name(self, h: int) -> str:
        """Name of host ``h``."""
        return self.host_names[h] if self.host_names else f"sim-{h}"

    def named(self, pairs: list[tuple[int, int]]) -> list[tuple[str, str]]:
        """``(vm index, host index)`` decisions as ``(vm name, host name)``."""
        return [(self.vm_name(v), self.host_name(h)) for v, h in pairs]

    def vm_index(self) -> dict[str, int]:
        """VM name -> index."""
        return {self.vm_name(v): v for v in range(self.vm_host.size)}

    def host_index(self) -> dict[str, int]:
        """Host name -> index."""
        return {self.host_name(h): h for h in range(self.n_hosts)}

    # per host ------------------------------------------------------------------------------------------------

    def host_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Per host (CPUs, memory MiB): the scanned hosts' own, else the setup's (identical simulated hosts)."""
        if self.host_cpus.size:
            return self.host_cpus, self.host_mem_mib
        return np.full(self.n_hosts, float(self.setup.host_cores)), np.full(self.n_hosts, self.setup.host_mem_mib)

    def host_sum(self, per_vm: np.ndarray) -> np.ndarray:
        """Sum a per-VM figure per host."""
        return np.bincount(self.vm_host, per_vm, minlength=self.n_hosts)

    def cpus_used(self) -> np.ndarray:
        """Per VM expected CPU use in CPUs (from the MHz figures where the model came from a trace)."""
        if self.vm_cpus_used.size != self.vm_host.size:
            self.vm_cpus_used = self.vm_cpu_mhz / self.setup.mhz_per_core
        return self.vm_cpus_used

    def totals(self) -> HostTotals:
        """Per-host totals of the running VMs, computed at first use and kept up to date by :meth:`move` (a
        planner moves VMs through it, never by writing ``vm_host``)."""
        if self._totals is None:
            n, host = self.n_hosts, self.vm_host
            self._host_vms = [[] for _ in range(n)]
            for v, h in enumerate(host.tolist()):
                self._host_vms[h].append(v)
            # bincount adds in VM order, as the sums over each host's list do: the same bits either way
            self._totals = HostTotals(np.bincount(host, self.vm_vcpus.astype(float), minlength=n),
                                      np.bincount(host, self.vm_balloon.astype(float), minlength=n),
                                      np.bincount(host, self.cpus_used(), minlength=n),
                                      np.bincount(host, minlength=n).astype(float), np.zeros(n), {})
            r = self.rules
            if r is not None:
                grouped = {int(host[v]) for v, g in enumerate(r.vm_group) if g is not None}
                for h in sorted(grouped | {h for h in range(n) if r.plain_gpus[h]}):
                    self._refresh_rules(h)
        return self._totals

    def load(self) -> np.ndarray:
        """Expected CPU use of every host, as a fraction of its CPUs."""
        return self.totals().used / np.maximum(1, self.host_sizes()[0])

    def move(self, v: int, dst: int) -> None:
        """Apply a planned move of VM ``v`` to host ``dst`` (it joins the end of ``dst``'s VMs)."""
        self.totals()
        hv = self._host_vms
        assert hv is not None
        src = int(self.vm_host[v])
        hv[src].remove(v)
        hv[dst].append(v)
        self.vm_host[v] = dst
        for h in (src, dst):
            self._refresh(h)

    def _refresh(self, h: int) -> None:
        t, on = self._totals, (self._host_vms or [])[h]
        assert t is not None
        used = self.cpus_used()
        t.vcpus[h] = sum(int(self.vm_vcpus[v]) for v in on)
        t.memory[h] = sum(float(self.vm_balloon[v]) for v in on)
        t.used[h] = sum(float(used[v]) for v in on)
        t.count[h] = len(on)
        self._refresh_rules(h)

    def _refresh_rules(self, h: int) -> None:
        t, on, r = self._totals, (self._host_vms or [])[h], self.rules
        if r is None or t is None:
            return
        held = frozenset().union(*(r.vm_gpus[v] for v in on))
        t.free_gpus[h] = len(r.plain_gpus[h] - held)
        for arr in t.groups.values():
            arr[h] = False
        for v in on:
            if r.vm_group[v] is not None:
                t.groups.setdefault(r.vm_group[v], np.zeros(self.n_hosts, dtype=bool))[h] = True

    # the shared Cluster model --------------------------------------------------------------------------------

    def to_cluster(self) -> Cluster:
        """The same state as the shared Cluster model (what features and explanations read)."""
        s = self.setup
        cpus, mem = self.host_sizes()
        hosts = [Host(name=self.host_name(h), uri="sim://", cpus=int(cpus[h]), memory_mib=int(mem[h]),
                      cpu_mhz=int(s.mhz_per_core), maintenance=bool(self.maintenance[h]),
                      numa_cells=[NumaCell(0, tuple(range(int(cpus[h]))), int(mem[h]))])
                 for h in range(self.n_hosts)]
        for v, h in enumerate(self.vm_host):
            vc = max(1, int(self.vm_vcpus[v]))
            uuid = self.vm_uuids[v] if self.vm_uuids else f"00000000-0000-4000-8000-{v:012d}"
            hosts[h].vms.append(Vm(
                name=self.vm_name(v), uuid=uuid, vcpus=vc, max_vcpus=vc,
                memory_mib=int(self.vm_mem_cap[v]), current_memory_mib=int(self.vm_balloon[v]),
                balloon=Balloon(current_mib=int(self.vm_balloon[v]), maximum_mib=int(self.vm_mem_cap[v]),
                                unused_mib=int(self.vm_unused_mib[v]), available_mib=int(self.vm_balloon[v])),
                cpu_util=float(self.vm_cpu_mhz[v] / (vc * s.mhz_per_core))))
        return Cluster(hosts=hosts)

    def names(self, cluster: Cluster) -> tuple[dict[str, int], dict[str, int]]:
        """Index of each VM and host name in the arrays, for a cluster made by :meth:`to_cluster` (decisions
        on the Cluster map back to array indices by these, never by parsing names)."""
        vm_index: dict[str, int] = {}
        for h, host in enumerate(cluster.hosts):
            on = np.flatnonzero(self.vm_host == h)
            vm_index.update({vm.name: int(i) for vm, i in zip(host.vms, on, strict=True)})
        return vm_index, {host.name: h for h, host in enumerate(cluster.hosts)}


def _mem_used(vm: Vm, balloon_mib: float) -> float:
    """A VM's memory in use: what its guest reports (balloon minus unused), else its balloon size."""
    b = vm.balloon
    if b.available_mib is not None and b.unused_mib is not None:
        return float(max(0, b.available_mib - b.unused_mib))
    return balloon_mib


def gpus_held(vm: Vm) -> frozenset[str]:
    """PCI addresses of the GPUs a VM holds: passed through, or the parent of its vGPU."""
    return frozenset({g.pci for g in vm.gpus if g.kind == "passthrough"}
                     | {g.parent_pci for g in vm.gpus if g.kind == "vgpu"})


def plain_gpus(host: Host) -> frozenset[str]:
    """PCI addresses of a host's GPUs without mediated devices (whole GPUs a VM may take)."""
    return frozenset(g.pci for g in host.gpus if not g.mdevs)


def _rules(hosts: list[Host], vms: list[Vm], groups: dict[str, str]) -> HostRules:
    n = len(hosts)
    offered: dict[str, np.ndarray] = {}
    free: dict[str, np.ndarray] = {}
    for i, h in enumerate(hosts):
        for g in h.gpus:
            for t in g.mdev_types:
                offered.setdefault(t.type, np.zeros(n, dtype=bool))[i] = True
                if t.available > 0:
                    free.setdefault(t.type, np.zeros(n, dtype=bool))[i] = True
    return HostRules([plain_gpus(h) for h in hosts], [gpus_held(v) for v in vms], offered, free,
                     [groups.get(v.name) for v in vms])
