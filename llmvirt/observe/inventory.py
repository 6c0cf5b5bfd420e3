"""Read a host's state through libvirt into the Cluster model.

One ``getAllDomainStats`` call per host gathers state, CPU time, balloon and
vCPU figures for every domain; each domain's XML gives its configuration
(pinning, NUMA tuning, GPUs). Drivers whose bulk stats leave out balloon or
CPU figures (libvirt's test driver returns only ``state``) are completed per
domain, and only for the fields missing. A domain that disappears mid-scan is
skipped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar
from urllib.parse import urlsplit

import libvirt

from llmvirt.errors import DomainGone, HostError, HostTimeout, translate_libvirt
from llmvirt.model.cluster import Balloon, Gpu, GpuAttachment, Host, ScanResult, Vm
from llmvirt.observe.domain_xml import Domain, parse_domain, parse_pinning
from llmvirt.observe.host_sessions import HostSession, HostSessions
from llmvirt.observe.libvirt_xml import (
    NodeDevices,
    derive_numa_cells,
    parse_mdev,
    parse_numa_cells,
    parse_pci_gpu,
)
from llmvirt.observe.nvml import NvmlSource

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
T = TypeVar("T")  #: what a task of :func:`run_bounded` returns
_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
          | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_VCPU)
_LOCAL_TRANSPORTS = {"", "unix"}


def is_local_uri(uri: str) -> bool:
    """True when the URI reaches a daemon on this machine (NVML applies to it)."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    return transport in _LOCAL_TRANSPORTS and parts.hostname in (None, "", "localhost")


def _version(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def _kib_to_mib(stats: dict[str, int], key: str) -> int | None:
    v = stats.get(key)
    return None if v is None else int(v) // 1024


def _balloon(stats: dict[str, int]) -> Balloon:
    """Balloon figures from bulk stats (``balloon.*`` keys) in MiB."""
    return Balloon(
        current_mib=_kib_to_mib(stats, "balloon.current"),
        maximum_mib=_kib_to_mib(stats, "balloon.maximum"),
        rss_mib=_kib_to_mib(stats, "balloon.rss"),
        unused_mib=_kib_to_mib(stats, "balloon.unused"),
        available_mib=_kib_to_mib(stats, "balloon.available"),
        usable_mib=_kib_to_mib(stats, "balloon.usable"),
        swap_in_mib=_kib_to_mib(stats, "balloon.swap_in"),
        swap_out_mib=_kib_to_mib(stats, "balloon.swap_out"),
        major_faults=stats.get("balloon.major_fault"),
    )


def _complete_stats(dom: libvirt.virDomain, stats: dict[str, int], running: bool) -> dict[str, int]:
    """Fill balloon and CPU figures the driver's bulk call left out (per-domain fallback)."""
    if not running:
        return stats
    out = dict(stats)
    if "balloon.current" not in out:
        mem = dom.memoryStats()
        mapping = {"actual": "current", "rss": "rss", "unused": "unused", "available": "available",
                   "usable": "usable", "swap_in": "swap_in", "swap_out": "swap_out",
                   "major_fault": "major_fault"}
        out.update({f"balloon.{new}": mem[old] for old, new in mapping.items() if old in mem})
        out.setdefault("balloon.maximum", dom.maxMemory())
    if "cpu.time" not in out:
        out["cpu.time"] = dom.info()[4]
    return out


def _live_definition(dom: libvirt.virDomain, session: HostSession | None) -> Domain:
    xml = dom.XMLDesc(0)  # the live definition: its cputune is the live pinning
    return parse_domain(xml) if session is None else session.parsed("live", xml, parse_domain)


def _persistent_pinning(dom: libvirt.virDomain, session: HostSession | None) -> dict[int, tuple[int, ...]]:
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return parse_pinning(xml) if session is None else session.parsed("pins", xml, parse_pinning)


def _read_vm(dom: libvirt.virDomain, stats: dict[str, int], transient: set[str], session: HostSession | None) -> Vm:
    state_code = int(stats.get("state.state", dom.state()[0]))
    state = STATE_NAMES.get(state_code, "unknown")
    running = state in ("running", "paused", "blocked", "pmsuspended")
    cfg = _live_definition(dom, session)
    persistent = cfg.uuid not in transient
    persistent_pins = _persistent_pinning(dom, session) if running and persistent else cfg.pinning
    stats = _complete_stats(dom, stats, running)
    return Vm(
        name=cfg.name,
        uuid=cfg.uuid,
        state=state,
        vcpus=int(stats.get("vcpu.current", cfg.vcpus)),
        max_vcpus=int(stats.get("vcpu.maximum", cfg.max_vcpus)),
        memory_mib=cfg.memory_mib,
        current_memory_mib=cfg.current_memory_mib,
        balloon=_balloon(stats) if running else Balloon(current_mib=cfg.current_memory_mib,
                                                        maximum_mib=cfg.memory_mib),
        pinning=dict(cfg.pinning),
        persistent_pinning=dict(persistent_pins),
        emulator_pinning=cfg.emulator_pinning,
        numa_tune=dict(cfg.numa_tune) if cfg.numa_tune is not None else None,
        cpu_time_ns=int(stats["cpu.time"]) if "cpu.time" in stats else None,
        gpus=list(cfg.gpus),
        pci_hostdevs=tuple(g.pci for g in cfg.gpus if g.kind == "passthrough" and g.pci),
        persistent=persistent,
    )


def _node_devices(conn: libvirt.virConnect) -> NodeDevices:
    found = NodeDevices()
    for dev in conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV):
        gpu = parse_pci_gpu(dev.XMLDesc(0))
        if gpu is not None:
            found.gpus.append(gpu)
    mdev_flag = getattr(libvirt, "VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV", 0)
    if mdev_flag:
        for dev in conn.listAllDevices(mdev_flag):
            mdev = parse_mdev(dev.XMLDesc(0))
            if mdev is not None:
                found.mdevs[mdev[0]] = (mdev[1], mdev[2])
    return found


