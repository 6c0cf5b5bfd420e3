"""Proxmox VE's own CRS test cases, replayed through llmvirt.

A case directory (``pve-ha-manager/src/test/test-crs-*``) describes nodes, guests, their configured
and used CPU and memory, the CRS settings, affinity rules and a timeline of commands (power a node
off, shut it down, add a guest, change its usage). ``log.expect`` is Proxmox's own simulator output;
its scheduling decisions are the conformance oracle:

- ``start``: rebalance-on-start chose a node for a starting guest;
- ``recover``: a guest of a fenced node was recovered to a node (or none was found);
- ``migrate``: the HA manager moved a running guest (node shutdown with the ``migrate`` policy, or
  back to its preferred node);
- ``rebalance``: automatic rebalancing migrated a guest, with the imbalance before and after.

:class:`HaReplay` is a small round-based model of the HA manager: enough state (nodes online, in
maintenance or failed; guests started, migrating, fenced) to ask the scheduler the same questions at
the same moments. The answers come from :mod:`llmvirt.peers.pve_crs`. Commands it does not model are
reported, never guessed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmvirt.errors import UsageError
from llmvirt.peers import pve_crs
from llmvirt.peers.pve_crs import Candidate, Load, Node, Usage

MIB = 1024 * 1024
ROUNDS_PER_BATCH = 5  #: Proxmox's test harness issues each command batch every 5 HA rounds
ROUND_S = 20  #: seconds per HA round in the simulator's clock
SETTLE_ROUNDS = 25  #: rounds replayed after the last batch
#: states in which a guest is on its way somewhere; rebalancing waits for them
TRANSITIONAL = {"request_start", "request_start_balance", "migrate", "relocate", "fence"}


@dataclass(frozen=True)
class Decision:
    """One scheduling decision: its kind, the guest, the node (None: no node found) and, for
    ``rebalance``, the imbalance before and after (rounded as Proxmox logs them)."""

    kind: str
    sid: str
    node: str | None
    before: float | None = None
    after: float | None = None

    def text(self) -> str:
        """One line, for tables and reports."""
        node = self.node or "(none)"
        if self.kind == "rebalance":
            return f"rebalance {self.sid} -> {node} ({self.before:.2f} -> {self.after:.2f})"
        return f"{self.kind} {self.sid} -> {node}"


@dataclass
class NodeAffinity:
    """A node affinity rule: guests preferring (or, strict, bound to) nodes with priorities."""

    sids: set[str]
    nodes: dict[str, int]
    strict: bool


@dataclass
class ResourceAffinity:
    """A resource affinity rule: guests that must stay together (positive) or apart (negative)."""

    sids: set[str]
    positive: bool


@dataclass
class CrsSettings:
    """datacenter.cfg's CRS settings."""

    mode: str = "basic"
    rebalance_on_start: bool = False
    auto_rebalance: bool = False
    threshold: float = pve_crs.DEFAULT_THRESHOLD
    hold: int = pve_crs.DEFAULT_HOLD
    margin: float = pve_crs.DEFAULT_MARGIN
    method: str = "bruteforce"
    shutdown_policy: str = "conditional"


@dataclass
class Case:
    """One Proxmox CRS test case, parsed."""

    name: str
    nodes: dict[str, Node]
    services: dict[str, dict[str, Any]]
    static: dict[str, Usage]
    dynamic: dict[str, Usage]
    crs: CrsSettings
    node_rules: list[NodeAffinity]
    resource_rules: list[ResourceAffinity]
    manager_status: dict[str, Any]
    batches: list[list[str]]
    readme: str = ""


def _json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    text = path.read_text().strip()
    if not text:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None


