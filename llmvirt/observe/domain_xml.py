"""Domain XML in the virtinst style: one small class per element llmvirt reads or writes, each of which
both parses (``parse(element)``) and writes (``element()``).

The inventory reads domains through :func:`parse_domain` and the lab writes its guests through
:class:`Domain` (no hand-formatted XML). Only the elements llmvirt needs are modelled; a domain
parsed from a host and written again keeps those, not the rest (llmvirt never rewrites a VM's
definition: it changes pinning and balloons through libvirt's API calls).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from llmvirt.model.cluster import GpuAttachment
from llmvirt.observe.libvirt_xml import format_cpuset, int_text, parse_cpuset, pci_address, to_kib


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = text
    return el


@dataclass
class Memory:
    """``<memory>`` or ``<currentMemory>``, in MiB."""

    mib: int  #: size
    tag: str = "memory"  #: memory or currentMemory

    @classmethod
    def parse(cls, el: ET.Element) -> Memory:
        """From the element (any libvirt unit)."""
        return cls(to_kib(int_text(el.text), el.get("unit", "KiB")) // 1024, el.tag)

    def element(self) -> ET.Element:
        """The element, in MiB."""
        el = ET.Element(self.tag, unit="MiB")
        el.text = str(self.mib)
        return el


@dataclass
class Vcpu:
    """``<vcpu>``: the maximum, the current count, and a cpuset that pins every vCPU without its own pin."""

    count: int = 1  #: maximum vCPUs
    current: int | None = None  #: vCPUs online (None: all)
    placement: str | None = "static"  #: static or auto
    cpuset: tuple[int, ...] = ()  #: default pinning of every vCPU

    @classmethod
    def parse(cls, el: ET.Element) -> Vcpu:
        """From the element."""
        count = int_text(el.text, 1)
        return cls(count, int_text(el.get("current"), count) if el.get("current") else None, el.get("placement"),
                   parse_cpuset(el.get("cpuset", "")) if el.get("cpuset") else ())

    def element(self) -> ET.Element:
        """The element."""
        el = ET.Element("vcpu", {k: v for k, v in (("placement", self.placement),
                                                    ("cpuset", format_cpuset(self.cpuset) or None),
                                                    ("current", None if self.current is None else str(self.current)))
                                 if v is not None})
        el.text = str(self.count)
        return el


@dataclass
class CpuTune:
    """``<cputune>``: each vCPU's pinning and the emulator threads' pinning."""

    vcpupin: dict[int, tuple[int, ...]] = field(default_factory=dict)  #: vCPU -> host CPUs
    emulatorpin: tuple[int, ...] | None = None  #: emulator threads' host CPUs

    @classmethod
    def parse(cls, el: ET.Element) -> CpuTune:
        """From the element."""
        emu = el.find("emulatorpin")
        return cls({int(p.get("vcpu", "0")): parse_cpuset(p.get("cpuset", "")) for p in el.iterfind("vcpupin")},
                   parse_cpuset(emu.get("cpuset", "")) if emu is not None else None)

    def element(self) -> ET.Element:
        """The element."""
        el = ET.Element("cputune")
        for vcpu, cpus in sorted(self.vcpupin.items()):
            _sub(el, "vcpupin", vcpu=str(vcpu), cpuset=format_cpuset(cpus))
        if self.emulatorpin is not None:
            _sub(el, "emulatorpin", cpuset=format_cpuset(self.emulatorpin))
        return el


@dataclass
class NumaTune:
    """``<numatune><memory .../>``: where guest memory is allocated (mode, nodeset)."""

    memory: dict[str, str] = field(default_factory=dict)  #: the memory element's attributes

    @classmethod
    def parse(cls, el: ET.Element) -> NumaTune | None:
        """From the element, or None without a ``<memory>`` child."""
        mem = el.find("memory")
        return cls(dict(mem.attrib)) if mem is not None else None

    def element(self) -> ET.Element:
        """The element."""
        el = ET.Element("numatune")
        _sub(el, "memory", **self.memory)
        return el


@dataclass
class MemBalloon:
    """``<memballoon>``: the balloon device and how often the guest reports its memory statistics."""

    model: str = "virtio"  #: device model (none: no balloon)
    stats_period: int | None = None  #: seconds between statistics reports

    @classmethod
    def parse(cls, el: ET.Element) -> MemBalloon:
        """From the element."""
        stats = el.find("stats")
        return cls(el.get("model", "virtio"), int_text(stats.get("period")) if stats is not None else None)

    def element(self) -> ET.Element:
        """The element."""
        el = ET.Element("memballoon", model=self.model)
        if self.stats_period is not None:
            _sub(el, "stats", period=str(self.stats_period))
        return el


@dataclass
class HostDev:
    """``<hostdev>``: a passed-through PCI device or a mediated device (vGPU)."""

    kind: str  #: passthrough or vgpu
    pci: str | None = None  #: passthrough: PCI address 0000:41:00.0
    mdev_uuid: str | None = None  #: vgpu: the mdev's UUID

    @classmethod
    def parse(cls, el: ET.Element) -> HostDev | None:
        """From the element, or None for another kind of host device."""
        addr = el.find("./source/address")
        if addr is None:
            return None
        if el.get("type") == "pci":
            return cls("passthrough", pci=pci_address(int_text(addr.get("domain")), int_text(addr.get("bus")),
                                                      int_text(addr.get("slot")), int_text(addr.get("function"))))
        if el.get("type") == "mdev":
            return cls("vgpu", mdev_uuid=addr.get("uuid"))
        return None

    def element(self) -> ET.Element:
        """The element (managed PCI passthrough, or a vfio-pci mdev)."""
        if self.kind == "passthrough":
            el = ET.Element("hostdev", mode="subsystem", type="pci", managed="yes")
            dom, bus, rest = (self.pci or "0000:00:00.0").split(":")
            slot, fn = rest.split(".")
            _sub(_sub(el, "source"), "address", domain=f"0x{dom}", bus=f"0x{bus}", slot=f"0x{slot}",
                 function=f"0x{fn}")
            return el
        el = ET.Element("hostdev", mode="subsystem", type="mdev", model="vfio-pci")
        _sub(_sub(el, "source"), "address", uuid=self.mdev_uuid or "")
        return el

    def attachment(self) -> GpuAttachment:
        """The Cluster model's view of it."""
        return GpuAttachment(kind=self.kind, pci=self.pci, mdev_uuid=self.mdev_uuid)


