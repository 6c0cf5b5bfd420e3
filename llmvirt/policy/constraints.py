"""Hard constraints as the action mask: which hosts may take a VM, and why the others may not.

The policy proposes, constraints dispose: every placement or migration a policy scores
is first filtered here, and the executor re-checks the same rules against live state.
Each excluded host carries the name of the first constraint that excluded it, so
``place`` and ``rebalance`` can report it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmvirt.model.arrays import gpus_held, plain_gpus
from llmvirt.model.cluster import Cluster, Host, Vm

CAPACITY_CPU = "capacity_cpu"
CAPACITY_MEMORY = "capacity_memory"
GPU_AVAILABILITY = "gpu_availability"
GPU_TYPE = "gpu_type"
PASSTHROUGH_NOT_MIGRATABLE = "passthrough_not_live_migratable"
ANTI_AFFINITY = "anti_affinity"
MAINTENANCE = "maintenance"
RESERVED_CAPACITY = "reserved_capacity"
SAME_HOST = "already_there"
HOST_PINNING = "host_pinning"


@dataclass(frozen=True)
class Limits:
    """Allocation limits of the fleet (like Nova's allocation ratios) and reserved host capacity."""

    cpu_allocation_ratio: float = 4.0  #: vCPUs allowed per host CPU
    ram_allocation_ratio: float = 1.0  #: memory allowed per host memory
    reserved_cpus: int = 0  #: host CPUs kept for the host itself
    reserved_memory_mib: int = 1024  #: host memory kept for the host itself


@dataclass(frozen=True)
class Request:
    """What a new VM (or a VM being moved) needs."""

    vcpus: int  #: vCPUs
    memory_mib: int  #: maximum memory
    gpus: int = 0  #: whole GPUs by PCI passthrough
    vgpu_type: str | None = None  #: mediated device type, e.g. nvidia-1155
    anti_affinity: str | None = None  #: group whose members must be on different hosts
    name: str = ""  #: VM name (for anti-affinity membership of an existing VM)
    allowed_hosts: tuple[str, ...] = ()  #: host pinning: the only hosts this VM may run on (empty: any)
    expected_cpu: float = 0.5  #: expected CPU use as a share of its vCPUs (placement scores the hosts with it)


@dataclass
class Verdict:
    """Feasible hosts, and the reason for each excluded one."""

    feasible: list[str] = field(default_factory=list)  #: host names
    excluded: dict[str, str] = field(default_factory=dict)  #: host name -> constraint


def request_of(vm: Vm, group: str | None = None, allowed_hosts: tuple[str, ...] = ()) -> Request:
    """The request an existing VM makes of a destination."""
    vgpu = next((g.mdev_type for g in vm.gpus if g.kind == "vgpu"), None)
    return Request(vcpus=vm.vcpus, memory_mib=vm.memory_mib,
                   gpus=sum(1 for g in vm.gpus if g.kind == "passthrough"), vgpu_type=vgpu,
                   anti_affinity=group, name=vm.name, allowed_hosts=allowed_hosts)


def free_gpus(host: Host) -> int:
    """GPUs on the host with no VM holding them (passthrough or vGPU)."""
    return len(plain_gpus(host) - frozenset().union(*(gpus_held(v) for v in host.vms if v.running)))


def vgpu_available(host: Host, mdev_type: str) -> bool:
    """True when some GPU on the host can still create an mdev of this type."""
    return any(t.type == mdev_type and t.available > 0 for g in host.gpus for t in g.mdev_types)


def check_host(host: Host, req: Request, limits: Limits, groups: dict[str, str],
               exclude_vm: str | None = None) -> str | None:
    """The first constraint ``host`` violates for ``req``, or None when it may take it.

    ``groups`` maps VM name -> anti-affinity group; ``exclude_vm`` leaves the moving VM
    itself out of the host's load (it is being counted where it already runs).
    """
    if host.maintenance:
        return MAINTENANCE
    if req.allowed_hosts and host.name not in req.allowed_hosts:
        return HOST_PINNING
    others = [v for v in host.vms if v.running and v.name != exclude_vm]
    vcpus = sum(v.vcpus for v in others)
    memory = sum(v.balloon_mib for v in others)
    cpu_cap = (host.cpus - limits.reserved_cpus) * limits.cpu_allocation_ratio
    mem_cap = (host.memory_mib - limits.reserved_memory_mib) * limits.ram_allocation_ratio
    # Without the reservation it would fit: the reservation is what excludes the host.
    if vcpus + req.vcpus > cpu_cap:
        return RESERVED_CAPACITY if vcpus + req.vcpus <= host.cpus * limits.cpu_allocation_ratio else CAPACITY_CPU
    if memory + req.memory_mib > mem_cap:
        return (RESERVED_CAPACITY if memory + req.memory_mib <= host.memory_mib * limits.ram_allocation_ratio
                else CAPACITY_MEMORY)
    if req.gpus and free_gpus(host) < req.gpus:
        return GPU_AVAILABILITY
    if req.vgpu_type and not vgpu_available(host, req.vgpu_type):
        return GPU_TYPE if not any(t.type == req.vgpu_type for g in host.gpus for t in g.mdev_types) \
            else GPU_AVAILABILITY
    if req.anti_affinity and any(groups.get(v.name) == req.anti_affinity for v in others):
        return ANTI_AFFINITY
    return None


def migration_mask(cluster: Cluster, vm: Vm, src: Host, limits: Limits, groups: dict[str, str]) -> Verdict:
    """Which hosts ``vm`` (running on ``src``) may live-migrate to."""
    out = Verdict()
    if vm.has_pci_passthrough:
        out.excluded = {h.name: PASSTHROUGH_NOT_MIGRATABLE for h in cluster.hosts}
        return out
    req = request_of(vm, groups.get(vm.name))
    for h in cluster.hosts:
        reason = SAME_HOST if h.name == src.name else check_host(h, req, limits, groups, exclude_vm=vm.name)
        if reason is None:
            out.feasible.append(h.name)
        else:
            out.excluded[h.name] = reason
    return out
