"""A cluster described in a file: the ``status --json`` contract read back into the Cluster model.

``llmvirt place --snapshot FILE`` and ``llmvirt rebalance --snapshot FILE`` plan from such a file
instead of the store: what-if planning (edit a copy of ``status --json``), planning for a cluster
this machine cannot reach, and other projects' test cases converted to the contract. Only the
fields that planning reads are needed; the rest of the contract (docs/json-contracts.md) is
optional. Bad input is one :class:`~llmvirt.errors.UsageError` naming the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmvirt.errors import UsageError
from llmvirt.model.cluster import Balloon, Cluster, Gpu, GpuAttachment, Host, MdevType, NumaCell, Vm

SUPPORTED_FORMATS = (1,)  #: status contract versions this reader understands


def _pins(raw: dict[str, Any] | None) -> dict[int, tuple[int, ...]]:
    return {int(k): tuple(int(c) for c in v) for k, v in (raw or {}).items()}


def _at_least(value: float, low: float, field: str) -> Any:
    """``value`` if it is at least ``low``; a ValueError naming ``field`` otherwise."""
    if not value >= low:  # NaN too
        raise ValueError(f"{field} {value} is below {low}")
    return value


def _vm(d: dict[str, Any]) -> Vm:
    b = d.get("balloon") or {}
    gpus = [GpuAttachment(kind=g["kind"], pci=g.get("pci"), mdev_uuid=g.get("mdev_uuid"),
                          mdev_type=g.get("mdev_type"), parent_pci=g.get("parent_pci")) for g in d.get("gpus", [])]
    passthrough = tuple(g.pci for g in gpus if g.kind == "passthrough" and g.pci)
    if d.get("live_migratable") is False and not passthrough:
        passthrough = ("unknown",)  # the contract says it cannot move; keep that true here
    vcpus = _at_least(int(d.get("vcpus", 1)), 1, "vcpus")
    memory = _at_least(int(d["memory_mib"]), 1, "memory_mib")
    if d.get("cpu_util") is not None:
        _at_least(float(d["cpu_util"]), 0.0, "cpu_util")
    return Vm(name=str(d["name"]), uuid=str(d.get("uuid") or d["name"]), state=str(d.get("state", "running")),
              vcpus=vcpus, max_vcpus=int(d.get("max_vcpus") or vcpus), memory_mib=memory,
              current_memory_mib=int(d.get("current_memory_mib") or memory),
              balloon=Balloon(**{k: b.get(k) for k in ("current_mib", "maximum_mib", "rss_mib", "unused_mib",
                                                      "available_mib", "usable_mib", "swap_in_mib", "swap_out_mib",
                                                      "major_faults")}),
              pinning=_pins(d.get("pinning")), persistent_pinning=_pins(d.get("persistent_pinning")),
              cpu_time_ns=d.get("cpu_time_ns"), cpu_util=d.get("cpu_util"), gpus=gpus, pci_hostdevs=passthrough)


def _gpu(d: dict[str, Any]) -> Gpu:
    return Gpu(pci=str(d["pci"]), vendor=str(d.get("vendor", "")), vendor_id=str(d.get("vendor_id", "")),
               model=str(d.get("model", "")), product_id=str(d.get("product_id", "")), driver=d.get("driver"),
               mdev_types=tuple(MdevType(m["type"], m.get("name"), int(m.get("available", 0)))
                                for m in d.get("mdev_types", [])),
               mdevs=tuple((m["uuid"], m["type"]) for m in d.get("mdevs", [])))


def _host(d: dict[str, Any]) -> Host:
    return Host(name=str(d["name"]), uri=str(d.get("uri") or f"snapshot:///{d['name']}"),
                cpus=_at_least(int(d["cpus"]), 1, "cpus"), memory_mib=_at_least(int(d["memory_mib"]), 1, "memory_mib"),
                free_memory_mib=d.get("free_memory_mib"),
                cpu_model=str(d.get("cpu_model") or ""), cpu_mhz=int(d.get("cpu_mhz") or 0),
                maintenance=bool(d.get("maintenance", False)),
                numa_cells=[NumaCell(int(c["id"]), tuple(int(x) for x in c["cpus"]), int(c["memory_mib"]))
                            for c in d.get("numa_cells", [])],
                gpus=[_gpu(g) for g in d.get("gpus", [])], vms=[_vm(v) for v in d.get("vms", [])])


def cluster_from_status(doc: dict[str, Any], source: str = "snapshot") -> Cluster:
    """The Cluster a ``status --json`` document describes (hosts that were never scanned are left out)."""
    if doc.get("format", 1) not in SUPPORTED_FORMATS:
        raise UsageError(f"{source}: status format {doc.get('format')!r}, this llmvirt reads "
                         f"{', '.join(map(str, SUPPORTED_FORMATS))}")
    hosts = doc.get("hosts")
    if not isinstance(hosts, list):
        raise UsageError(f"{source}: no \"hosts\" list (expected the `llmvirt status --json` document)")
    out = []
    for i, h in enumerate(hosts):
        try:
            if h.get("cpus"):
                out.append(_host(h))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(f"{source}: host {i} ({h.get('name', '?') if isinstance(h, dict) else '?'}): "
                             f"missing or bad field {exc}") from None
    if not out:
        raise UsageError(f"{source}: no host with CPUs to plan on")
    names = [h.name for h in out]
    if len(set(names)) != len(names):
        raise UsageError(f"{source}: host names repeat")
    return Cluster(hosts=out)


def _not_a_number(literal: str) -> float:
    raise ValueError(f"{literal} is not a number JSON allows")


def load(path: Path) -> Cluster:
    """Read a snapshot file, or a Proxmox VE CRS test case directory (its initial state: nodes, and the
    started guests with their configured size and, where given, their CPU use); one clear line for an
    unreadable or malformed one."""
    if path.is_dir():
        from llmvirt.peers.llmvirt_scheduler import cluster_from_case

        return cluster_from_case(path)
    try:
        doc = json.loads(path.read_text(), parse_constant=_not_a_number)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: expected a JSON object (the `llmvirt status --json` document)")
    return cluster_from_status(doc, str(path))
