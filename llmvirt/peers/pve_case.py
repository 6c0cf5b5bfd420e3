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

This module reads a case (its settings, rules, usage and the decisions ``log.expect`` records); the
replay of its timeline is :mod:`llmvirt.peers.pve_replay`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmvirt.errors import UsageError
from llmvirt.peers import pve_crs
from llmvirt.peers.pve_crs import Node, Usage

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


def _rules(path: Path) -> tuple[list[NodeAffinity], list[ResourceAffinity]]:
    """Parse ``rules_config`` (section config: ``type: id`` then indented ``key value`` lines). Rule types other
    than node and resource affinity are not read; a node priority that is not a whole number is a UsageError."""
    text = path.read_text()
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
                    if prio and not prio.lstrip("-").isdigit():
                        raise UsageError(f"{path}: node-affinity priority {entry.strip()!r} is not a whole number")
                    nodes[name] = int(prio) if prio else 0
            node_rules.append(NodeAffinity(sids, nodes, opts.get("strict") == "1"))
        elif kind == "resource-affinity":
            res_rules.append(ResourceAffinity(sids, opts.get("affinity") == "positive"))
    return node_rules, res_rules


def _stats(path: Path, cpu_key: str, mem_key: str) -> dict[str, Usage]:
    """A ``*_service_stats`` file: each guest's CPU and memory (absent: 0); a non-number is a UsageError."""
    raw = _json(path, {})
    try:
        return {s: Usage(float(d.get(cpu_key, 0) or 0), float(d.get(mem_key, 0) or 0)) for s, d in raw.items()}
    except (AttributeError, TypeError, ValueError):
        raise UsageError(f"{path}: each guest needs numeric {cpu_key} and {mem_key}") from None


def _setting(path: Path, raw: dict[str, Any], key: str, default: float, kind: type[int] | type[float]) -> Any:
    """One numeric CRS setting, or its default when absent; a value of another kind is a UsageError naming it."""
    try:
        return kind(raw.get(key, default))
    except (TypeError, ValueError):
        raise UsageError(f"{path}: crs {key} {raw.get(key)!r} is not a number") from None


def _crs_settings(path: Path) -> CrsSettings:
    """datacenter.cfg's CRS and HA settings. Proxmox states the threshold and margin as fractions in its test
    data and as percentages elsewhere: both are read."""
    dc = _json(path, {})
    raw = dc.get("crs", {}) if isinstance(dc, dict) else None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: must be a JSON object with a 'crs' object")
    threshold = _setting(path, raw, "ha-auto-rebalance-threshold", pve_crs.DEFAULT_THRESHOLD, float)
    margin = _setting(path, raw, "ha-auto-rebalance-margin", pve_crs.DEFAULT_MARGIN, float)
    return CrsSettings(
        mode=str(raw.get("ha", "basic")),
        rebalance_on_start=bool(_setting(path, raw, "ha-rebalance-on-start", 0, int)),
        auto_rebalance=bool(_setting(path, raw, "ha-auto-rebalance", 0, int)),
        threshold=threshold / 100 if threshold > 1 else threshold,
        hold=_setting(path, raw, "ha-auto-rebalance-hold-duration", pve_crs.DEFAULT_HOLD, int),
        margin=margin / 100 if margin > 1 else margin,
        method=str(raw.get("ha-auto-rebalance-method", "bruteforce")),
        shutdown_policy=str(ha.get("shutdown_policy", "conditional")) if isinstance(ha := dc.get("ha"), dict)
        else "conditional",
    )


def load_case(path: Path) -> Case:
    """Read a case directory; a missing or malformed file is a :class:`UsageError` naming it."""
    if not (path / "hardware_status").exists():
        raise UsageError(f"{path}: not a Proxmox CRS case (no hardware_status)")
    hw = _json(path / "hardware_status", {})
    try:
        nodes = {n: Node(n, float(d["maxcpu"]), float(d["maxmem"])) for n, d in hw.items()}
    except (KeyError, TypeError, ValueError, AttributeError):  # Proxmox: "did not get static node usage"
        raise UsageError(f"{path}/hardware_status: every node needs a numeric maxcpu and maxmem") from None
    crs = _crs_settings(path / "datacenter.cfg")
    static = _stats(path / "static_service_stats", "maxcpu", "maxmem")
    dynamic = _stats(path / "dynamic_service_stats", "cpu", "mem")
    rules_path = path / "rules_config"
    node_rules, res_rules = _rules(rules_path) if rules_path.exists() else ([], [])
    batches = _json(path / "cmdlist", [])
    if not (isinstance(batches, list) and all(isinstance(b, list) and all(isinstance(c, str) for c in b)
                                              for b in batches)):
        raise UsageError(f"{path}/cmdlist: must be a list of command lists (strings)")
    readme = (path / "README").read_text() if (path / "README").exists() else ""
    services = _json(path / "service_config", {})
    if not isinstance(services, dict):
        raise UsageError(f"{path}/service_config: must be a JSON object of guests")
    for sid, conf in services.items():
        where = conf.get("node") if isinstance(conf, dict) else None
        if where not in nodes:
            raise UsageError(f"{path}/service_config: {sid} is on node {where!r}, which hardware_status does not list")
    return Case(
        path.name, nodes, services, static, dynamic, crs,
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
    """Proxmox's scheduling decisions, in order, from the case's ``log.expect`` (without it a case has no oracle:
    a UsageError)."""
    if not (path / "log.expect").is_file():
        raise UsageError(f"{path}: no log.expect, so there are no Proxmox decisions to compare with")
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