@dataclass
class Os:
    """``<os>``: an HVM guest's architecture and machine, booting from its disk or directly from a kernel and
    initrd (the lab's guests)."""

    kernel: str | None = None  #: kernel path on the host (direct boot)
    initrd: str | None = None  #: initrd path on the host
    cmdline: str | None = None  #: kernel command line
    arch: str | None = "x86_64"  #: guest architecture
    machine: str | None = None  #: machine type (None: libvirt's default)

    @classmethod
    def parse(cls, el: ET.Element) -> Os:
        """From the element."""
        t = el.find("type")
        return cls(el.findtext("kernel"), el.findtext("initrd"), el.findtext("cmdline"),
                   t.get("arch") if t is not None else None, t.get("machine") if t is not None else None)

    def element(self) -> ET.Element:
        """The element."""
        el = ET.Element("os")
        _sub(el, "type", "hvm", arch=self.arch, machine=self.machine)  # type: ignore[arg-type]
        for tag, text in (("kernel", self.kernel), ("initrd", self.initrd), ("cmdline", self.cmdline)):
            if text is not None:
                _sub(el, tag, text)
        return el


@dataclass
class CpuModel:
    """``<cpu mode='custom'>``: a named CPU model with features turned off."""

    model: str = "qemu64"  #: CPU model name
    disabled: tuple[str, ...] = ()  #: features with policy disable

    @classmethod
    def parse(cls, el: ET.Element) -> CpuModel | None:
        """From the element, or None for another CPU mode."""
        if el.get("mode") != "custom":
            return None
        return cls(el.findtext("model", "qemu64"),
                   tuple(f.get("name", "") for f in el.iterfind("feature") if f.get("policy") == "disable"))

    def element(self) -> ET.Element:
        """The element."""
        el = ET.Element("cpu", mode="custom", match="exact", check="none")
        _sub(el, "model", self.model, fallback="allow")
        for name in self.disabled:
            _sub(el, "feature", policy="disable", name=name)
        return el


@dataclass
class LoggedSerial:
    """A pty serial port whose output libvirt's virtlogd appends to ``log``, and the console on it."""

    log: str  #: log file on the host

    @classmethod
    def parse(cls, el: ET.Element) -> LoggedSerial | None:
        """From a ``<serial>`` element, or None without a log."""
        log = el.find("log")
        return cls(log.get("file", "")) if log is not None else None

    def elements(self) -> list[ET.Element]:
        """The ``<serial>`` and ``<console>`` elements."""
        serial = ET.Element("serial", type="pty")
        _sub(serial, "log", file=self.log, append="on")
        _sub(serial, "target", port="0")
        console = ET.Element("console", type="pty")
        _sub(console, "target", type="serial", port="0")
        return [serial, console]


