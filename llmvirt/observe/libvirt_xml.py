"""Parsing of the libvirt XML llmvirt reads: capabilities, node devices and domains.

Pure functions from XML text to Cluster-model pieces, so they are unit-tested
without any libvirt connection.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from llmvirt.errors import UsageError
from llmvirt.model.cluster import Gpu, GpuAttachment, MdevType, NumaCell

GPU_CLASS_PREFIXES = ("0x0300", "0x0302", "0x0380")  # VGA, 3D controller, other display


def parse_cpuset(text: str) -> tuple[int, ...]:
    """Expand a libvirt cpuset such as ``0-3,^2,8`` into sorted CPU ids."""
    include: set[int] = set()
    exclude: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        target = exclude if part.startswith("^") else include
        part = part.lstrip("^")
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                target.update(range(lo, hi + 1))
            else:
                target.add(int(part))
        except ValueError:
            raise UsageError(f"invalid cpuset {text!r}") from None
    return tuple(sorted(include - exclude))


def format_cpuset(cpus: tuple[int, ...] | list[int]) -> str:
    """Compress CPU ids into libvirt's cpuset form (``0-3,8``)."""
    ids = sorted(set(cpus))
    runs: list[str] = []
    start = prev = None
    for c in ids + [None]:  # type: ignore[list-item]
        if start is None:
            start = prev = c
        elif c is not None and c == prev + 1:  # type: ignore[operator]
            prev = c
        else:
            runs.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = c
    return ",".join(runs)


def pci_address(domain: int, bus: int, slot: int, function: int) -> str:
    """Normalise a PCI address to ``0000:41:00.0``."""
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"


def _int(text: str | None, default: int = 0) -> int:
    if text is None or text.strip() == "":
        return default
    return int(text, 0)


