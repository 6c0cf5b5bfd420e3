"""Actions on real hosts: Migrate, PinVcpus, SetBalloon. Each has pre-condition, execute, verify.

Outcomes: ``done``, ``skipped`` (with the reason: the VM already moved, vanished, stopped)
or ``failed`` (with libvirt's reason, or the constraint the destination broke). A
migration that does not complete within its timeout (scaled per GiB of guest memory)
is aborted, and the VM keeps running on its source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt

from llmvirt.errors import translate_libvirt
from llmvirt.inventory import read_host
from llmvirt.libvirt_xml import parse_domain
from llmvirt.policy.constraints import Limits, check_host, request_of

DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass(frozen=True)
class MigrationSettings:
    """How live migrations run (config ``[apply]``)."""

    migrate_uri: str | None = None  #: data URI, e.g. tcp://10.0.0.2; None lets libvirt choose
    peer_to_peer: bool = False  #: libvirtd talks to the destination itself (needs host-to-host auth)
    auto_converge: bool = False  #: throttle the guest's CPU if memory dirties faster than it copies
    timeout_base_s: float = 60.0  #: completion timeout, fixed part
    timeout_per_gib_s: float = 60.0  #: completion timeout per GiB of guest memory (Nova's idea)
    poll_s: float = 0.5  #: how often progress is read
    max_parallel: int = 1  #: migrations at once in the cluster (never more than one per host)
    bandwidth_mib_s: int = 0  #: cap each migration's bandwidth (MiB/s, like Nova's live_migration_bandwidth); 0: none


@dataclass
class Outcome:
    """What an action came to."""

    status: str  #: done, skipped or failed
    detail: str = ""  #: reason or summary
    extra: dict[str, float] = field(default_factory=dict)  #: e.g. migration seconds


def _completed_job(conn: libvirt.virConnect, uuid: str) -> dict[str, float]:
    """Duration, downtime and memory moved of the migration that just finished, from libvirt's
    completed-job statistics on the destination (empty where the driver keeps none)."""
    try:
        js = conn.lookupByUUIDString(uuid).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        return {}
    out = {"job_elapsed_ms": js.get("time_elapsed"), "downtime_ms": js.get("downtime"),
           "memory_transferred_mib": (js["memory_processed"] / 2**20) if "memory_processed" in js else None}
    return {k: float(v) for k, v in out.items() if v is not None}


def _find(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _running(dom: libvirt.virDomain | None) -> bool:
    return dom is not None and bool(dom.isActive())


def _running_here(conn: libvirt.virConnect, uuid: str, vm: str, host: str) -> libvirt.virDomain | Outcome:
    """The running domain, or the ``skipped`` outcome when it does not run on this host."""
    dom = _find(conn, uuid)
    if dom is None or not dom.isActive():
        return Outcome(SKIPPED, f"{vm} is not running on {host}")
    return dom


@dataclass
class Migrate:
    """Live-migrate a VM from ``src`` to ``dst`` (persistent on dst, undefined on src)."""

    vm: str  #: VM name
    uuid: str  #: VM UUID (identity across hosts)
    src: str  #: source host name
    dst: str  #: destination host name

    def run(self, src_conn: libvirt.virConnect, dst_conn: libvirt.virConnect, dst_uri: str,
            dst_maintenance: bool, limits: Limits, groups: dict[str, str], settings: MigrationSettings,
            progress: Callable[[float], None] | None = None, allowed_hosts: tuple[str, ...] = ()) -> Outcome:
        """Pre-condition, execute, verify."""
        with translate_libvirt(f"migrate {self.vm}"):
            pre = self._pre(src_conn, dst_conn, dst_maintenance, limits, groups, allowed_hosts)
            if pre is not None:
                return pre
            dom = src_conn.lookupByUUIDString(self.uuid)
            outcome = self._execute(dom, dst_conn, dst_uri, settings, progress)
            if outcome.status != DONE:
                return Outcome(outcome.status, outcome.detail + self._resume_source(src_conn), outcome.extra)
            return self._verify(src_conn, dst_conn, outcome)

    def _resume_source(self, src_conn: libvirt.virConnect) -> str:
        """A failed migration can leave the guest paused on its source: resume it. Returns a note."""
        dom = _find(src_conn, self.uuid)
        if dom is None:
            return ""
        state, reason = dom.state()
        if state == libvirt.VIR_DOMAIN_PAUSED and reason in (libvirt.VIR_DOMAIN_PAUSED_MIGRATION,
                                                             libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
                                                             libvirt.VIR_DOMAIN_PAUSED_UNKNOWN):
            try:
                dom.resume()
                return f"; {self.vm} was left paused on {self.src} and was resumed there"
            except libvirt.libvirtError as exc:
                return f"; {self.vm} is paused on {self.src} and could not be resumed: {exc.get_error_message()}"
        return ""

    def _pre(self, src_conn: libvirt.virConnect, dst_conn: libvirt.virConnect, dst_maintenance: bool,
             limits: Limits, groups: dict[str, str], allowed_hosts: tuple[str, ...]) -> Outcome | None:
        if _running(_find(dst_conn, self.uuid)):
            return Outcome(SKIPPED, f"{self.vm} already runs on {self.dst}")
        dom = _find(src_conn, self.uuid)
        if dom is None:
            return Outcome(SKIPPED, f"{self.vm} is no longer on {self.src}")
        if not dom.isActive():
            return Outcome(SKIPPED, f"{self.vm} is not running on {self.src}")
        if dst_maintenance:
            return Outcome(FAILED, f"{self.dst} is in maintenance")
        cfg = parse_domain(dom.XMLDesc(0))
        if any(g.kind == "passthrough" for g in cfg.gpus):
            return Outcome(FAILED, f"{self.vm} has a PCI passthrough device and cannot be live-migrated")
        host = read_host(dst_conn, self.dst, "")
        src_host = read_host(src_conn, self.src, "")
        vm = src_host.vm(self.vm)
        if vm is None:
            return Outcome(SKIPPED, f"{self.vm} is no longer on {self.src}")
        host.name = self.dst
        broken = check_host(host, request_of(vm, groups.get(vm.name), allowed_hosts), limits, groups)
        if broken is not None:
            return Outcome(FAILED, f"{self.dst} cannot take {self.vm} now: {broken}")
        return None

    def _execute(self, dom: libvirt.virDomain, dst_conn: libvirt.virConnect, dst_uri: str,
                 settings: MigrationSettings, progress: Callable[[float], None] | None) -> Outcome:
        flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        if settings.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI: settings.migrate_uri} if settings.migrate_uri else {}
        if settings.bandwidth_mib_s > 0:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(settings.bandwidth_mib_s)
        mem_gib = dom.maxMemory() / 2**20
        timeout = settings.timeout_base_s + settings.timeout_per_gib_s * mem_gib
        result: dict[str, BaseException | None] = {"error": None}

        def go() -> None:
            try:
                if settings.peer_to_peer:
                    dom.migrateToURI3(dst_uri, params, flags | libvirt.VIR_MIGRATE_PEER2PEER)
                else:
                    dom.migrate3(dst_conn, params, flags)
            except BaseException as exc:  # noqa: BLE001 - reported as the outcome
                result["error"] = exc

        t0 = time.monotonic()
        worker = threading.Thread(target=go, daemon=True, name=f"migrate-{self.vm}")
        worker.start()
        while worker.is_alive():
            worker.join(settings.poll_s)
            if progress is not None:
                try:
                    js = dom.jobStats()
                    total = js.get("memory_total") or js.get("data_total") or 0
                    done = js.get("memory_processed") or js.get("data_processed") or 0
                    if total:
                        progress(min(1.0, done / total))
                except libvirt.libvirtError:
                    pass
            if worker.is_alive() and time.monotonic() - t0 > timeout:
                try:
                    dom.abortJob()
                except libvirt.libvirtError:
                    pass
                worker.join(30)
                return Outcome(FAILED, f"did not complete within {timeout:.0f} s: aborted, {self.vm} stays on "
                                       f"{self.src}")
        err = result["error"]
        if err is not None:
            msg = err.get_error_message() if isinstance(err, libvirt.libvirtError) else str(err)
            return Outcome(FAILED, f"libvirt: {' '.join(str(msg).split())}")
        return Outcome(DONE, f"{self.vm} moved to {self.dst}",
                       {"seconds": round(time.monotonic() - t0, 2), **_completed_job(dst_conn, self.uuid)})

    def _verify(self, src_conn: libvirt.virConnect, dst_conn: libvirt.virConnect, outcome: Outcome) -> Outcome:
        on_dst = _running(_find(dst_conn, self.uuid))
        on_src = _running(_find(src_conn, self.uuid))
        if on_dst and not on_src:
            return outcome
        return Outcome(FAILED, f"after migration: running on {self.dst}={on_dst}, on {self.src}={on_src}")


@dataclass
class PinVcpus:
    """Pin a VM's vCPUs (and optionally its emulator threads), live and in its persistent config."""

    vm: str  #: VM name
    uuid: str  #: VM UUID
    host: str  #: host it runs on
    pins: dict[int, tuple[int, ...]]  #: vCPU -> host CPUs
    emulator: tuple[int, ...] | None = None  #: emulator threads' host CPUs

    def run(self, conn: libvirt.virConnect) -> Outcome:
        """Pre-condition (running here), execute (live + config), verify (read back the live XML)."""
        with translate_libvirt(f"pin {self.vm}"):
            dom = _running_here(conn, self.uuid, self.vm, self.host)
            if isinstance(dom, Outcome):
                return dom
            ncpu = conn.getInfo()[2]
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            for vcpu, cpus in self.pins.items():
                if not cpus or max(cpus) >= ncpu:
                    return Outcome(FAILED, f"CPUs {cpus} do not exist on {self.host} ({ncpu} CPUs)")
                dom.pinVcpuFlags(vcpu, tuple(i in cpus for i in range(ncpu)), flags)
            if self.emulator:
                dom.pinEmulator(tuple(i in self.emulator for i in range(ncpu)), flags)
            live = parse_domain(dom.XMLDesc(0)).pinning
        every = tuple(range(ncpu))  # libvirt drops a <vcpupin> that names every CPU
        if any(live.get(v, every) != tuple(sorted(c)) for v, c in self.pins.items()):
            return Outcome(FAILED, f"pinning not as asked after applying: {live}")
        return Outcome(DONE, f"{self.vm} pinned {self.pins}")