@dataclass
class Domain:
    """A domain: the elements above, composed. :func:`parse_domain` reads one; :meth:`to_xml` writes one."""

    name: str = ""  #: ``<name>``
    uuid: str = ""  #: ``<uuid>`` (empty: libvirt assigns one)
    type: str = "kvm"  #: kvm or qemu (TCG)
    memory: Memory = field(default_factory=lambda: Memory(0))  #: maximum memory
    current_memory: Memory | None = None  #: balloon size at boot (None: the maximum)
    vcpu: Vcpu = field(default_factory=Vcpu)  #: vCPUs
    os: Os = field(default_factory=Os)  #: architecture, machine, direct kernel boot
    cpu: CpuModel | None = None  #: CPU model
    cputune: CpuTune = field(default_factory=CpuTune)  #: pinning
    numatune: NumaTune | None = None  #: memory placement
    emulator: str | None = None  #: QEMU binary
    serial: LoggedSerial | None = None  #: logged serial console
    balloon: MemBalloon | None = None  #: balloon device
    hostdevs: list[HostDev] = field(default_factory=list)  #: GPUs passed through or mediated

    # --- what the inventory reads ------------------------------------------------------------
    @property
    def memory_mib(self) -> int:
        """Maximum memory, MiB."""
        return self.memory.mib

    @property
    def current_memory_mib(self) -> int:
        """Memory at boot (the balloon's size), MiB."""
        return self.current_memory.mib if self.current_memory is not None else self.memory.mib

    @property
    def vcpus(self) -> int:
        """vCPUs online."""
        return self.vcpu.current if self.vcpu.current is not None else self.vcpu.count

    @property
    def max_vcpus(self) -> int:
        """Maximum vCPUs."""
        return self.vcpu.count

    @property
    def pinning(self) -> dict[int, tuple[int, ...]]:
        """vCPU -> host CPUs: ``<vcpu cpuset>`` for every vCPU, overridden by each ``<vcpupin>``."""
        base = {i: self.vcpu.cpuset for i in range(self.vcpus)} if self.vcpu.cpuset else {}
        return {**base, **self.cputune.vcpupin}

    @property
    def emulator_pinning(self) -> tuple[int, ...] | None:
        """The emulator threads' host CPUs."""
        return self.cputune.emulatorpin

    @property
    def numa_tune(self) -> dict[str, str] | None:
        """``<numatune><memory>``'s attributes."""
        return self.numatune.memory if self.numatune is not None else None

    @property
    def gpus(self) -> list[GpuAttachment]:
        """GPUs passed through or mediated."""
        return [h.attachment() for h in self.hostdevs]

    @property
    def balloon_period(self) -> int | None:
        """Seconds between the guest's balloon statistics reports."""
        return self.balloon.stats_period if self.balloon is not None else None

    # --- writing -----------------------------------------------------------------------------
    def to_xml(self) -> str:
        """The domain XML."""
        root = ET.Element("domain", type=self.type)
        _sub(root, "name", self.name)
        if self.uuid:
            _sub(root, "uuid", self.uuid)
        root.append(self.memory.element())
        root.append((self.current_memory or Memory(self.memory.mib)).element())
        root.append(self.vcpu.element())
        root.append(self.os.element())
        if self.cpu is not None:
            root.append(self.cpu.element())
        if self.cputune.vcpupin or self.cputune.emulatorpin is not None:
            root.append(self.cputune.element())
        if self.numatune is not None:
            root.append(self.numatune.element())
        _sub(root, "features").append(ET.Element("acpi"))
        _sub(root, "clock", offset="utc")
        for event, act in (("on_poweroff", "destroy"), ("on_reboot", "restart"), ("on_crash", "destroy")):
            _sub(root, event, act)
        devices = _sub(root, "devices")
        if self.emulator:
            _sub(devices, "emulator", self.emulator)
        devices.extend(self.serial.elements() if self.serial is not None else [])
        devices.extend(h.element() for h in self.hostdevs)
        if self.balloon is not None:
            devices.append(self.balloon.element())
        ET.indent(root)
        return ET.tostring(root, encoding="unicode") + "\n"


def parse_domain(xml: str) -> Domain:
    """The elements llmvirt needs from domain XML."""
    root = ET.fromstring(xml)

    def one(path: str, parse):  # noqa: ANN001, ANN202 - the element's parse, or None when absent
        el = root.find(path)
        return parse(el) if el is not None else None

    return Domain(name=root.findtext("name", ""), uuid=root.findtext("uuid", ""), type=root.get("type", "kvm"),
                  memory=one("memory", Memory.parse) or Memory(0), current_memory=one("currentMemory", Memory.parse),
                  vcpu=one("vcpu", Vcpu.parse) or Vcpu(), os=one("os", Os.parse) or Os(),
                  cpu=one("cpu", CpuModel.parse),
                  cputune=one("cputune", CpuTune.parse) or CpuTune(), numatune=one("numatune", NumaTune.parse),
                  emulator=root.findtext("./devices/emulator"), serial=one("./devices/serial", LoggedSerial.parse),
                  balloon=one("./devices/memballoon", MemBalloon.parse),
                  hostdevs=[h for el in root.iterfind("./devices/hostdev") if (h := HostDev.parse(el)) is not None])


def parse_pinning(xml: str) -> dict[int, tuple[int, ...]]:
    """Only the vCPU pinning of domain XML; cheap, because it parses just ``<vcpu>`` and ``<cputune>``."""
    if "<cputune" not in xml and "cpuset=" not in xml:
        return {}
    parts = []
    for tag in ("vcpu", "cputune"):
        start = xml.find(f"<{tag}")
        end = xml.find(f"</{tag}>", start)
        if start >= 0 and end >= 0:
            parts.append(xml[start:end + len(tag) + 3])
    return parse_domain("<domain>" + "".join(parts) + "</domain>").pinning
