"""``llmvirt controller run``: a long-running controller. Several may share one store (PostgreSQL for
controllers on different machines); exactly one leads at a time (:mod:`llmvirt.store.leadership`).

Every interval each controller asks for the lead. The leader scans every host; when a plan is due (at once on
taking the lead, then every ``plan_every_s``: by default 300 s, the cadence the balance default was tuned and judged
at) it plans, and with ``--apply`` applies the plan through the executor (its lock, guardrails and journal), asking
before each action whether it still leads. A follower does nothing but ask again next interval. A new leader
first sets right what a dead one left open in the journal (the scan's reconciliation). A controller
that loses its lead, or the database, stops acting at once and reports it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from llmvirt.errors import LlmvirtError
from llmvirt.observe.host_sessions import HostSessions
from llmvirt.store.leadership import Leadership
from llmvirt.unattended import EVERY_MINUTES

LEADER, FOLLOWER, LOST, ERROR = "leader", "follower", "lost", "error"
PLAN_EVERY_S = 60.0 * EVERY_MINUTES
"""Default seconds between a leader's plans: the 5-minute cadence the balance default was tuned and judged at
(:data:`llmvirt.unattended.EVERY_MINUTES`), whatever the tick interval (which is also the takeover time)."""


@dataclass
class Tick:
    """What one interval did (one JSON line of ``controller run --json``)."""

    role: str
    took_over: bool = False
    reconciled: list[str] = field(default_factory=list)
    scan_id: int | None = None
    hosts_ok: int = 0
    hosts_failed: int = 0
    planned: bool = False  #: whether the leader planned this tick (a plan is due every ``plan_every_s``)
    actions: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        """The tick as printed."""
        return asdict(self)


@dataclass
class ControllerSettings:
    """What a controller does while it leads."""

    apply: bool = False
    goal: str = "balance"
    max_migrations: int = 10
    config_path: Path | None = None
    plan_every_s: float = PLAN_EVERY_S  #: seconds between plans; the leader scans every tick between them


def tick(engine: Engine, db_url: str, lead: Leadership, settings: ControllerSettings,
         sessions: HostSessions | None = None, plan: bool = True) -> Tick:
    """One interval: take or keep the lead; as leader scan (over ``sessions``, the kept host connections, when
    given) and, with ``plan`` or on taking the lead, plan and (with apply) act."""
    was_leading = lead.leading
    if not lead.try_lead():
        return Tick(LOST if was_leading else FOLLOWER)
    t = Tick(LEADER, took_over=not was_leading)
    try:
        _scan(engine, db_url, settings, sessions, t)
        if t.hosts_ok + t.hosts_failed and (plan or t.took_over):
            _plan_and_act(engine, db_url, lead, settings, t)
    except (LlmvirtError, OSError) as exc:  # a host or the store failed: report, keep the process alive
        t.role, t.note = ERROR, str(exc)
    except Exception as exc:  # noqa: BLE001 - a database that went away raises the driver's own errors
        t.role, t.note = ERROR, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if t.role == ERROR and not lead.holds():
        t.role = LOST
    return t


def _scan(engine: Engine, db_url: str, settings: ControllerSettings, sessions: HostSessions | None, t: Tick) -> None:
    from llmvirt.scan_service import Reach, scan_and_record
    from llmvirt.store import registry

    hosts = [(h.name, h.uri, h.maintenance) for h in registry.list_hosts(engine)]
    if not hosts:
        t.note = "no hosts registered"
        return
    done = scan_and_record(engine, db_url, settings.config_path, hosts, Reach(sessions=sessions))
    t.reconciled, t.scan_id = done.reconciled, done.scan_id
    t.hosts_ok, t.hosts_failed = len(done.result.hosts), len(done.result.failures)


def _plan_and_act(engine: Engine, db_url: str, lead: Leadership, settings: ControllerSettings, t: Tick) -> None:
    from llmvirt import config, plan_service
    from llmvirt.act import executor
    from llmvirt.store import journal

    cluster = plan_service.scanned_cluster(engine)
    plan = plan_service.rebalance_plan(engine, settings.config_path, cluster, settings.goal, None,
                                       settings.max_migrations)
    t.planned = True  # a plan that failed is tried again next tick
    actions, _held = plan_service.migrate_actions(engine, settings.config_path, plan)
    t.actions = len(actions)
    if not settings.apply or not actions:
        return
    if not lead.holds():
        t.role, t.note = LOST, "lost the lead before acting"
        return
    _, t.outcomes = executor.apply(engine, db_url, journal.NewPlan(plan.goal, plan.policy, plan.as_json(), actions),
                                   config.load_guardrails(settings.config_path), say=lambda _m: None,
                                   hooks=executor.Hooks(keep_going=lead.holds))


def controller_name() -> str:
    """This controller's name in the store: ``hostname:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _beat(engine: Engine, role: str, started_at: datetime, interval_s: float) -> None:
    from llmvirt.store import controllers

    try:
        controllers.heartbeat(engine, controller_name(), role, started_at, interval_s)
    except Exception:  # noqa: BLE001 - a controller cut off from the database still reports on stdout
        pass


def run(engine: Engine, db_url: str, settings: ControllerSettings, interval_s: float, report: Callable[[Tick], None],
        ticks: int | None = None) -> None:
    """Tick every ``interval_s`` until stopped (or ``ticks`` times), recording a heartbeat each tick; the lead is
    given up, and the heartbeat removed, on the way out."""
    from llmvirt.store import controllers

    lead = Leadership(db_url)
    sessions = HostSessions()
    started_at = datetime.now(UTC).replace(tzinfo=None)
    n, plan_due = 0, 0.0  # monotonic time the next plan is due
    try:
        while ticks is None or n < ticks:
            started = time.monotonic()
            t = tick(engine, db_url, lead, settings, sessions, plan=started >= plan_due)
            if t.planned:
                plan_due = started + settings.plan_every_s
            _beat(engine, t.role, started_at, interval_s)
            report(t)
            n += 1
            if ticks is None or n < ticks:
                time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    finally:
        sessions.close()
        lead.release()
        try:
            controllers.forget(engine, controller_name())
        except Exception:  # noqa: BLE001, S110 - the database may be the reason we stop
            pass