@dataclass
class SetBalloon:
    """Set a VM's balloon target (live)."""

    vm: str  #: VM name
    uuid: str  #: VM UUID
    host: str  #: host it runs on
    target_mib: int  #: new balloon size
    settle_s: float = 10.0  #: how long the guest may take to reach it

    def run(self, conn: libvirt.virConnect) -> Outcome:
        """Pre-condition (running, target within 0..maximum), execute, verify (balloon.current reached)."""
        with translate_libvirt(f"balloon {self.vm}"):
            dom = _running_here(conn, self.uuid, self.vm, self.host)
            if isinstance(dom, Outcome):
                return dom
            max_kib = dom.maxMemory()
            if not 0 < self.target_mib * 1024 <= max_kib:
                return Outcome(FAILED, f"target {self.target_mib} MiB outside 1..{max_kib // 1024} MiB")
            dom.setMemoryFlags(self.target_mib * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            deadline = time.monotonic() + self.settle_s
            while time.monotonic() < deadline:
                cur = dom.memoryStats().get("actual", 0) // 1024
                if abs(cur - self.target_mib) <= max(1, self.target_mib // 100):
                    return Outcome(DONE, f"{self.vm} balloon at {cur} MiB")
                time.sleep(0.5)
        return Outcome(FAILED, f"{self.vm} balloon did not reach {self.target_mib} MiB within {self.settle_s:g} s")
