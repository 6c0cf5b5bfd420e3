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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import libvirt
from sqlalchemy import Engine

from llmvirt.act.balloon import Balloon
from llmvirt.act.hosts import Hosts
from llmvirt.act.migrate import Migrate
from llmvirt.act.pin import Pin
from llmvirt.act.runner import Env, Guardrails, Runner, run, running_here
from llmvirt.errors import HostError, LlmvirtError
from llmvirt.model.action import BALLOON, DONE, FAILED, MIGRATE, PIN, SKIPPED, Action, Outcome
from llmvirt.store import journal
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
    """Hold the apply lock, or raise ApplyLocked at once (cron runs must not pile up). On a PostgreSQL store
    the lock lives in the server, so controllers on different machines exclude each other too."""
    from llmvirt.store import server_lock

    url = resolve_url(db_url)
    if server_lock.supported(url):
        with server_lock.advisory_lock(url, "llmvirt rebalance --apply") as got:
            if not got:
                raise ApplyLocked("another `llmvirt rebalance --apply` is running (advisory lock in the database "
                                  "server, held by another controller)")
            yield
        return
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
    for e in journal.open_actions(engine):
        a = e.action
        if a.kind == MIGRATE and a.uuid and a.src and a.dst:
            where = _where(hosts, [a.src, a.dst], a.uuid)
            if where == [a.dst]:
                status, why = DONE, f"reconciled: {a.vm} found running on {a.dst}"
            elif e.status == "running":
                status, why = FAILED, f"reconciled: interrupted; {a.vm} runs on {', '.join(where) or 'neither host'}"
            else:
                status, why = SKIPPED, "reconciled: the plan was interrupted before this action"
        elif e.status == "running" and a.kind in READ_BACK:
            status, why = _read_back(a, hosts)
        elif e.status == "running":
            status, why = FAILED, "reconciled: the plan was interrupted during this action"
        else:
            status, why = SKIPPED, "reconciled: the plan was interrupted before this action"
        journal.set_status(engine, e.id, status, why)
        journal.finish_plan(engine, e.plan_id)
        notes.append(f"action {e.id} ({a.kind} {a.vm}): {why}")
    return notes


RUNNERS: dict[str, Runner] = {MIGRATE: Migrate(), PIN: Pin(), BALLOON: Balloon()}
READ_BACK: dict[str, Runner] = {PIN: Pin(), BALLOON: Balloon(settle_s=0.0)}  #: post-conditions, checked once


def _read_back(a: Action, hosts: Hosts) -> tuple[str, str]:
    """A pin or balloon that was running when its run died: ``done`` when the host shows its effect now (its
    runner's post-condition, read once), else ``failed`` with what the host shows. Never run again."""
    env = Env(hosts)
    try:
        dom = running_here(a, env)
        if isinstance(dom, Outcome):
            return FAILED, f"reconciled: interrupted; {dom.detail}"
        out = READ_BACK[a.kind].post_condition(a, env, Outcome(DONE, f"{a.vm} shows the {a.kind} as asked"))
    except (libvirt.libvirtError, HostError) as exc:
        return FAILED, f"reconciled: interrupted; {a.vm} could not be read back: {exc}"
    return out.status, f"reconciled: {'' if out.status == DONE else 'interrupted; '}{out.detail}"


def run_action(a: Action, env: Env) -> Outcome:
    """Run one action against live hosts through its kind's runner."""
    return run(RUNNERS[a.kind], a, env)


def schedule(entries: list[journal.Entry], max_parallel: int, run: Callable[[journal.Entry], Outcome],
             started: Callable[[journal.Entry], None] = lambda e: None,
             finished: Callable[[journal.Entry, Outcome], None] = lambda e, o: None) -> None:
    """Run actions with at most ``max_parallel`` at once and never two on one host at a time.

    An action starts only when none of its hosts is busy and no earlier action touching one of
    its hosts is still waiting, so actions that share a host keep the plan's order.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    pending = list(entries)
    running: dict[Future[Outcome], tuple[journal.Entry, set[str]]] = {}
    busy: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        while pending or running:
            waiting: set[str] = set()
            for a in list(pending):
                hosts = a.action.hosts
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


@dataclass
class Hooks:
    """What a caller may add to a run: progress bars, and a question asked before each action (a controller's
    lead: when it says no, the action is skipped, not run)."""

    progress_factory: Callable[[str], Callable[[float], None]] | None = None
    keep_going: Callable[[], bool] | None = None


def apply(engine: Engine, db_url: str | None, plan: journal.NewPlan, guard: Guardrails,
          say: Callable[[str], None] = print, hooks: Hooks | None = None) -> tuple[int, dict[str, int]]:
    """Lock, reconcile, record and run a plan; returns (plan id, counts of outcomes)."""
    hooks = hooks or Hooks()
    progress_factory, keep_going = hooks.progress_factory, hooks.keep_going
    with apply_lock(db_url):
        hosts = Hosts(engine)
        try:
            for note in reconcile(engine, hosts):
                say(note)
            plan_id = journal.create_plan(engine, plan)
            counts = {DONE: 0, SKIPPED: 0, FAILED: 0}

            def run_one(e: journal.Entry) -> Outcome:
                a = e.action
                if keep_going is not None and not keep_going():
                    return Outcome(SKIPPED, "not acting: this controller no longer leads (its database lease ended)")
                return run_action(a, Env(hosts, guard, progress_factory(a.describe()) if progress_factory else None))

            def finished(e: journal.Entry, outcome: Outcome) -> None:
                journal.set_status(engine, e.id, outcome.status, outcome.detail, outcome.extra or None)
                counts[outcome.status] += 1
                say(f"{e.action.kind} {e.action.vm}: {outcome.status}: {outcome.detail}")

            schedule(journal.plan_actions(engine, plan_id), guard.settings.max_parallel, run_one,
                     started=lambda e: journal.set_status(engine, e.id, "running"), finished=finished)
            journal.finish_plan(engine, plan_id)
            return plan_id, counts
        finally:
            hosts.close()
