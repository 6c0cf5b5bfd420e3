"""Applying plans on real hosts: one run at a time, every step journaled, crashes reconciled.

Order of a run: take the apply lock (a second run exits at once), reconcile what an
interrupted run left pending or running by looking where each VM really is, record the
new plan, then run its actions (at most ``max_parallel`` at once, never two on one host,
plan order kept between actions that share a host), journaling every state change
before and after it happens. A
completed migration is never issued again: a plan is computed from a fresh scan, and
old actions are only ever reconciled, never replayed.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import libvirt
from sqlalchemy import Engine

from llmvirt.actions import DONE, FAILED, SKIPPED, Migrate, MigrationSettings, Outcome, PinVcpus, SetBalloon
from llmvirt.errors import HostError, LlmvirtError, translate_libvirt
from llmvirt.inventory import is_local_uri
from llmvirt.policy.constraints import Limits
from llmvirt.store import journal, registry
from llmvirt.store.database import resolve_url

EXIT_LOCKED = 5


class ApplyLocked(LlmvirtError):
    """Another applying run holds the lock."""

    exit_code = EXIT_LOCKED


def lock_path(db_url: str | None) -> Path:
    """The lock file beside the SQLite database (or in the data directory for other databases)."""
    from sqlalchemy.engine import make_url

    url = make_url(resolve_url(db_url))
    if url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database).with_name(Path(url.database).name + ".apply.lock")
    from llmvirt.store.database import default_db_path

    return default_db_path().with_name("apply.lock")


@contextmanager
def apply_lock(db_url: str | None) -> Iterator[None]:
    """Hold the apply lock, or raise ApplyLocked at once (cron runs must not pile up)."""
    path = lock_path(db_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ApplyLocked(f"another `llmvirt rebalance --apply` is running (lock {path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


@dataclass
class Hosts:
    """Connections to registered hosts, opened on first use (safe to share between action threads)."""

    engine: Engine
    _conns: dict[str, libvirt.virConnect] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def conn(self, name: str) -> libvirt.virConnect:
        """An open connection to host ``name``."""
        with self._lock:
            if self._conns is None:
                self._conns = {}
            if name not in self._conns:
                host = registry.get_host(self.engine, name)
                with translate_libvirt(f"host {name} ({host.uri})", connecting=True):
                    self._conns[name] = libvirt.open(host.uri)
            return self._conns[name]

    def uri(self, name: str) -> str:
        """The host's libvirt URI."""
        return registry.get_host(self.engine, name).uri

    def maintenance(self, name: str) -> bool:
        """The host's maintenance flag as registered now."""
        return registry.get_host(self.engine, name).maintenance

    def close(self) -> None:
        """Close every connection."""
        for c in (self._conns or {}).values():
            try:
                c.close()
            except libvirt.libvirtError:
                pass
        self._conns = {}


def _where(hosts: Hosts, names: list[str], uuid: str) -> list[str]:
    found = []
    for n in names:
        try:
            dom = hosts.conn(n).lookupByUUIDString(uuid)
            if dom.isActive():
                found.append(n)
        except (libvirt.libvirtError, HostError):
            continue
    return found


def reconcile(engine: Engine, hosts: Hosts) -> list[str]:
    """Close actions an interrupted run left open, by re-reading where each VM really is."""
    notes = []
    for a in journal.open_actions(engine):
        if a.kind == "migrate" and a.vm_uuid and a.src and a.dst:
            where = _where(hosts, [a.src, a.dst], a.vm_uuid)
            if where == [a.dst]:
                status, why = DONE, f"reconciled: {a.vm} found running on {a.dst}"
            elif a.status == "running":
                status, why = FAILED, f"reconciled: interrupted; {a.vm} runs on {', '.join(where) or 'neither host'}"
            else:
                status, why = SKIPPED, "reconciled: the plan was interrupted before this action"
        else:
            status = SKIPPED if a.status == "pending" else FAILED
            why = "reconciled: the plan was interrupted" + ("" if a.status == "pending" else " during this action")
        journal.set_status(engine, a.id, status, why)
        journal.finish_plan(engine, a.plan_id)
        notes.append(f"action {a.id} ({a.kind} {a.vm}): {why}")
    return notes


