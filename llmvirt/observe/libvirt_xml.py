"""Parsing of the host-side libvirt XML llmvirt reads: capabilities and node devices, and the cpuset,
PCI-address and size notations every libvirt document uses (domains: :mod:`llmvirt.observe.domain_xml`).

Pure functions from XML text to Cluster-model pieces, so they are unit-tested
without any libvirt connection.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from llmvirt.errors import UsageError
from llmvirt.model.cluster import Gpu, MdevType, NumaCell

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


def int_text(text: str | None, default: int = 0) -> int:
    """An integer attribute or text (decimal or 0x hex); ``default`` when empty."""
    if text is None or text.strip() == "":
        return default
    return int(text, 0)


def parse_numa_cells(caps_xml: str) -> list[NumaCell]:
    """NUMA cells from ``getCapabilities()`` XML (empty when libvirt shows no topology)."""
    root = ET.fromstring(caps_xml)
    cells: list[NumaCell] = []
    for cell in root.iterfind("./host/topology/cells/cell"):
        mem = cell.find("memory")
        mem_kib = int_text(mem.text) if mem is not None else 0
        if mem is not None and mem.get("unit", "KiB") not in ("KiB", "k"):
            mem_kib = to_kib(mem_kib, mem.get("unit", "KiB"))
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


def to_kib(value: int, unit: str) -> int:
    """A size in libvirt ``unit`` as KiB."""
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
    pci = pci_address(int_text(cap.findtext("domain")), int_text(cap.findtext("bus")),
                      int_text(cap.findtext("slot")), int_text(cap.findtext("function")))
    vendor, product = cap.find("vendor"), cap.find("product")
    mdev_types = tuple(
        MdevType(type=t.get("id", ""), name=t.findtext("name"),
                 available=int_text(t.findtext("availableInstances")))
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
