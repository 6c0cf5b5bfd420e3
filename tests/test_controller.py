"""Several controllers, one fleet (issue 19): real `llmvirt controller run` processes on one store, on a real
PostgreSQL server (advisory lock in the server) and on SQLite (a file lock). Exactly one leads; when it is
SIGKILLed another takes over within a bounded time and reconciles what it left; a leader cut off from
the database stops acting."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import fixture_uri

from llmvirt.store import database, registry

INTERVAL = 0.3
TAKEOVER_S = 5.0  #: bound on a takeover after the leader dies: a tick, plus the server noticing the session end


class Controller:
    """One `llmvirt controller run --json` process; its tick lines arrive on a queue."""

    def __init__(self, db_url: str, *extra: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "llmvirt", "controller", "run", "--interval",
                                      str(INTERVAL), "--json", *extra], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "LLMVIRT_DB": db_url})
        self.lines: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def next_tick(self, timeout: float = 30.0) -> dict:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no tick in {timeout} s; stderr: {self.stderr()}") from None

    def until(self, role: str, timeout: float) -> tuple[dict, float]:
        """The first tick with ``role`` and the seconds it took to come."""
        t0 = time.monotonic()
        while True:
            left = timeout - (time.monotonic() - t0)
            assert left > 0, f"no {role!r} tick within {timeout} s"
            tick = self.next_tick(left)
            if tick["role"] == role:
                return tick, time.monotonic() - t0

    def ticks(self) -> list[dict]:
        """The tick lines that arrived and were not read yet (for a failure's message)."""
        return list(self.lines.queue)

    def stderr(self) -> str:
        """What the process wrote to stderr once it has ended; "(running)" while it runs."""
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read() if self.proc.stderr else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path) -> str:  # noqa: ANN001
    """A store with two test-driver hosts, on a real PostgreSQL server or in a SQLite file."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_server").new_database()
    else:
        url = f"sqlite:///{tmp_path / 'llmvirt.db'}"
    engine = database.open_engine(url)
    registry.add_host(engine, registry.RegisteredHost("busy", fixture_uri("busy-host.xml")))
    registry.add_host(engine, registry.RegisteredHost("small", fixture_uri("small-host.xml")))
    engine.dispose()
    return url


def test_one_leads_and_another_takes_over_when_it_is_killed(store: str) -> None:
    a = Controller(store)
    try:
        first = a.next_tick()
        assert first["role"] == "leader" and first["took_over"] and first["hosts_ok"] == 2, first
        b = Controller(store)
        try:
            for _ in range(3):  # while a lives, b only waits
                assert b.next_tick()["role"] == "follower"
            assert a.next_tick()["role"] == "leader"
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(timeout=30)
            tick, waited = b.until("leader", TAKEOVER_S)
            assert tick["took_over"] and tick["hosts_ok"] == 2 and waited < TAKEOVER_S
            _one_live_leader(store, f"{socket.gethostname()}:{b.proc.pid}", f"{socket.gethostname()}:{a.proc.pid}")
        finally:
            b.stop()
    finally:
        a.stop()


def _one_live_leader(store: str, leader: str, dead: str) -> None:
    """The heartbeats: the killed leader's row stays, goes stale, and only the new leader counts as leading."""
    from llmvirt.store import controllers

    engine = database.open_engine(store)
    deadline = time.monotonic() + 15
    while True:
        rows = {c["name"]: c for c in controllers.all_controllers(engine)}
        if rows[dead]["stale"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rows[dead]["stale"] and rows[dead]["role"] == "leader"  # it died leading: its last word
    assert [n for n, c in rows.items() if c["role"] == "leader" and not c["stale"]] == [leader]
    engine.dispose()


def test_a_new_leader_reconciles_what_a_dead_one_left_running(store: str) -> None:
    from llmvirt.model.action import BALLOON, Action
    from llmvirt.store import journal

    engine = database.open_engine(store)
    plan = journal.create_plan(engine, journal.NewPlan("balloon", "test", {}, [
        Action(BALLOON, "web1", "busy", reason="left running by a leader that died", target_mib=2048)]))
    (entry,) = journal.plan_actions(engine, plan)
    journal.set_status(engine, entry.id, "running")
    c = Controller(store, "--ticks", "1")
    try:
        tick = c.next_tick()
        assert c.proc.wait(timeout=60) == 0  # it stops by itself after its one tick
    finally:
        c.stop()
    assert tick["role"] == "leader" and len(tick["reconciled"]) == 1, tick
    assert journal.open_actions(engine) == []  # set right from what the host shows, not re-run
    from llmvirt.store import controllers

    assert controllers.all_controllers(engine) == []  # a controller that stops cleanly removes its heartbeat


def test_a_leader_cut_off_from_the_database_stops_acting(postgres_server) -> None:  # noqa: ANN001
    """The server ends the leader's lock session (as when the leader loses the database): its next tick says
    it lost the lead, and the other controller takes over."""
    import psycopg

    url = postgres_server.new_database()
    engine = database.open_engine(url)
    registry.add_host(engine, registry.RegisteredHost("busy", fixture_uri("busy-host.xml")))
    dbname = engine.url.database
    engine.dispose()
    a = Controller(url)
    b = None
    try:
        assert a.next_tick()["role"] == "leader"
        b = Controller(url)
        assert b.next_tick()["role"] == "follower"
        with psycopg.connect(host=str(postgres_server.socket_dir), user="llmvirt", dbname="postgres",
                             autocommit=True) as conn:
            ended = conn.execute("SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_stat_activity s "
                                 "ON s.pid = l.pid WHERE l.locktype = 'advisory' AND s.datname = %s",
                                 (dbname,)).fetchall()
        assert ended == [(True,)]
        lost, _ = a.until("lost", TAKEOVER_S)
        assert lost["actions"] == 0 and lost["scan_id"] is None  # it did nothing in the tick it found out
        tick, waited = b.until("leader", TAKEOVER_S)
        assert tick["took_over"]
        assert a.next_tick()["role"] == "follower"  # and it does not take the lead back while b holds it
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_an_apply_stops_when_the_lead_is_lost(cli, db_url: str) -> None:
    """The executor asks before every action: a controller that no longer leads skips, never runs."""
    from llmvirt import config
    from llmvirt.act import executor
    from llmvirt.model.action import BALLOON, SKIPPED, Action
    from llmvirt.store import journal

    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    engine = database.open_engine(db_url)
    plan = journal.NewPlan("balloon", "test", {}, [Action(BALLOON, "web1", "busy", target_mib=2048),
                                                   Action(BALLOON, "db1", "busy", target_mib=4096)])
    _, counts = executor.apply(engine, db_url, plan, config.load_guardrails(None), say=lambda _m: None,
                               hooks=executor.Hooks(keep_going=lambda: False))
    assert counts == {"done": 0, "skipped": 2, "failed": 0}
    rows = journal.all_actions(engine)
    assert [r["status"] for r in rows] == [SKIPPED, SKIPPED]
    assert all("no longer leads" in r["reason"] for r in rows), rows


def test_a_leader_keeps_its_host_connections_between_ticks(db_url: str) -> None:
    """A leader's ticks scan over the connections it keeps: the second tick opens none, and reads the same."""
    from llmvirt import plan_service
    from llmvirt.controller import LEADER, ControllerSettings, tick
    from llmvirt.observe.host_sessions import HostSessions
    from llmvirt.store.leadership import Leadership

    engine = database.open_engine(db_url)
    for name, fixture in (("busy", "busy-host.xml"), ("small", "small-host.xml")):
        registry.add_host(engine, registry.RegisteredHost(name, fixture_uri(fixture)))
    lead, kept = Leadership(db_url), HostSessions()
    try:
        first = tick(engine, db_url, lead, ControllerSettings(), kept)
        vms_first = sorted(v.name for h in plan_service.scanned_cluster(engine).hosts for v in h.vms)
        opened = {uri: kept.get(uri) for uri in (fixture_uri("busy-host.xml"), fixture_uri("small-host.xml"))}
        assert all(not just_opened for _, just_opened in opened.values())  # the first tick opened them
        second = tick(engine, db_url, lead, ControllerSettings(), kept)
        assert (first.role, second.role, second.hosts_ok, second.hosts_failed) == (LEADER, LEADER, 2, 0)
        assert all(kept.get(uri) == (session, False) for uri, (session, _) in opened.items())
        assert sorted(v.name for h in plan_service.scanned_cluster(engine).hosts for v in h.vms) == vms_first
        assert vms_first == ["batch-off", "db1", "web1"] and second.scan_id != first.scan_id  # small has none
    finally:
        kept.close()
        lead.release()


def test_a_leader_scans_every_tick_and_plans_at_once_then_every_plan_every_seconds(db_url: str) -> None:
    """The balance default was judged deciding every 5 minutes: a controller ticking faster (for a quick takeover)
    still scans every tick, plans on taking the lead, and then only once its plan interval has passed."""
    from llmvirt import controller

    engine = database.open_engine(db_url)
    registry.add_host(engine, registry.RegisteredHost("busy", fixture_uri("busy-host.xml")))
    seen: list[controller.Tick] = []
    settings = controller.ControllerSettings(plan_every_s=0.5)
    t0 = time.monotonic()
    controller.run(engine, db_url, settings, 0.1, seen.append, ticks=10)
    took = time.monotonic() - t0
    assert all(t.role == controller.LEADER and t.hosts_ok == 1 for t in seen), seen
    assert len({t.scan_id for t in seen}) == 10 and None not in {t.scan_id for t in seen}  # scanned each tick
    planned = [i for i, t in enumerate(seen) if t.planned]
    assert planned[0] == 0 and 2 <= len(planned) <= 1 + took / 0.5, (planned, took)  # at once, then when due
    assert all(b - a >= 2 for a, b in zip(planned, planned[1:], strict=False)), planned  # scans between plans
    assert all(t.actions == 0 for t in seen if not t.planned)
    engine.dispose()


def test_controller_refuses_a_plan_interval_that_is_not_above_0(cli) -> None:
    code, _out, err = cli("controller", "run", "--plan-every", "0", "--ticks", "1")
    assert code == 2 and "--plan-every must be above 0" in err and "Traceback" not in err
