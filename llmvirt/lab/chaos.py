"""A chaos soak on the lab's real daemons: random actions, random faults, and an audit after each round.

Each round applies a plan of one to three random actions (live migrations, vCPU pinnings, balloon
targets) through ``executor.apply`` in its own process, as ``rebalance --apply`` runs it, and may
inject one fault:

- ``libvirtd_killed``: SIGKILL to the libvirtd of a host the plan touches, once an action is running;
- ``llmvirt_killed``: SIGKILL to the applying process, once an action is running;
- ``guest_paused``: a planned guest is paused underneath llmvirt before the plan runs;
- ``guest_destroyed``: a planned guest is destroyed (powered off) underneath llmvirt before the plan runs;
- ``store_read_only``: the database is made immutable (``chattr +i``) for the run.

Then the lab is set right as an operator would (dead daemons started again, paused guests resumed,
destroyed guests started on the host that defines them, the store writable again), a scan runs (it
reconciles what a killed run left open), and the audit checks: every guest runs on exactly one host,
no journal entry is left open or lost (each run that could write the journal has its plan), the stored
scans only grow, and no process printed a traceback.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import libvirt
from sqlalchemy import func, select

from llmvirt.errors import quiet_libvirt
from llmvirt.lab import daemons
from llmvirt.lab.lab import LabState
from llmvirt.model.action import Action
from llmvirt.store import database, journal
from llmvirt.store.schema import HostSnapshotRow, PlanRow

quiet_libvirt()  # libvirt prints no error of its own: llmvirt reports them

FAULTS = ("libvirtd_killed", "llmvirt_killed", "guest_paused", "guest_destroyed", "store_read_only")
GUEST_MAX_MIB = 192  #: the lab guests' memory (balloon targets are drawn below it)

APPLY = (  # executor.apply on explicit actions, in its own process, as `rebalance --apply` runs it
    "import json, sys\n"
    "from llmvirt.act import executor\n"
    "from llmvirt.act.runner import Guardrails, MigrationSettings\n"
    "from llmvirt.errors import LlmvirtError\n"
    "from llmvirt.model.action import Action\n"
    "from llmvirt.store import database, journal\n"
    "url, rows, settings = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])\n"
    "actions = [Action.from_params(r['kind'], r['vm'], r['src'], r['dst'], r['params'], r['vm_uuid']) for r in rows]\n"
    "try:\n"
    "    executor.apply(database.open_engine(url), url, journal.NewPlan('chaos', 'chaos', {}, actions),\n"
    "                   Guardrails(settings=MigrationSettings(**settings)), say=lambda m: None)\n"
    "except LlmvirtError as e:\n"
    "    print(f'error: {e}', file=sys.stderr)\n"
    "    sys.exit(e.exit_code)\n")


@dataclass
class SoakConfig:
    """How long and how rough the soak is."""

    actions: int = 500  #: actions to apply in all
    faults: int = 50  #: faults to inject at least (the soak runs on past ``actions`` until they are in)
    seed: int = 0  #: every random choice
    settle_s: float = 90.0  #: how long a guest may take to run on exactly one host after a fault
    run_timeout_s: float = 180.0  #: an applying process still running after this is killed and counted as hung


@dataclass
class Audit:
    """What the soak did and what it found."""

    rounds: int = 0  #: plans applied
    actions: dict[str, int] = field(default_factory=dict)  #: by kind
    outcomes: dict[str, int] = field(default_factory=dict)  #: journal status of every action after the round
    faults: dict[str, int] = field(default_factory=dict)  #: injected, by kind
    lost_guests: int = 0  #: rounds that ended with a guest running nowhere
    duplicated_guests: int = 0  #: rounds that ended with a guest running on two hosts
    open_entries: int = 0  #: journal actions still pending or running after the round's scan
    lost_plans: int = 0  #: runs that could write the journal but left no plan
    snapshots_lost: int = 0  #: rounds after which fewer scans were stored than before
    tracebacks: int = 0  #: processes that printed a Python traceback
    hung: int = 0  #: applying processes killed for running past the timeout
    exit_codes: dict[str, int] = field(default_factory=dict)  #: of the applying processes
    wall_s: float = 0.0  #: the soak's duration
    problems: list[str] = field(default_factory=list)  #: one line per finding, for the report

    def count(self, table: dict[str, int], key: str) -> None:
        """Add one to ``table[key]``."""
        table[key] = table.get(key, 0) + 1


@dataclass
class _Round:
    """One round's plan, its fault, and what the fault touched."""

    actions: list[Action]
    fault: str | None = None
    paused: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)


