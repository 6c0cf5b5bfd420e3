"""``llmvirt status``: the JSON contract (docs/json-contracts.md) and the rich tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from llmvirt.model.cluster import Host, Vm
from llmvirt.store.latest_view import HostView

STATUS_FORMAT = 1  #: bumped on any incompatible change to the status JSON


def _iso(t: datetime | None) -> str | None:
    return t.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z") if t else None


def gpu_assignments(host: Host) -> dict[str, str]:
    """GPU PCI address -> name of the VM holding it (passthrough or one of its vGPUs)."""
    owners: dict[str, str] = {}
    for vm in sorted(host.vms, key=lambda v: not v.running):  # running VMs win over defined ones
        for g in vm.gpus:
            pci = g.pci if g.kind == "passthrough" else g.parent_pci
            if pci and pci not in owners:
                owners[pci] = vm.name
    return owners


def vm_json(vm: Vm) -> dict[str, Any]:
    """One VM in the status contract."""
    b = vm.balloon
    gpus: list[dict[str, Any]] = []
    for g in vm.gpus:
        if g.kind == "passthrough":
            gpus.append({"kind": "passthrough", "pci": g.pci})
        else:
            gpus.append({"kind": "vgpu", "mdev_uuid": g.mdev_uuid, "mdev_type": g.mdev_type,
                         "parent_pci": g.parent_pci})
    return {
        "name": vm.name, "uuid": vm.uuid, "state": vm.state, "vcpus": vm.vcpus,
        "max_vcpus": vm.max_vcpus,
        "pinning": {str(k): list(v) for k, v in sorted(vm.pinning.items())},
        "persistent_pinning": {str(k): list(v) for k, v in sorted(vm.persistent_pinning.items())},
        "emulator_pinning": list(vm.emulator_pinning) if vm.emulator_pinning is not None else None,
        "numa_tune": vm.numa_tune,
        "memory_mib": vm.memory_mib, "current_memory_mib": vm.current_memory_mib,
        "balloon_mib": vm.balloon_mib,
        "balloon": {"current_mib": b.current_mib, "maximum_mib": b.maximum_mib, "rss_mib": b.rss_mib,
                    "unused_mib": b.unused_mib, "available_mib": b.available_mib,
                    "usable_mib": b.usable_mib, "swap_in_mib": b.swap_in_mib,
                    "swap_out_mib": b.swap_out_mib, "major_faults": b.major_faults},
        "cpu_time_ns": vm.cpu_time_ns, "cpu_util": vm.cpu_util, "gpus": gpus,
        "live_migratable": not vm.has_pci_passthrough,
    }


def host_json(view: HostView) -> dict[str, Any]:
    """One host in the status contract."""
    h = view.host
    owners = gpu_assignments(h)
    gpus = []
    for g in h.gpus:
        entry: dict[str, Any] = {
            "pci": g.pci, "vendor": g.vendor, "vendor_id": g.vendor_id, "model": g.model,
            "product_id": g.product_id, "driver": g.driver,
            "mdev_types": [{"type": m.type, "name": m.name, "available": m.available} for m in g.mdev_types],
            "mdevs": [{"uuid": u, "type": t} for u, t in g.mdevs],
            "assigned_to": owners.get(g.pci),
            "nvml": None,
        }
        if g.nvml is not None:
            n = g.nvml
            entry["nvml"] = {"name": n.name, "uuid": n.uuid, "memory_used_mib": n.memory_used_mib,
                             "memory_total_mib": n.memory_total_mib, "utilization_pct": n.utilization_pct,
                             "mig_mode": n.mig_mode}
        gpus.append(entry)
    age = (datetime.now(UTC).replace(tzinfo=None) - view.scanned_at).total_seconds() if view.scanned_at else None
    used = h.used_cpus
    return {
        "name": h.name, "uri": h.uri, "source": view.source, "maintenance": h.maintenance,
        "scanned_at": _iso(view.scanned_at), "scan_age_s": round(age, 1) if age is not None else None,
        "last_error": view.last_error, "hostname": h.hostname, "cpu_model": h.cpu_model,
        "libvirt_version": h.libvirt_version, "hypervisor": h.hypervisor,
        "cpus": h.cpus, "memory_mib": h.memory_mib, "free_memory_mib": h.free_memory_mib,
        "numa_cells": [{"id": c.id, "cpus": list(c.cpus), "memory_mib": c.memory_mib} for c in h.numa_cells],
        "allocated": {"vcpus": h.allocated_vcpus, "memory_mib": h.allocated_memory_mib,
                      "gpus": len(owners)},
        "used": {"cpus": round(used, 3) if used is not None else None},
        "notes": h.notes,
        "gpus": gpus,
        "vms": [vm_json(v) for v in h.vms],
    }


def status_json(views: list[HostView]) -> dict[str, Any]:
    """The whole ``status --json`` document."""
    return {"format": STATUS_FORMAT, "hosts": [host_json(v) for v in views]}


def ago(t: datetime | None, now: datetime | None = None) -> str:
    """A naive-UTC time as people read it in a table: "12 s ago", "5 min ago", "3 h ago", "2 d ago"."""
    if t is None:
        return "never"
    secs = max(0.0, ((now or datetime.now(UTC).replace(tzinfo=None)) - t).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"{int(secs // size)} {unit} ago"
    return f"{int(secs)} s ago"


def _pct(a: float, b: float) -> str:
    return f"{100 * a / b:.0f}%" if b else "-"


def print_status(console: Console, views: list[HostView]) -> None:
    """Print the host table, then one VM table per host."""
    t = Table(title="Hosts")
    for col in ("host", "maint", "scanned", "CPU alloc/cap", "CPU used", "mem alloc/cap MiB",
                "GPUs used/total", "VMs"):
        t.add_column(col, overflow="fold")
    for v in views:
        h = v.host
        when = ago(v.scanned_at) + (" [red](last scan failed)[/red]" if v.last_error else "")
        used = h.used_cpus
        t.add_row(h.name, "yes" if h.maintenance else "", when,
                  f"{h.allocated_vcpus}/{h.cpus} ({_pct(h.allocated_vcpus, h.cpus)})",
                  f"{used:.2f}" if used is not None else "-",
                  f"{h.allocated_memory_mib}/{h.memory_mib} ({_pct(h.allocated_memory_mib, h.memory_mib)})",
                  f"{len(gpu_assignments(h))}/{len(h.gpus)}",
                  str(sum(1 for x in h.vms if x.running)) + f" of {len(h.vms)}")
    console.print(t)
    for v in views:
        if v.last_error:
            console.print(f"{v.host.name}: last scan failed: {v.last_error}", markup=False, soft_wrap=True)
    for v in views:
        if not v.host.vms:
            continue
        vt = Table(title=f"VMs on {v.host.name}")
        for col in ("VM", "state", "vCPUs", "pinning", "mem MiB", "balloon MiB", "guest usable MiB",
                    "CPU util", "GPUs"):
            vt.add_column(col, overflow="fold")
        for vm in v.host.vms:
            pins = ", ".join(f"{k}:{','.join(map(str, c))}" for k, c in sorted(vm.pinning.items()))
            gpus = ", ".join(g.pci or "" if g.kind == "passthrough" else f"vgpu {g.mdev_type or g.mdev_uuid}"
                             for g in vm.gpus)
            vt.add_row(vm.name, vm.state, f"{vm.vcpus}/{vm.max_vcpus}", pins or "-", str(vm.memory_mib),
                       str(vm.balloon_mib), str(vm.balloon.usable_mib) if vm.balloon.usable_mib is not None
                       else "-", f"{100 * vm.cpu_util:.1f}%" if vm.cpu_util is not None else "-",
                       gpus or "-")
        console.print(vt)
