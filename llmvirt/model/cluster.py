"""The one Cluster model shared by the inventory, the store and (later) the simulator.

Everything that plans, scores or explains takes a :class:`Cluster` and never
needs to know whether it was scanned from libvirt or built from a trace.
Sizes are MiB, CPU utilisation is a fraction of the VM's vCPUs (0..1).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NumaCell:
    """One host NUMA cell."""

    id: int  #: cell number as libvirt reports it
    cpus: tuple[int, ...]  #: host CPU ids in this cell
    memory_mib: int  #: memory attached to this cell


@dataclass(frozen=True)
class MdevType:
    """A mediated-device (vGPU) type a GPU offers."""

    type: str  #: mdev type id, e.g. ``nvidia-700``
    name: str | None  #: human name, e.g. ``GRID H100-4C``
    available: int  #: instances that can still be created


@dataclass(frozen=True)
class NvmlGpu:
    """NVML's view of one NVIDIA GPU on the local host."""

    pci: str  #: PCI address, normalised ``0000:41:00.0``
    name: str  #: NVML product name
    uuid: str  #: NVML GPU UUID
    memory_used_mib: int  #: framebuffer memory used
    memory_total_mib: int  #: framebuffer memory total
    utilization_pct: int | None  #: GPU utilisation, percent (None if NVML cannot tell)
    mig_mode: str | None  #: ``enabled``/``disabled``, None when unsupported


@dataclass(frozen=True)
class Gpu:
    """A GPU (PCI display/3D controller) on a host, from libvirt's node devices."""

    pci: str  #: PCI address, normalised ``0000:41:00.0``
    vendor: str  #: vendor name
    vendor_id: str  #: PCI vendor id, e.g. ``0x10de``
    model: str  #: product name
    product_id: str  #: PCI product id
    driver: str | None  #: bound kernel driver (``vfio-pci``, ``nvidia``, ...)
    mdev_types: tuple[MdevType, ...] = ()  #: vGPU types offered
    mdevs: tuple[tuple[str, str], ...] = ()  #: existing mdevs as (uuid, type)
    nvml: NvmlGpu | None = None  #: NVML view when available locally


@dataclass(frozen=True)
class GpuAttachment:
    """A GPU given to a VM: PCI passthrough or a mediated device (vGPU)."""

    kind: str  #: ``passthrough`` or ``vgpu``
    pci: str | None = None  #: passthrough: host PCI address
    mdev_uuid: str | None = None  #: vgpu: mdev UUID
    mdev_type: str | None = None  #: vgpu: mdev type, when the host knows the mdev
    parent_pci: str | None = None  #: vgpu: PCI address of the parent GPU, when known


@dataclass(frozen=True)
class Balloon:
    """Balloon figures of a VM in MiB; guest-reported ones are None when the guest says nothing."""

    current_mib: int | None = None  #: balloon size the host set (``balloon.current``)
    maximum_mib: int | None = None  #: maximum balloon size (``balloon.maximum``)
    rss_mib: int | None = None  #: resident set size of the QEMU process
    unused_mib: int | None = None  #: guest-reported free memory
    available_mib: int | None = None  #: guest-reported total memory
    usable_mib: int | None = None  #: guest-reported memory usable without swapping
    swap_in_mib: int | None = None  #: guest-reported swap in, cumulative
    swap_out_mib: int | None = None  #: guest-reported swap out, cumulative
    major_faults: int | None = None  #: guest-reported major page faults, cumulative