def parse_numa_cells(caps_xml: str) -> list[NumaCell]:
    """NUMA cells from ``getCapabilities()`` XML (empty when libvirt shows no topology)."""
    root = ET.fromstring(caps_xml)
    cells: list[NumaCell] = []
    for cell in root.iterfind("./host/topology/cells/cell"):
        mem = cell.find("memory")
        mem_kib = _int(mem.text) if mem is not None else 0
        if mem is not None and mem.get("unit", "KiB") not in ("KiB", "k"):
            mem_kib = _to_kib(mem_kib, mem.get("unit", "KiB"))
        cpus = tuple(sorted(int(c.get("id", "0")) for c in cell.iterfind("./cpus/cpu")))
        cells.append(NumaCell(id=int(cell.get("id", "0")), cpus=cpus, memory_mib=mem_kib // 1024))
    return cells


def derive_numa_cells(cpus: int, memory_mib: int, nodes: int) -> list[NumaCell]:
    """Cells split evenly from nodeinfo, for drivers whose capabilities carry no topology."""
    nodes = max(1, nodes)
    per = max(1, cpus // nodes)
    return [
        NumaCell(id=i, cpus=tuple(range(i * per, min(cpus, (i + 1) * per))), memory_mib=memory_mib // nodes)
        for i in range(nodes)
    ]


_UNIT_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024,
             "m": 1024, "mib": 1024, "mb": 1e6 / 1024, "g": 1024**2, "gib": 1024**2,
             "gb": 1e9 / 1024, "t": 1024**3, "tib": 1024**3}


def _to_kib(value: int, unit: str) -> int:
    return int(value * _UNIT_KIB.get(unit.lower(), 1))


@dataclass
class NodeDevices:
    """GPUs and mdevs found among a host's node devices."""

    gpus: list[Gpu] = field(default_factory=list)  #: PCI display/3D devices
    mdevs: dict[str, tuple[str, str | None]] = field(default_factory=dict)  #: mdev uuid -> (type, parent pci)


def parse_pci_gpu(nodedev_xml: str) -> Gpu | None:
    """A :class:`Gpu` from a PCI node device's XML, or None if it is not a display/3D device."""
    root = ET.fromstring(nodedev_xml)
    cap = root.find("./capability[@type='pci']")
    if cap is None:
        return None
    klass = (cap.findtext("class") or "").lower()
    if not klass.startswith(GPU_CLASS_PREFIXES):
        return None
    pci = pci_address(_int(cap.findtext("domain")), _int(cap.findtext("bus")),
                      _int(cap.findtext("slot")), _int(cap.findtext("function")))
    vendor, product = cap.find("vendor"), cap.find("product")
    mdev_types = tuple(
        MdevType(type=t.get("id", ""), name=t.findtext("name"),
                 available=_int(t.findtext("availableInstances")))
        for t in cap.iterfind("./capability[@type='mdev_types']/type")
    )
    return Gpu(
        pci=pci,
        vendor=(vendor.text or "").strip() if vendor is not None else "",
        vendor_id=vendor.get("id", "") if vendor is not None else "",
        model=(product.text or "").strip() if product is not None else "",
        product_id=product.get("id", "") if product is not None else "",
        driver=root.findtext("./driver/name"),
        mdev_types=mdev_types,
    )


def parse_mdev(nodedev_xml: str) -> tuple[str, str, str | None] | None:
    """``(uuid, type, parent_pci)`` from an mdev node device's XML, or None."""
    root = ET.fromstring(nodedev_xml)
    cap = root.find("./capability[@type='mdev']")
    if cap is None:
        return None
    uuid = cap.findtext("uuid") or root.findtext("name", "").removeprefix("mdev_").replace("_", "-")
    mtype = cap.find("type")
    parent = root.findtext("parent") or ""
    parent_pci = None
    if parent.startswith("pci_"):
        parts = parent[4:].split("_")
        if len(parts) == 4:
            parent_pci = f"{parts[0]}:{parts[1]}:{parts[2]}.{parts[3]}"
    return uuid, (mtype.get("id", "") if mtype is not None else ""), parent_pci


@dataclass
class DomainConfig:
    """What llmvirt reads from a domain's XML."""

    name: str = ""  #: ``<name>``
    uuid: str = ""  #: ``<uuid>``
    memory_mib: int = 0  #: ``<memory>``
    current_memory_mib: int = 0  #: ``<currentMemory>``
    vcpus: int = 1  #: ``<vcpu current=...>``
    max_vcpus: int = 1  #: ``<vcpu>``
    pinning: dict[int, tuple[int, ...]] = field(default_factory=dict)  #: cputune vcpupin
    emulator_pinning: tuple[int, ...] | None = None  #: cputune emulatorpin
    numa_tune: dict[str, str] | None = None  #: numatune memory
    gpus: list[GpuAttachment] = field(default_factory=list)  #: hostdev GPUs (PCI, mdev)
    balloon_period: int | None = None  #: memballoon stats period in seconds


def parse_domain(xml: str) -> DomainConfig:
    """Parse the parts of domain XML llmvirt needs."""
    root = ET.fromstring(xml)
    cfg = DomainConfig(name=root.findtext("name", ""), uuid=root.findtext("uuid", ""))
    mem = root.find("memory")
    if mem is not None:
        cfg.memory_mib = _to_kib(_int(mem.text), mem.get("unit", "KiB")) // 1024
    cur = root.find("currentMemory")
    cfg.current_memory_mib = (
        _to_kib(_int(cur.text), cur.get("unit", "KiB")) // 1024 if cur is not None else cfg.memory_mib
    )
    vcpu = root.find("vcpu")
    default_set: tuple[int, ...] = ()
    if vcpu is not None:
        cfg.max_vcpus = _int(vcpu.text, 1)
        cfg.vcpus = _int(vcpu.get("current"), cfg.max_vcpus)
        if vcpu.get("cpuset"):  # <vcpu cpuset=...> pins every vCPU without its own vcpupin
            default_set = parse_cpuset(vcpu.get("cpuset", ""))
    if default_set:
        cfg.pinning = {i: default_set for i in range(cfg.vcpus)}
    for pin in root.iterfind("./cputune/vcpupin"):
        cfg.pinning[int(pin.get("vcpu", "0"))] = parse_cpuset(pin.get("cpuset", ""))
    emu = root.find("./cputune/emulatorpin")
    if emu is not None:
        cfg.emulator_pinning = parse_cpuset(emu.get("cpuset", ""))
    numa = root.find("./numatune/memory")
    if numa is not None:
        cfg.numa_tune = {k: v for k, v in numa.attrib.items()}
    for hd in root.iterfind("./devices/hostdev"):
        att = _hostdev_gpu(hd)
        if att is not None:
            cfg.gpus.append(att)
    period = root.find("./devices/memballoon/stats")
    if period is not None:
        cfg.balloon_period = _int(period.get("period"))
    return cfg


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


def _hostdev_gpu(hd: ET.Element) -> GpuAttachment | None:
    kind = hd.get("type")
    if kind == "pci":
        addr = hd.find("./source/address")
        if addr is None:
            return None
        pci = pci_address(_int(addr.get("domain")), _int(addr.get("bus")),
                          _int(addr.get("slot")), _int(addr.get("function")))
        return GpuAttachment(kind="passthrough", pci=pci)
    if kind == "mdev":
        addr = hd.find("./source/address")
        if addr is None:
            return None
        return GpuAttachment(kind="vgpu", mdev_uuid=addr.get("uuid"))
    return None