def _where(state: LabState) -> dict[str, list[str]]:
    """Guest -> the hosts it runs on now (a dead daemon's host is skipped)."""
    out: dict[str, list[str]] = {g: [] for g in state.guests}
    for h in state.hosts:
        try:
            conn = libvirt.open(h.uri)
        except libvirt.libvirtError:
            continue
        try:  # the active list in one call: a domain can vanish between a listing and a question about it
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                if dom.name() in out:
                    out[dom.name()].append(h.name)
        except libvirt.libvirtError:
            pass  # the daemon died under us: its host is skipped this time
        finally:
            conn.close()
    return out


def _uuid(state: LabState, host: str, guest: str) -> str:
    conn = libvirt.open(_host(state, host).uri)
    try:
        return conn.lookupByName(guest).UUIDString()
    finally:
        conn.close()


def _host(state: LabState, name: str) -> daemons.LabHost:
    return next(h for h in state.hosts if h.name == name)


def _random_actions(rng: random.Random, state: LabState, where: dict[str, list[str]]) -> list[Action]:
    """One to three actions on distinct guests that run on exactly one host now."""
    placed = [g for g, hs in where.items() if len(hs) == 1]
    out = []
    for guest in rng.sample(placed, k=min(len(placed), rng.randint(1, 3))):
        src = where[guest][0]
        kind = rng.choice(("migrate", "migrate", "pin", "balloon"))
        uuid = _uuid(state, src, guest)
        if kind == "migrate":
            dst = rng.choice([h.name for h in state.hosts if h.name != src])
            out.append(Action.migrate(guest, src, dst, "chaos", uuid=uuid))
        elif kind == "pin":
            ncpu = os.cpu_count() or 1
            cpus = tuple(sorted(rng.sample(range(ncpu), k=rng.randint(1, ncpu))))
            out.append(Action.pin(guest, src, {0: cpus}, "chaos", uuid=uuid))
        else:
            out.append(Action.balloon(guest, src, rng.randint(GUEST_MAX_MIB // 2, GUEST_MAX_MIB), "chaos", uuid=uuid))
    return out


def _before_run(state: LabState, rnd: _Round, db: Path) -> None:
    """Faults that strike before the plan runs: a guest paused or destroyed underneath, the store read-only."""
    guest = rnd.actions[0].vm
    if rnd.fault in ("guest_paused", "guest_destroyed"):
        conn = libvirt.open(_host(state, rnd.actions[0].src).uri)
        try:
            dom = conn.lookupByName(guest)
            if rnd.fault == "guest_paused":
                dom.suspend()
                rnd.paused.append(guest)
            else:
                dom.destroy()
                rnd.destroyed.append(guest)
        finally:
            conn.close()
    if rnd.fault == "store_read_only":
        _immutable(db, True)


def _immutable(db: Path, on: bool) -> None:
    """``chattr +i`` / ``-i`` on the database and its WAL files (root is refused too)."""
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if p.exists():
            subprocess.run(["chattr", "+i" if on else "-i", str(p)], check=True)


def _run(url: str, rnd: _Round, rng: random.Random, state: LabState, cfg: SoakConfig) -> tuple[int, str, bool]:
    """Apply the round's plan in its own process, killing llmvirt or a libvirtd mid-action for those faults.
    Returns (exit code, output, hung)."""
    slow = rnd.fault in ("libvirtd_killed", "llmvirt_killed")  # slow migrations so the kill lands mid-transfer
    settings = {"bandwidth_mib_s": 16 if slow else 0, "timeout_base_s": 30, "timeout_per_gib_s": 60}
    engine = database.open_engine(url)
    before = {a["id"] for a in journal.all_actions(engine)} if rnd.fault != "store_read_only" else set()
    proc = subprocess.Popen([sys.executable, "-c", APPLY, url, json.dumps([a.row() for a in rnd.actions]),
                             json.dumps(settings)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, LLMVIRT_DB=url))
    if slow:
        deadline = time.monotonic() + 60
        running = None
        while running is None and proc.poll() is None and time.monotonic() < deadline:
            running = next((a for a in journal.all_actions(engine) if a["id"] not in before
                            and a["status"] == "running"), None)
            time.sleep(0.05)
        if running is not None and proc.poll() is None:
            time.sleep(rng.uniform(0.0, 1.0))
            if rnd.fault == "llmvirt_killed":
                proc.send_signal(signal.SIGKILL)
            else:
                host = rng.choice([h for h in (running["src"], running["dst"]) if h])
                pid = daemons.read_pid(_host(state, host).pidfile("libvirtd"))
                if pid:
                    os.kill(pid, signal.SIGKILL)
        else:
            rnd.fault = None  # the plan finished (or failed) before anything ran: no fault was injected
    try:
        out, _ = proc.communicate(timeout=cfg.run_timeout_s)
        return proc.returncode, out.decode(errors="replace"), False
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return -9, out.decode(errors="replace"), True


def _set_right(state: LabState, rnd: _Round, db: Path) -> None:
    """What an operator does after a fault: daemons back, paused guests resumed, destroyed ones started."""
    _immutable(db, False)
    for h in state.hosts:
        daemons.restart_host(h)
    for guest in rnd.paused + rnd.destroyed:
        for h in state.hosts:
            conn = libvirt.open(h.uri)
            try:
                dom = next((d for d in conn.listAllDomains() if d.name() == guest), None)
                if dom is None:
                    continue
                state_code, _ = dom.state()
                if state_code == libvirt.VIR_DOMAIN_PAUSED:
                    dom.resume()
                elif not dom.isActive() and dom.isPersistent():
                    dom.create()
            finally:
                conn.close()


def _settle(state: LabState, timeout_s: float) -> dict[str, list[str]]:
    """Where the guests run once each runs on exactly one host, or at the timeout."""
    deadline = time.monotonic() + timeout_s
    where = _where(state)
    while time.monotonic() < deadline and any(len(h) != 1 for h in where.values()):
        time.sleep(0.5)
        where = _where(state)
    return where


def _scan(url: str) -> tuple[int, str]:
    """``llmvirt scan`` in its own process (it reconciles what a killed run left open)."""
    res = subprocess.run([sys.executable, "-m", "llmvirt", "scan"], capture_output=True, text=True,
                         env=dict(os.environ, LLMVIRT_DB=url), timeout=300)
    return res.returncode, res.stdout + res.stderr


def _counts(url: str) -> tuple[int, int]:
    """(plans in the journal, stored host snapshots)."""
    engine = database.open_engine(url)
    with engine.connect() as conn:
        return (int(conn.scalar(select(func.count()).select_from(PlanRow)) or 0),
                int(conn.scalar(select(func.count()).select_from(HostSnapshotRow)) or 0))


def _audit_round(audit: Audit, url: str, state: LabState, rnd: _Round, seen: tuple[int, int, bool],
                 settle_s: float = 90.0) -> tuple[int, int]:
    """Check the lab and the store after a round (``seen``: plans and snapshots before it, and whether it could
    write the journal); returns (plans, snapshots) now."""
    plans_before, snaps_before, wrote = seen
    where = _settle(state, settle_s)
    for guest, hosts in where.items():
        if not hosts:
            audit.lost_guests += 1
            audit.problems.append(f"round {audit.rounds}: {guest} runs nowhere ({rnd.fault})")
        elif len(hosts) > 1:
            audit.duplicated_guests += 1
            audit.problems.append(f"round {audit.rounds}: {guest} runs on {hosts} ({rnd.fault})")
    code, out = _scan(url)
    if "Traceback" in out:
        audit.tracebacks += 1
        audit.problems.append(f"round {audit.rounds}: scan printed a traceback")
    if code != 0:
        audit.problems.append(f"round {audit.rounds}: scan exited {code}: {out.strip()[-200:]}")
    engine = database.open_engine(url)
    left_open = journal.open_actions(engine)
    audit.open_entries += len(left_open)
    plans, snaps = _counts(url)
    if wrote != (plans == plans_before + 1):
        audit.lost_plans += 1
        audit.problems.append(f"round {audit.rounds}: {plans - plans_before} plans recorded, expected {int(wrote)}")
    if snaps < snaps_before:
        audit.snapshots_lost += 1
    if plans > plans_before:
        for e in journal.plan_actions(engine, plans):
            audit.count(audit.outcomes, e.status)
    return plans, snaps


def _fault_odds(cfg: SoakConfig, done: int, audit: Audit) -> float:
    """Chance of a fault this round: the faults still owed over the rounds still to run (about two actions a
    round), so the soak ends with both targets met; a fault that found nothing to strike is owed again."""
    owed = cfg.faults - sum(audit.faults.values())
    return 0.0 if owed <= 0 else min(1.0, owed / max(1.0, (cfg.actions - done) / 2))


def soak(lab_dir: Path, url: str, cfg: SoakConfig, say: Any = print) -> Audit:
    """Run the soak on the lab in ``lab_dir`` (up, its hosts registered in the store at ``url``)."""
    state = LabState.load(lab_dir)
    if state is None:
        raise RuntimeError(f"no lab in {lab_dir}")
    rng = random.Random(cfg.seed)
    db = Path(url.removeprefix("sqlite:///"))
    audit, t0 = Audit(), time.monotonic()
    _scan(url)
    plans, snaps = _counts(url)
    done = 0
    while done < cfg.actions or sum(audit.faults.values()) < cfg.faults:
        where = _settle(state, 5.0)
        rnd = _Round(_random_actions(rng, state, where))
        if not rnd.actions:
            audit.problems.append("no guest runs on exactly one host: soak stopped")
            break
        rnd.fault = rng.choice(FAULTS) if rng.random() < _fault_odds(cfg, done, audit) else None
        if rnd.fault in ("libvirtd_killed", "llmvirt_killed") and not any(a.kind == "migrate" for a in rnd.actions):
            first = rnd.actions[0]  # a kill lands mid-transfer only in a migration: the first action becomes one
            dst = next(h.name for h in state.hosts if h.name != first.src)
            rnd.actions[0] = Action.migrate(first.vm, first.src, dst, "chaos", uuid=first.uuid)
        _before_run(state, rnd, db)
        code, out, hung = _run(url, rnd, rng, state, cfg)
        _set_right(state, rnd, db)
        audit.rounds += 1
        done += len(rnd.actions)
        for a in rnd.actions:
            audit.count(audit.actions, a.kind)
        if rnd.fault:
            audit.count(audit.faults, rnd.fault)
        audit.count(audit.exit_codes, str(code))
        audit.hung += int(hung)
        if "Traceback" in out:
            audit.tracebacks += 1
            audit.problems.append(f"round {audit.rounds}: apply printed a traceback: {out.strip()[-300:]}")
        plans, snaps = _audit_round(audit, url, state, rnd, (plans, snaps, rnd.fault != "store_read_only"),
                                    cfg.settle_s)
        if audit.rounds % 10 == 0:
            say(f"round {audit.rounds}: {done} actions, faults {audit.faults}, problems {len(audit.problems)}")
    audit.wall_s = round(time.monotonic() - t0, 1)
    return audit


def report(audit: Audit) -> dict[str, Any]:
    """The audit as a JSON document."""
    return asdict(audit)