def _rules(text: str) -> tuple[list[NodeAffinity], list[ResourceAffinity]]:
    """Parse ``rules_config`` (section config: ``type: id`` then indented ``key value`` lines)."""
    node_rules: list[NodeAffinity] = []
    res_rules: list[ResourceAffinity] = []
    blocks: list[tuple[str, dict[str, str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace() and ":" in line:
            blocks.append((line.split(":", 1)[0].strip(), {}))
        elif blocks:
            key, _, value = line.strip().partition(" ")
            blocks[-1][1][key] = value.strip()
    for kind, opts in blocks:
        if opts.get("disable") == "1":
            continue
        sids = {s.strip() for s in opts.get("resources", "").split(",") if s.strip()}
        if kind == "node-affinity":
            nodes: dict[str, int] = {}
            for entry in opts.get("nodes", "").split(","):
                if entry.strip():
                    name, _, prio = entry.strip().partition(":")
                    nodes[name] = int(prio) if prio else 0
            node_rules.append(NodeAffinity(sids, nodes, opts.get("strict") == "1"))
        elif kind == "resource-affinity":
            res_rules.append(ResourceAffinity(sids, opts.get("affinity") == "positive"))
    return node_rules, res_rules


def _usage(raw: dict[str, Any], cpu_key: str, mem_key: str) -> Usage:
    return Usage(float(raw.get(cpu_key, 0) or 0), float(raw.get(mem_key, 0) or 0))


def load_case(path: Path) -> Case:
    """Read a case directory; a missing or malformed file is a :class:`UsageError` naming it."""
    if not (path / "hardware_status").exists():
        raise UsageError(f"{path}: not a Proxmox CRS case (no hardware_status)")
    hw = _json(path / "hardware_status", {})
    nodes = {n: Node(n, float(d["maxcpu"]), float(d["maxmem"])) for n, d in hw.items()}
    dc = _json(path / "datacenter.cfg", {})
    raw_crs = dc.get("crs", {})
    crs = CrsSettings(
        mode=raw_crs.get("ha", "basic"),
        rebalance_on_start=bool(int(raw_crs.get("ha-rebalance-on-start", 0))),
        auto_rebalance=bool(int(raw_crs.get("ha-auto-rebalance", 0))),
        threshold=float(raw_crs.get("ha-auto-rebalance-threshold", pve_crs.DEFAULT_THRESHOLD)),
        hold=int(raw_crs.get("ha-auto-rebalance-hold-duration", pve_crs.DEFAULT_HOLD)),
        margin=float(raw_crs.get("ha-auto-rebalance-margin", pve_crs.DEFAULT_MARGIN)),
        method=raw_crs.get("ha-auto-rebalance-method", "bruteforce"),
        shutdown_policy=dc.get("ha", {}).get("shutdown_policy", "conditional"),
    )
    # Proxmox states the threshold and margin as fractions in its test data; percentages elsewhere.
    if crs.threshold > 1:
        crs.threshold /= 100
    if crs.margin > 1:
        crs.margin /= 100
    static = {s: _usage(d, "maxcpu", "maxmem") for s, d in _json(path / "static_service_stats", {}).items()}
    dynamic = {s: _usage(d, "cpu", "mem") for s, d in _json(path / "dynamic_service_stats", {}).items()}
    rules_path = path / "rules_config"
    node_rules, res_rules = _rules(rules_path.read_text()) if rules_path.exists() else ([], [])
    batches = _json(path / "cmdlist", [])
    readme = (path / "README").read_text() if (path / "README").exists() else ""
    return Case(
        path.name, nodes, _json(path / "service_config", {}), static, dynamic, crs,
        node_rules, res_rules, _json(path / "manager_status", {}), batches, readme,
    )


_DECISION_PATTERNS = [
    (re.compile(r"service (\S+): re-balance selected (?:new|current) node (\S+) for startup"), "start"),
    (re.compile(r"recover service '(\S+)' from fenced node '\S+' to node '(\S+)'"), "recover"),
    (re.compile(r"recover service '(\S+)' to previous failed and fenced node '(\S+)' again"), "recover"),
    (re.compile(r"recovering service '(\S+)' from fenced node '\S+' failed, no recovery node found"), "recover"),
    (re.compile(r"migrate service '(\S+)' to node '(\S+)' \(running\)"), "migrate"),
    (re.compile(r"relocate service '(\S+)' to node '(\S+)'$"), "migrate"),  # containers cannot live-migrate
]
_REBALANCE = re.compile(
    r"auto rebalance - migrate (\S+) to (\S+) \(expected change for imbalance from (\S+) to (\S+)\)")


def expected_decisions(path: Path) -> list[Decision]:
    """Proxmox's scheduling decisions, in order, from the case's ``log.expect``."""
    out: list[Decision] = []
    for line in (path / "log.expect").read_text().splitlines():
        m = _REBALANCE.search(line)
        if m:
            out.append(Decision("rebalance", m[1], m[2], float(m[3]), float(m[4])))
            continue
        for pattern, kind in _DECISION_PATTERNS:
            m = pattern.search(line)
            if m:
                d = Decision(kind, m[1], m[2] if m.lastindex and m.lastindex >= 2 else None)
                if not (out and out[-1] == d):  # a failed recovery is retried (and logged) every round
                    out.append(d)
                break
    return out


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
        """Apply one ``cmdlist`` command."""
        words = cmd.split()
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
            self.config[sid] = {"node": args[0], "state": args[1], "running": args[2:3] == ["1"]}
        elif verb in ("set-static-stats", "set-dynamic-stats"):
            keys = dict(zip(args[::2], args[1::2], strict=False))
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