def _link_gpus(host: Host, devices: NodeDevices) -> None:
    """Attach mdevs to their parent GPUs and keep only GPU passthroughs in ``vm.gpus``."""
    by_pci = {g.pci: g for g in devices.gpus}
    mdevs_by_parent: dict[str, list[tuple[str, str]]] = {}
    for uuid, (mtype, parent) in devices.mdevs.items():
        if parent:
            mdevs_by_parent.setdefault(parent, []).append((uuid, mtype))
    host.gpus = [replace(g, mdevs=tuple(sorted(mdevs_by_parent.get(g.pci, [])))) for g in devices.gpus]
    for vm in host.vms:
        linked: list[GpuAttachment] = []
        for att in vm.gpus:
            if att.kind == "passthrough" and att.pci not in by_pci:
                continue  # a non-GPU PCI device: stays in vm.pci_hostdevs only
            if att.kind == "vgpu" and att.mdev_uuid in devices.mdevs:
                mtype, parent = devices.mdevs[att.mdev_uuid]
                att = replace(att, mdev_type=mtype or None, parent_pci=parent)
            linked.append(att)
        vm.gpus = linked


def _attach_nvml(host: Host, nvml: NvmlSource | None) -> None:
    if nvml is None or not is_local_uri(host.uri):
        return
    try:
        seen = {g.pci: g for g in nvml.read()}
    except RuntimeError as exc:
        host.notes.append(f"NVML not available ({exc})")
        return
    host.gpus = [replace(g, nvml=seen.get(g.pci)) for g in host.gpus]
    known = {g.pci for g in host.gpus}
    for pci, g in seen.items():
        if pci not in known:  # bound to the host driver and hidden from node devices
            host.gpus.append(Gpu(pci=pci, vendor="NVIDIA Corporation", vendor_id="0x10de",
                                 model=g.name, product_id="", driver="nvidia", nvml=g))


def scan_host(name: str, uri: str, nvml: NvmlSource | None = None, maintenance: bool = False,
              sessions: HostSessions | None = None) -> Host:
    """Connect to one libvirt host and return its current state as a :class:`Host`. With ``sessions`` (a
    long-running controller) the host's kept connection is used, and kept."""
    if sessions is not None:
        return _scan_kept(name, uri, nvml, maintenance, sessions)
    with translate_libvirt(f"host {name} ({uri})", connecting=True):
        conn = libvirt.open(uri)
    try:
        with translate_libvirt(f"host {name}"):
            return read_host(conn, name, uri, nvml, maintenance)
    finally:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass


def _scan_kept(name: str, uri: str, nvml: NvmlSource | None, maintenance: bool, sessions: HostSessions) -> Host:
    """Read over the kept connection; one that fails is dropped and the host read once more on a fresh one."""
    with translate_libvirt(f"host {name} ({uri})", connecting=True):
        session, fresh = sessions.get(uri)
    try:
        with translate_libvirt(f"host {name}"):
            return read_host(session.conn, name, uri, nvml, maintenance, session)
    except HostError:
        sessions.drop(uri)
        if fresh:
            raise
    return _scan_kept(name, uri, nvml, maintenance, sessions)


