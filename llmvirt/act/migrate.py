"""Live migration on libvirt: persistent on the destination, undefined on the source.

Pre-condition: the live re-read (the VM still runs on its source and not on the destination; the
destination is not in maintenance and, as it is now, breaks no hard rule; no PCI passthrough).
Execute: libvirt's migration in a worker thread, with progress, and a completion timeout scaled
per GiB of guest memory that aborts the job (the VM keeps running on its source, resumed if libvirt
left it paused). Post-condition: it runs on the destination and not on the source.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import libvirt

from llmvirt.act.runner import Env, MigrationSettings, find, running
from llmvirt.model.action import DONE, FAILED, SKIPPED, Action, Outcome
from llmvirt.observe.domain_xml import parse_domain
from llmvirt.observe.inventory import is_local_uri, read_host
from llmvirt.policy.constraints import check_host, request_of

_PAUSED_BY_MIGRATION = (libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
                        libvirt.VIR_DOMAIN_PAUSED_UNKNOWN)


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


def settings_for(env: Env, dst: str) -> MigrationSettings:
    """The migration settings for ``dst``: both ends on this machine (the lab) use loopback, since
    libvirt would pick the hostname."""
    s = env.guard.settings
    if s.migrate_uri is None and is_local_uri(env.hosts.uri(dst)):
        return replace(s, migrate_uri="tcp://127.0.0.1")
    return s


class Migrate:
    """The migration runner."""

    def pre_condition(self, a: Action, env: Env) -> Outcome | None:
        """The live re-read: skipped when there is nothing to move any more, failed when a rule forbids it."""
        assert a.dst
        src_conn, dst_conn = env.hosts.conn(a.src), env.hosts.conn(a.dst)
        if running(find(dst_conn, a.uuid)):
            return Outcome(SKIPPED, f"{a.vm} already runs on {a.dst}")
        dom = find(src_conn, a.uuid)
        if dom is None:
            return Outcome(SKIPPED, f"{a.vm} is no longer on {a.src}")
        if not dom.isActive():
            return Outcome(SKIPPED, f"{a.vm} is not running on {a.src}")
        if env.hosts.maintenance(a.dst):
            return Outcome(FAILED, f"{a.dst} is in maintenance")
        if any(g.kind == "passthrough" for g in parse_domain(dom.XMLDesc(0)).gpus):
            return Outcome(FAILED, f"{a.vm} has a PCI passthrough device and cannot be live-migrated")
        host, vm = read_host(dst_conn, a.dst, ""), read_host(src_conn, a.src, "").vm(a.vm)
        if vm is None:
            return Outcome(SKIPPED, f"{a.vm} is no longer on {a.src}")
        host.name = a.dst
        g = env.guard
        broken = check_host(host, request_of(vm, g.groups.get(vm.name), g.host_pins.get(vm.name, ())), g.limits,
                            g.groups)
        if broken is not None:
            return Outcome(FAILED, f"{a.dst} cannot take {a.vm} now: {broken}")
        return None

    def execute(self, a: Action, env: Env) -> Outcome:
        """Migrate, reporting progress; abort at the completion timeout."""
        assert a.dst and a.uuid
        settings = settings_for(env, a.dst)
        dom = env.hosts.conn(a.src).lookupByUUIDString(a.uuid)
        dst_conn = env.hosts.conn(a.dst)
        timeout = settings.timeout_base_s + settings.timeout_per_gib_s * dom.maxMemory() / 2**20
        error: list[BaseException] = []
        worker = threading.Thread(target=self._migrate, args=(dom, env, a.dst, settings, error), daemon=True,
                                  name=f"migrate-{a.vm}")
        t0 = time.monotonic()
        worker.start()
        while worker.is_alive():
            worker.join(settings.poll_s)
            _report(dom, env)
            if worker.is_alive() and time.monotonic() - t0 > timeout:
                try:
                    dom.abortJob()
                except libvirt.libvirtError:
                    pass
                worker.join(30)
                return self._failed(a, env, f"did not complete within {timeout:.0f} s: aborted, {a.vm} stays on "
                                            f"{a.src}")
        if error:
            err = error[0]
            msg = err.get_error_message() if isinstance(err, libvirt.libvirtError) else str(err)
            return self._failed(a, env, f"libvirt: {' '.join(str(msg).split())}")
        how = "peer to peer" if settings.peer_to_peer else "managed by llmvirt"  # which libvirt did the moving
        return Outcome(DONE, f"{a.vm} moved to {a.dst} ({how})",
                       {"seconds": round(time.monotonic() - t0, 2), **_completed_job(dst_conn, a.uuid)})

    def post_condition(self, a: Action, env: Env, outcome: Outcome) -> Outcome:
        """Running on the destination and not on the source."""
        assert a.dst
        on_dst, on_src = running(find(env.hosts.conn(a.dst), a.uuid)), running(find(env.hosts.conn(a.src), a.uuid))
        if on_dst and not on_src:
            return outcome
        return Outcome(FAILED, f"after migration: running on {a.dst}={on_dst}, on {a.src}={on_src}")

    @staticmethod
    def _migrate(dom: libvirt.virDomain, env: Env, dst: str, settings: MigrationSettings,
                 error: list[BaseException]) -> None:
        flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        if settings.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI: settings.migrate_uri} if settings.migrate_uri else {}
        if settings.bandwidth_mib_s > 0:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(settings.bandwidth_mib_s)
        try:
            if settings.peer_to_peer:
                dom.migrateToURI3(env.hosts.uri(dst), params, flags | libvirt.VIR_MIGRATE_PEER2PEER)
            else:
                dom.migrate3(env.hosts.conn(dst), params, flags)
        except BaseException as exc:  # noqa: BLE001 - reported as the outcome
            error.append(exc)

    @staticmethod
    def _failed(a: Action, env: Env, detail: str) -> Outcome:
        """A failed migration can leave the guest paused on its source: resume it, and say so."""
        dom = find(env.hosts.conn(a.src), a.uuid)
        if dom is not None:
            state, reason = dom.state()
            if state == libvirt.VIR_DOMAIN_PAUSED and reason in _PAUSED_BY_MIGRATION:
                try:
                    dom.resume()
                    detail += f"; {a.vm} was left paused on {a.src} and was resumed there"
                except libvirt.libvirtError as exc:
                    detail += f"; {a.vm} is paused on {a.src} and could not be resumed: {exc.get_error_message()}"
        return Outcome(FAILED, detail)


def _report(dom: libvirt.virDomain, env: Env) -> None:
    """The migration's progress (memory copied / total) to ``env.progress``."""
    if env.progress is None:
        return
    try:
        js = dom.jobStats()
    except libvirt.libvirtError:
        return
    total = js.get("memory_total") or js.get("data_total") or 0
    done = js.get("memory_processed") or js.get("data_processed") or 0
    if total:
        env.progress(min(1.0, done / total))