def run_action(a: journal.JournalAction, hosts: Hosts, limits: Limits, groups: dict[str, str],
               settings: MigrationSettings, progress: Callable[[float], None] | None = None,
               host_pins: dict[str, tuple[str, ...]] | None = None) -> Outcome:
    """Run one journaled action against live hosts."""
    try:
        if a.kind == "migrate":
            assert a.src and a.dst and a.vm_uuid
            if settings.migrate_uri is None and is_local_uri(hosts.uri(a.dst)):
                # both ends on this machine (the lab): libvirt would pick the hostname; loopback is certain
                settings = replace(settings, migrate_uri="tcp://127.0.0.1")
            return Migrate(a.vm, a.vm_uuid, a.src, a.dst).run(
                hosts.conn(a.src), hosts.conn(a.dst), hosts.uri(a.dst), hosts.maintenance(a.dst), limits, groups,
                settings, progress, (host_pins or {}).get(a.vm, ()))
        if a.kind == "pin":
            assert a.src and a.vm_uuid
            pins = {int(k): tuple(v) for k, v in a.params["pins"].items()}
            emu = tuple(a.params["emulator"]) if a.params.get("emulator") else None
            return PinVcpus(a.vm, a.vm_uuid, a.src, pins, emu).run(hosts.conn(a.src))
        if a.kind == "balloon":
            assert a.src and a.vm_uuid
            return SetBalloon(a.vm, a.vm_uuid, a.src, int(a.params["target_mib"])).run(hosts.conn(a.src))
    except HostError as exc:
        return Outcome(FAILED, str(exc))
    return Outcome(FAILED, f"unknown action kind {a.kind!r}")


def schedule(actions: list[journal.JournalAction], max_parallel: int,
             run: Callable[[journal.JournalAction], Outcome],
             started: Callable[[journal.JournalAction], None] = lambda a: None,
             finished: Callable[[journal.JournalAction, Outcome], None] = lambda a, o: None) -> None:
    """Run actions with at most ``max_parallel`` at once and never two on one host at a time.

    An action starts only when none of its hosts is busy and no earlier action touching one of
    its hosts is still waiting, so actions that share a host keep the plan's order.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    pending = list(actions)
    running: dict[Future[Outcome], tuple[journal.JournalAction, set[str]]] = {}
    busy: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        while pending or running:
            waiting: set[str] = set()
            for a in list(pending):
                hosts = {h for h in (a.src, a.dst) if h}
                if len(running) < max(1, max_parallel) and not hosts & busy and not hosts & waiting:
                    pending.remove(a)
                    busy |= hosts
                    started(a)
                    running[pool.submit(run, a)] = (a, hosts)
                else:
                    waiting |= hosts
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                a, hosts = running.pop(fut)
                busy -= hosts
                try:
                    outcome = fut.result()
                except Exception as exc:  # noqa: BLE001 - an unexpected error fails the action, not the run
                    outcome = Outcome(FAILED, f"{type(exc).__name__}: {exc}")
                finished(a, outcome)


def reconcile_if_idle(engine: Engine, db_url: str | None) -> list[str]:
    """Reconcile what an interrupted run left open, unless a run holds the apply lock now (it owns them).

    Called by every command that talks to hosts (``scan``, and ``rebalance --apply`` with nothing to
    apply), so the journal is set right by the next run of any of them, never only by the next plan."""
    if not journal.open_actions(engine):
        return []
    try:
        with apply_lock(db_url):
            hosts = Hosts(engine)
            try:
                return reconcile(engine, hosts)
            finally:
                hosts.close()
    except ApplyLocked:
        return []


def apply(engine: Engine, db_url: str | None, goal: str, policy: str, body: dict[str, Any],
          actions: list[dict[str, Any]], limits: Limits, groups: dict[str, str], settings: MigrationSettings,
          host_pins: dict[str, tuple[str, ...]] | None = None, say: Callable[[str], None] = print,
          progress_factory: Callable[[str], Callable[[float], None]] | None = None) -> tuple[int, dict[str, int]]:
    """Lock, reconcile, record and run a plan; returns (plan id, counts of outcomes)."""
    with apply_lock(db_url):
        hosts = Hosts(engine)
        try:
            for note in reconcile(engine, hosts):
                say(note)
            plan_id = journal.create_plan(engine, goal, policy, body, actions)
            counts = {DONE: 0, SKIPPED: 0, FAILED: 0}

            def run(a: journal.JournalAction) -> Outcome:
                prog = progress_factory(f"{a.kind} {a.vm}") if progress_factory else None
                return run_action(a, hosts, limits, groups, settings, prog, host_pins)

            def finished(a: journal.JournalAction, outcome: Outcome) -> None:
                journal.set_status(engine, a.id, outcome.status, outcome.detail, outcome.extra or None)
                counts[outcome.status] += 1
                say(f"{a.kind} {a.vm}: {outcome.status}: {outcome.detail}")

            schedule(journal.plan_actions(engine, plan_id), settings.max_parallel, run,
                     started=lambda a: journal.set_status(engine, a.id, "running"), finished=finished)
            journal.finish_plan(engine, plan_id)
            return plan_id, counts
        finally:
            hosts.close()