def read_host(conn: libvirt.virConnect, name: str, uri: str, nvml: NvmlSource | None = None,
              maintenance: bool = False, session: HostSession | None = None) -> Host:
    """Read a host over an open connection (libvirtError escapes; :func:`scan_host` translates). ``session``
    remembers the domain definitions parsed, so an unchanged one is not parsed in the next scan."""
    model, mem_mib, cpus, mhz, nodes = conn.getInfo()[:5]
    host = Host(name=name, uri=uri, cpus=cpus, memory_mib=mem_mib, cpu_model=model, cpu_mhz=mhz,
                hostname=conn.getHostname(), libvirt_version=_version(conn.getLibVersion()),
                hypervisor=f"{conn.getType()} {_version(conn.getVersion())}", maintenance=maintenance)
    try:
        host.free_memory_mib = conn.getFreeMemory() // 2**20
    except libvirt.libvirtError:
        host.free_memory_mib = None
    host.numa_cells = parse_numa_cells(conn.getCapabilities())
    if not host.numa_cells:
        host.numa_cells = derive_numa_cells(cpus, mem_mib, nodes)
        host.notes.append("NUMA cells derived from nodeinfo (driver reports no topology)")
    transient = {d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)}
    for dom, stats in conn.getAllDomainStats(_STATS, 0):
        try:
            with translate_libvirt(f"domain on {name}"):
                host.vms.append(_read_vm(dom, stats, transient, session))
        except DomainGone:
            continue  # vanished between listing and inspection: a normal race
    if session is not None:
        session.scan_done()
    _link_gpus(host, _node_devices(conn))
    _attach_nvml(host, nvml)
    return host


def run_bounded(tasks: Sequence[tuple[str, Callable[[], T]]], workers: int,
                timeout: float) -> dict[str, T | BaseException]:
    """Run tasks on at most ``workers`` daemon threads, each allowed ``timeout`` seconds.

    A task that overruns is reported as :class:`HostTimeout`; its thread is
    abandoned (daemon threads never block exit), because a libvirt call stuck
    on a dead network cannot be interrupted.
    """
    done: queue.Queue[tuple[str, T | BaseException]] = queue.Queue()

    def _run(key: str, fn: Callable[[], T]) -> None:
        try:
            done.put((key, fn()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as a result
            done.put((key, exc))

    pending = list(tasks)
    running: dict[str, float] = {}
    results: dict[str, T | BaseException] = {}
    while pending or running:
        while pending and len(running) < max(1, workers):
            key, fn = pending.pop(0)
            running[key] = time.monotonic()
            threading.Thread(target=_run, args=(key, fn), daemon=True, name=f"scan-{key}").start()
        wait = min(start + timeout for start in running.values()) - time.monotonic()
        try:
            key, value = done.get(timeout=max(0.0, wait))
        except queue.Empty:
            now = time.monotonic()
            for key in [k for k, start in running.items() if now - start >= timeout]:
                del running[key]
                results[key] = HostTimeout(f"host {key}: no answer within {timeout:g} s")
            continue
        if key in running:  # a late answer from an abandoned task is ignored
            del running[key]
            results[key] = value
    return results


def scan_hosts(targets: Sequence[tuple[str, str, bool]], nvml: NvmlSource | None = None,
               workers: int = 8, timeout: float = 30.0, sessions: HostSessions | None = None) -> ScanResult:
    """Scan ``(name, uri, maintenance)`` targets concurrently; failures do not stop the others. ``sessions``:
    the connections a long-running controller keeps (a host that timed out loses its own)."""
    t0 = time.monotonic()
    tasks = [(name, (lambda n=name, u=uri, m=maint: scan_host(n, u, nvml, m, sessions)))
             for name, uri, maint in targets]
    out = ScanResult()
    results = run_bounded(tasks, workers, timeout)
    for name, uri, _m in targets:
        value = results[name]
        if sessions is not None and isinstance(value, HostTimeout):
            sessions.drop(uri)
        if isinstance(value, Host):
            out.hosts.append(value)
        elif isinstance(value, HostError):
            out.failures[name] = str(value)
        else:
            out.failures[name] = f"host {name}: {type(value).__name__}: {value}"
    out.seconds = time.monotonic() - t0
    return out
