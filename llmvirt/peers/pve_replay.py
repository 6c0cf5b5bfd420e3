"""A small round-based model of Proxmox VE's HA manager, to replay a CRS test case's timeline.

:class:`HaReplay` keeps enough state (nodes online, in maintenance or failed; guests started, migrating,
fenced) to ask the scheduler the same questions at the same moments as Proxmox's own simulator. The
answers come from :mod:`llmvirt.peers.pve_crs` (or another :class:`Scheduler`, e.g. llmvirt's).
Commands it does not model are reported, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmvirt.errors import UsageError
from llmvirt.peers import pve_crs
from llmvirt.peers.pve_case import (
    MIB,
    ROUND_S,
    ROUNDS_PER_BATCH,
    SETTLE_ROUNDS,
    Case,
    Decision,
    load_case,
)
from llmvirt.peers.pve_crs import Candidate, Load, Usage


@dataclass
class GuestState:
    """One guest as the HA manager tracks it: state, node, migration target, what its config asks."""

    state: str
    node: str
    target: str | None = None
    want: str = "started"
    failed_recovery: bool = False
    running: bool = False  #: added while already running: rebalance-on-start leaves it where it is


@dataclass
class HaReplay:
    """Replay a case's timeline, asking :mod:`pve_crs` each scheduling question Proxmox asks."""

    case: Case
    decisions: list[Decision] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    online: set[str] = field(default_factory=set)
    maintenance: set[str] = field(default_factory=set)
    ss: dict[str, GuestState] = field(default_factory=dict)
    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    scheduler: Scheduler = field(default_factory=lambda: ProxmoxCrs())

    def __post_init__(self) -> None:
        self.config = {s: dict(d) for s, d in self.case.services.items()}
        status = self.case.manager_status.get("service_status", {})
        for sid, d in status.items():
            want = self.wants(self.config.get(sid, {}))
            self.ss[sid] = GuestState(d["state"], d["node"], d.get("target"), want)
        self.online = {n for n, s in self.case.manager_status.get("node_status", {}).items() if s == "online"}
        self.static = dict(self.case.static)
        self.dynamic = dict(self.case.dynamic)

    # --- what the scheduler sees -------------------------------------------------------------
    @staticmethod
    def wants(conf: dict[str, Any]) -> str:
        """What a guest's config asks for: ``started`` (started or enabled) or ``stopped``."""
        return "started" if conf.get("state", "stopped") in ("started", "enabled") else "stopped"

    def usage(self, sid: str) -> Usage:
        """The guest's usage in the CRS mode: configured (static) or used (dynamic)."""
        if self.case.crs.mode == "dynamic":
            return self.dynamic.get(sid, Usage(0.0, 0.0))
        return self.static.get(sid, Usage(0.0, 0.0))

    def usable_nodes(self) -> list[str]:
        """Nodes that may take guests: online and not in maintenance, by name."""
        return sorted(n for n in self.online if n not in self.maintenance)

    def where(self, sid: str) -> list[str]:
        """The nodes a guest puts load on now (its node, and its target while moving)."""
        s = self.ss[sid]
        nodes = []
        if s.state in ("started", "request_stop", "migrate", "relocate", "fence") and s.node in self.online:
            nodes.append(s.node)
        if s.state in ("migrate", "relocate", "request_start_balance") and s.target in self.online:
            nodes.append(s.target)
        return nodes

    def load(self, exclude: str | None = None) -> Load:
        """Every usable node's load from the guests on it."""
        names = self.usable_nodes()
        load = Load([self.case.nodes[n] for n in names], unlimited_cpu=self.case.crs.mode != "dynamic")
        for sid in sorted(self.ss):
            if sid == exclude:
                continue
            for node in self.where(sid):
                if node in names:
                    load.add(node, self.usage(sid))
        return load

    def _partners(self, sid: str, positive: bool) -> set[str]:
        out: set[str] = set()
        for rule in self.case.resource_rules:
            if rule.positive == positive and sid in rule.sids:
                out |= rule.sids - {sid}
        return out

    def allowed(self, sid: str) -> list[str]:
        """The nodes a guest may go to: the top-priority online group of its node affinity rule
        (strict rules allow nothing else), less nodes holding a guest it must stay apart from,
        narrowed to nodes holding a guest it must stay with (if any)."""
        usable = self.usable_nodes()
        pri: dict[str, int] = {n: -1 for n in usable}
        for rule in self.case.node_rules:
            if sid in rule.sids:
                pri = {n: p for n, p in rule.nodes.items() if n in usable}
                if not rule.strict:
                    pri.update({n: -1 for n in usable if n not in rule.nodes})
        if not pri:
            return []
        top = max(pri.values())
        nodes = {n for n, p in pri.items() if p == top}
        for other in self._partners(sid, positive=False):
            if other in self.ss:
                nodes -= set(self.where(other))
        together = set()
        for other in self._partners(sid, positive=True):
            if other in self.ss:
                together |= set(self.where(other))
        if together & nodes:
            nodes &= together
        return sorted(nodes)

    def select(self, sid: str, best_score: bool) -> str | None:
        """The node for a guest: stay where it is when allowed (unless ``best_score``), else the
        scheduler's choice among the allowed nodes."""
        s = self.ss[sid]
        nodes = self.allowed(sid)
        if not nodes:
            return None
        if not best_score and s.node in nodes:
            return s.node
        return self.scheduler.choose(self, sid, nodes)

    # --- the timeline ------------------------------------------------------------------------
    def command(self, cmd: str) -> None:
        """Apply one ``cmdlist`` command; one that names a node hardware_status lacks is a UsageError."""
        words = cmd.split()
        if words[:1] in (["power"], ["network"], ["shutdown"], ["reboot"], ["crm"]) and len(words) >= 2 \
                and words[1] not in self.case.nodes:
            raise UsageError(f"{self.case.name}: cmdlist '{cmd}' names node {words[1]!r}, which hardware_status "
                             "does not list")
        if words[:1] == ["power"] and len(words) == 3:
            if words[2] == "on":
                self.online.add(words[1])
                self.maintenance.discard(words[1])
            else:
                self._fail(words[1])
        elif words[:1] == ["network"] and len(words) == 3:
            if words[2] == "off":
                self._fail(words[1])
            else:
                self.online.add(words[1])
        elif words[:1] == ["shutdown"] or words[:1] == ["reboot"]:
            if self.case.crs.shutdown_policy == "migrate":
                self.maintenance.add(words[1])
            elif self.case.crs.shutdown_policy in ("failover", "conditional") and words[0] == "shutdown":
                self._fail(words[1])
            else:
                self.unsupported.append(cmd)
        elif words[:1] == ["delay"] or words[:1] == ["skip-round"]:
            pass
        elif words[:1] == ["crm"] and len(words) == 3 and words[2] == "enable-node-maintenance":
            self.maintenance.add(words[1])
        elif words[:1] == ["crm"] and len(words) == 3 and words[2] == "disable-node-maintenance":
            self.maintenance.discard(words[1])
        elif words[:1] == ["service"] and len(words) >= 3:
            self._service_command(cmd, words[1], words[2], words[3:])
        else:
            self.unsupported.append(cmd)

    def _service_command(self, cmd: str, sid: str, verb: str, args: list[str]) -> None:
        if verb == "add" and len(args) >= 2:
            if args[0] not in self.case.nodes:
                raise UsageError(f"{self.case.name}: cmdlist '{cmd}' adds {sid} on node {args[0]!r}, which "
                                 "hardware_status does not list")
            self.config[sid] = {"node": args[0], "state": args[1], "running": args[2:3] == ["1"]}
        elif verb in ("set-static-stats", "set-dynamic-stats"):
            keys = dict(zip(args[::2], args[1::2], strict=False))
            try:
                if verb == "set-static-stats":
                    old = self.static.get(sid, Usage(0.0, 0.0))
                    cpu = float(keys.get("maxcpu", old.cpu))
                    mem = float(keys["maxmem"]) * MIB if "maxmem" in keys else old.mem
                    self.static[sid] = Usage(cpu, mem)
                else:
                    old = self.dynamic.get(sid, Usage(0.0, 0.0))
                    cpu = float(keys.get("cpu", old.cpu))
                    mem = float(keys["mem"]) * MIB if "mem" in keys else old.mem
                    self.dynamic[sid] = Usage(cpu, mem)
            except ValueError:
                raise UsageError(f"{self.case.name}: cmdlist '{cmd}': every value must be a number") from None
        elif verb in ("migrate", "relocate") and args and sid in self.ss:
            s = self.ss[sid]
            if s.state == "started" and args[0] in self.online and args[0] != s.node:
                s.state, s.target = verb, args[0]
        elif verb in ("started", "enabled", "stopped", "disabled") and sid in self.config:
            self.config[sid]["state"] = verb
            if sid in self.ss:
                self.ss[sid].want = self.wants(self.config[sid])
        elif verb == "delete":
            self.config.pop(sid, None)
            self.ss.pop(sid, None)
        else:
            self.unsupported.append(cmd)

    def _fail(self, node: str) -> None:
        self.online.discard(node)
        self.maintenance.discard(node)

    def round(self) -> None:
        """One HA manager round: add new guests, step every guest's state, then rebalance."""
        stable = all(s.state in ("started", "stopped") for s in self.ss.values())
        fresh: set[str] = set()
        for sid in sorted(self.config):
            if sid not in self.ss:
                conf = self.config[sid]
                want = self.wants(conf)
                state = "request_start" if want == "started" else "request_stop"
                self.ss[sid] = GuestState(state, conf["node"], None, want, running=bool(conf.get("running")))
                fresh.add(sid)
                stable = False
        for sid in sorted(self.ss):
            if not (sid in fresh and self.ss[sid].state == "request_stop"):  # stopping takes the node a round
                self._step(sid)
        if stable:
            self._auto_rebalance()

    def _step(self, sid: str) -> None:
        s = self.ss[sid]
        if s.state == "request_start":
            if self.case.crs.rebalance_on_start and self.case.crs.mode != "basic":
                node = self.select(sid, best_score=True)
                if node is not None:
                    self.decisions.append(Decision("start", sid, node))
                    if node != s.node:
                        s.state, s.target = "request_start_balance", node
                        return
            s.state = "started"
        elif s.state == "request_stop":
            s.state = "stopped"
        elif s.state in ("request_start_balance", "migrate", "relocate"):
            if s.target in self.online and not (s.state == "request_start_balance" and s.running):
                s.node = s.target
            s.state, s.target = ("started" if s.want == "started" else "stopped"), None
        elif s.state == "started":
            if s.node not in self.online:
                s.state = "fence"
                self._recover(sid)
            elif s.want == "stopped":
                s.state = "stopped"
            else:
                node = self.select(sid, best_score=s.node in self.maintenance)
                if node is not None and node != s.node:
                    self.decisions.append(Decision("migrate", sid, node))
                    s.state, s.target = "migrate", node
        elif s.state == "fence":
            self._recover(sid)

    def _recover(self, sid: str) -> None:
        s = self.ss[sid]
        node = self.select(sid, best_score=False)
        if node is None:
            if not s.failed_recovery:
                self.decisions.append(Decision("recover", sid, None))
            s.failed_recovery = True
            return
        self.decisions.append(Decision("recover", sid, node))
        s.node, s.state, s.failed_recovery = node, "started", False

    def bundle(self, sid: str) -> tuple[str, ...]:
        """The guest and every guest a positive affinity rule binds to it on the same node, sorted."""
        node = self.ss[sid].node
        members = {sid}
        frontier = [sid]
        while frontier:
            for other in self._partners(frontier.pop(), positive=True):
                if other not in members and other in self.ss and self.ss[other].node == node:
                    members.add(other)
                    frontier.append(other)
        return tuple(sorted(members))

    def candidates(self) -> list[Candidate]:
        """Every migration automatic rebalancing may consider, bundles moving as one."""
        out: list[Candidate] = []
        seen: set[str] = set()
        usable = self.usable_nodes()
        for sid in sorted(self.ss):
            s = self.ss[sid]
            if s.state != "started" or s.node not in usable or sid in seen:
                continue
            bundle = self.bundle(sid)
            seen.update(bundle)
            targets = set(usable) - {s.node}
            for member in bundle:
                for rule in self.case.node_rules:
                    if member in rule.sids:
                        if rule.strict:
                            targets &= set(rule.nodes)
                for other in self._partners(member, positive=False):
                    if other in self.ss:
                        targets -= set(self.where(other))
            out.extend(Candidate(bundle, s.node, t) for t in sorted(targets))
        return out

    def _auto_rebalance(self) -> None:
        move = self.scheduler.rebalance(self)
        if move is None:
            return
        cand, before, after = move
        self.decisions.append(Decision("rebalance", cand.sids[0], cand.target, round(before, 2), round(after, 2)))
        for sid in cand.sids:
            self.ss[sid].state, self.ss[sid].target = "migrate", cand.target

    def imbalance(self) -> float:
        """Proxmox's imbalance of the cluster now."""
        return pve_crs.imbalance(self.load())

    def run(self) -> list[Decision]:
        """Replay every batch (each followed by its rounds) and return the decisions."""
        for i, batch in enumerate(self.case.batches):
            for cmd in batch:
                self.command(cmd)
            rounds = ROUNDS_PER_BATCH
            delays = [int(c.split()[1]) for c in batch if c.startswith("delay ") and c.split()[1].isdigit()]
            if delays:
                rounds = max(1, max(delays) // ROUND_S)
            for _ in range(rounds if i < len(self.case.batches) - 1 else SETTLE_ROUNDS):
                self.round()
        return self.decisions


class Scheduler(Protocol):
    """What the HA manager asks a scheduler: a node for a guest, and a rebalancing migration."""

    name: str

    def choose(self, replay: HaReplay, sid: str, nodes: list[str]) -> str | None:
        """The node among ``nodes`` (allowed, by name) for guest ``sid``, or None."""
        ...

    def rebalance(self, replay: HaReplay) -> tuple[Candidate, float, float] | None:
        """Called every settled round: a migration to issue now (with Proxmox's imbalance before and
        after it), or None."""
        ...


@dataclass
class ProxmoxCrs:
    """``baseline:proxmox-crs``: Proxmox's scheduler (:mod:`pve_crs`) with its hold and threshold."""

    name: str = "baseline:proxmox-crs"
    hold_count: int = 0

    def choose(self, replay: HaReplay, sid: str, nodes: list[str]) -> str | None:
        """Basic mode: the node with the fewest guests; static or dynamic: the best TOPSIS score."""
        if replay.case.crs.mode == "basic":
            counts = {n: sum(n in replay.where(o) for o in replay.ss if o != sid) for n in nodes}
            return min(nodes, key=lambda n: (counts[n], n))
        return pve_crs.best_node(replay.load(exclude=sid), replay.usage(sid), nodes)

    def rebalance(self, replay: HaReplay) -> tuple[Candidate, float, float] | None:
        """Once the imbalance has stayed above the threshold for the hold duration, the best migration
        that clears the margin."""
        crs = replay.case.crs
        if not crs.auto_rebalance or crs.mode not in ("static", "dynamic"):
            return None
        load = replay.load()
        if pve_crs.imbalance(load) <= crs.threshold:
            self.hold_count = 0
            return None
        self.hold_count += 1
        if self.hold_count < crs.hold:
            return None
        usages = {sid: replay.usage(sid) for sid in replay.ss}
        choice = pve_crs.choose_rebalance(load, usages, replay.candidates(), crs.method, crs.margin)
        if choice is None or not choice.accepted:
            return None
        self.hold_count = 0
        return choice.candidate, choice.before, choice.after


def replay(path: Path, scheduler: Scheduler | None = None) -> HaReplay:
    """Replay the case at ``path`` with ``scheduler`` (default ``baseline:proxmox-crs``); the
    replay holds the decisions, the commands it could not model and the final state."""
    sim = HaReplay(load_case(path), scheduler=scheduler or ProxmoxCrs())
    sim.run()
    return sim