@dataclass
class Vm:
    """A virtual machine, running or only defined."""

    name: str  #: libvirt domain name
    uuid: str  #: libvirt domain UUID
    state: str = "running"  #: running, paused, shutoff, ...
    vcpus: int = 1  #: current vCPUs
    max_vcpus: int = 1  #: maximum vCPUs
    memory_mib: int = 0  #: maximum memory
    current_memory_mib: int = 0  #: current memory (configured balloon target)
    balloon: Balloon = field(default_factory=Balloon)  #: balloon statistics
    pinning: dict[int, tuple[int, ...]] = field(default_factory=dict)  #: live vCPU -> host CPUs
    persistent_pinning: dict[int, tuple[int, ...]] = field(default_factory=dict)  #: cputune in the persistent config
    emulator_pinning: tuple[int, ...] | None = None  #: emulator thread host CPUs
    numa_tune: dict[str, str] | None = None  #: numatune memory mode and nodeset
    cpu_time_ns: int | None = None  #: cumulative CPU time
    cpu_util: float | None = None  #: fraction of the VM's vCPUs used, from two snapshots
    gpus: list[GpuAttachment] = field(default_factory=list)  #: GPU attachments
    pci_hostdevs: tuple[str, ...] = ()  #: every PCI passthrough address, GPU or not (blocks live migration)
    persistent: bool = True  #: defined persistently on the host

    @property
    def running(self) -> bool:
        """True when the VM is running (or paused, still holding resources)."""
        return self.state in ("running", "paused", "blocked", "pmsuspended")

    @property
    def balloon_mib(self) -> int:
        """Memory the VM holds now: the balloon's current size, else the configured current memory."""
        if self.balloon.current_mib is not None:
            return self.balloon.current_mib
        return self.current_memory_mib

    @property
    def has_passthrough_gpu(self) -> bool:
        """True when a PCI-passthrough GPU makes the VM non-live-migratable."""
        return any(g.kind == "passthrough" for g in self.gpus)

    @property
    def has_pci_passthrough(self) -> bool:
        """True when any PCI device is passed through (libvirt cannot live-migrate it)."""
        return bool(self.pci_hostdevs)


@dataclass
class Host:
    """A KVM host with its capacity and the VMs it carries."""

    name: str  #: registered name (test hosts share one hostname, so this is the identity)
    uri: str  #: libvirt URI
    cpus: int = 0  #: logical CPUs
    memory_mib: int = 0  #: total memory
    free_memory_mib: int | None = None  #: free memory as the host reports it
    cpu_model: str = ""  #: CPU model
    cpu_mhz: int = 0  #: CPU frequency
    hostname: str = ""  #: hostname libvirt reports (not unique across test hosts)
    libvirt_version: str = ""  #: libvirt library version on the host
    hypervisor: str = ""  #: hypervisor type and version, e.g. ``QEMU 7.2.0``
    numa_cells: list[NumaCell] = field(default_factory=list)  #: NUMA topology
    gpus: list[Gpu] = field(default_factory=list)  #: GPUs
    vms: list[Vm] = field(default_factory=list)  #: VMs defined or running here
    maintenance: bool = False  #: host is in maintenance: nothing new lands here
    notes: list[str] = field(default_factory=list)  #: scan notes, e.g. "NVML not available"

    def vm(self, name: str) -> Vm | None:
        """The VM called ``name`` on this host, or None."""
        return next((v for v in self.vms if v.name == name), None)

    @property
    def allocated_vcpus(self) -> int:
        """vCPUs of running VMs."""
        return sum(v.vcpus for v in self.vms if v.running)

    @property
    def allocated_memory_mib(self) -> int:
        """Memory held by running VMs (their balloon size)."""
        return sum(v.balloon_mib for v in self.vms if v.running)

    @property
    def used_cpus(self) -> float | None:
        """Host CPUs busy with VM work, None until utilisation is known."""
        utils = [v.cpu_util * v.vcpus for v in self.vms if v.running and v.cpu_util is not None]
        return sum(utils) if utils else None


@dataclass
class Cluster:
    """A set of hosts; the unit every planner and scorer works on."""

    hosts: list[Host] = field(default_factory=list)  #: hosts by registration order

    def host(self, name: str) -> Host | None:
        """The host called ``name``, or None."""
        return next((h for h in self.hosts if h.name == name), None)

    def locate(self, vm_name: str) -> list[Host]:
        """Hosts where a VM of this name is running (more than one means trouble)."""
        return [h for h in self.hosts if (v := h.vm(vm_name)) is not None and v.running]


@dataclass
class ScanResult:
    """Hosts that were read and hosts that failed, with libvirt's reason (what a scan hands the store)."""

    hosts: list[Host] = field(default_factory=list)  #: hosts read successfully
    failures: dict[str, str] = field(default_factory=dict)  #: host name -> reason
    seconds: float = 0.0  #: wall time of the scan
