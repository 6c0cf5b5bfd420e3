"""Plans as every front end makes them: the CLI (``place``, ``rebalance``) and the MCP server.

One path from the store to a plan and from a plan to the executor's actions, so a plan an assistant
shows is the plan ``llmvirt rebalance`` would show, and applying it goes through the same hysteresis,
guardrails, lock and journal.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from llmvirt import config
from llmvirt.errors import UsageError
from llmvirt.model.action import Action
from llmvirt.model.cluster import Cluster

if TYPE_CHECKING:
    from llmvirt.policy import decide

HISTORY_SCANS = 31  #: scans of CPU history (30 intervals, CloudSim's history length) for the adaptive detectors
SCAN_WINDOW_SCANS = 13  #: scans 5 minutes apart for the scan recovery's hour (12 samples: each needs the one before)
PERSIST_SCANS = 3  #: a hot host must have been hot over this many scan intervals before load is moved off it


def policy_spec(engine: Engine, policy: str | None) -> tuple[str | None, str]:
    """(what to load, version prefix for plans): ``policy`` as given, else the active version."""
    if policy is not None:
        return policy, ""
    from llmvirt.store import policy_versions as versions

    path, name = versions.active_spec(engine)
    return path, f"{name}:"


def placement_spec(spec: str | None, given: bool) -> str | None:
    """What ``place`` loads: ``spec`` when the operator gave it; else what the active policy directory's
    ``strategies.json`` names for ``place`` (the tuned placement baseline where no learned scorer beat it on
    held-back fleets: policies/README.md), else that directory's own scorer."""
    import json

    from llmvirt.paths import policy_dir

    if given or (spec or "").startswith("baseline:"):
        return spec
    path = policy_dir(spec) / "strategies.json"
    if not path.is_file():
        return spec
    try:
        entry = json.loads(path.read_text()).get("place")
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable: {exc}") from None
    return str(entry["strategy"]) if entry else spec


def placement_scorer(spec: str | None, given: bool, expected_cpu: float | None) -> tuple[decide.Scorer, float]:
    """``place``'s scorer (:func:`placement_spec`) and the new VM's expected CPU use: ``expected_cpu``, else the
    prior a trained scorer was trained with, else 0.5."""
    from llmvirt.policy import decide

    scorer = decide.load_scorer(placement_spec(spec, given))
    if expected_cpu is None:
        expected_cpu = float(getattr(scorer, "meta", {}).get("expected_cpu", 0.5))
    return scorer, expected_cpu


def placement_history(engine: Engine | None, scorer: object) -> dict[str, list[float]]:
    """The VMs' recorded CPU use ``place`` reads for the hosts' recent peaks (VM uuid -> use, oldest first): only
    for a scorer that reads them, and only from a store (``engine`` None: a snapshot file has no history)."""
    if engine is None or not getattr(scorer, "reads_peaks", False):
        return {}
    from llmvirt.model.usage import PEAK_SCANS
    from llmvirt.store import snapshots

    return snapshots.vm_cpu_history(engine, PEAK_SCANS + 1)


def scanned_cluster(engine: Engine) -> Cluster:
    """The latest scan's hosts that were read at least once; a clear error when there are none."""
    from llmvirt.store import snapshots

    cluster = snapshots.latest_cluster(engine)
    if not any(h.cpus for h in cluster.hosts):
        raise UsageError("no scanned hosts: run `llmvirt hosts add` and `llmvirt scan` first")
    cluster.hosts = [h for h in cluster.hosts if h.cpus]
    return cluster


def rebalance_plan(engine: Engine | None, config_path: Path | None, cluster: Cluster, goal: str,
                   policy: str | None, max_migrations: int) -> decide.Plan:
    """The dry-run plan of ``policy`` (default: the active version) for ``goal`` on ``cluster``.

    ``engine`` None plans from a file (no store: no active version, no CPU history)."""
    from llmvirt.policy import decide
    from llmvirt.store import snapshots
    from llmvirt.strategies import registry

    limits, groups = config.load_limits(config_path), config.load_groups(config_path)
    pins = config.load_host_pins(config_path)
    spec, version = (policy, "") if engine is None else policy_spec(engine, policy)
    strategy = registry.resolve(spec, goal)
    history = (snapshots.vm_cpu_history(engine, HISTORY_SCANS)
               if engine is not None and getattr(strategy, "needs_history", False) else {})
    scans = (snapshots.vm_scan_history(engine, SCAN_WINDOW_SCANS)
             if engine is not None and getattr(strategy, "needs_scan_history", False) else {})
    plan = strategy.plan(cluster, goal, decide.Context(limits, groups, pins, config.load_thresholds(config_path),
                                                       max_migrations, history, scan_history=scans))
    plan.policy = version + plan.policy
    return plan


def persistent_moves(engine: Engine, config_path: Path | None,
                     plan: decide.Plan) -> tuple[list[Action], dict[str, str]]:
    """Hysteresis: keep moves off hosts that were hot over the last PERSIST_SCANS intervals (drains always)."""
    from llmvirt.store import snapshots

    keep, held = [], {}
    hot = config.load_thresholds(config_path).hot
    for m in plan.moves:
        if m.reason.startswith("drain") or plan.goal != "balance":
            keep.append(m)
            continue
        hist = snapshots.host_load_history(engine, m.src, PERSIST_SCANS)
        if len(hist) >= PERSIST_SCANS and all(x > hot for x in hist):
            keep.append(m)
        else:
            held[m.vm] = (f"{m.src} not hot over the last {PERSIST_SCANS} scan intervals "
                          f"({', '.join(f'{100 * x:.0f} %' for x in hist) or 'no history'}): waiting")
    return keep, held


def migrate_actions(engine: Engine, config_path: Path | None,
                    plan: decide.Plan) -> tuple[list[Action], dict[str, str]]:
    """The executor's actions for a plan's moves (after hysteresis, each with the VM's UUID of the latest
    scan), and the moves held back with why."""
    cluster = scanned_cluster(engine)
    uuids = {v.name: v.uuid for h in cluster.hosts for v in h.vms}
    moves, held = persistent_moves(engine, config_path, plan)
    return [replace(m, uuid=uuids.get(m.vm)) for m in moves], held


#: field baselines for ``--only balloon``, by their ``bench --scenario memory`` names
BALLOON_BASELINES = ("mom", "proxmox")


def field_tuning(cluster: Cluster, only: str, policy: str,
                 reserved_cpus: int) -> tuple[list[Action], dict[str, str], str] | None:
    """A field baseline's pin or balloon actions, by the name ``bench`` gives it (``baseline:`` optional):
    ``mom[:P:G]``, ``proxmox[:T:M]`` and ``tuned:mom|proxmox`` (balloon; policies/tuned_memory.json),
    ``nova[:FRACTION]`` (pin), and ``rules`` (MOM's balloon rules, or
    one-to-one NUMA pinning of unpinned VMs, which no scenario benchmarks). None for a policy with heads."""
    from llmvirt.policy import tuning
    from llmvirt.strategies.tuned import TUNED_MEMORY_FILE, tuned_families, tuned_name

    base = policy.removeprefix("baseline:")
    label = base
    family = base.removeprefix("tuned:")
    if only == "balloon" and family != base and family in tuned_families(TUNED_MEMORY_FILE):
        base = tuned_name(family, TUNED_MEMORY_FILE)
        label = f"{label} ({base})"
    name, _, arg = base.partition(":")
    if only == "balloon" and name in (*BALLOON_BASELINES, "rules"):
        try:
            return tuning.plan_balloons(cluster, rule="mom" if name == "rules" else base), {}, label
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if only == "pin" and name == "rules":
        plans, held = tuning.plan_pinning(cluster, reserved_cpus)
        return plans, held, base
    if only == "pin" and name == "nova":
        try:
            fraction = float(arg) if arg else 0.5
        except ValueError:
            fraction = -1.0
        if not 0 < fraction <= 1:
            raise UsageError(f"{policy!r}: use nova[:FRACTION] with 0 < FRACTION <= 1 (the dedicated share)")
        plans, held = tuning.plan_nova_pinning(cluster, fraction, reserved_cpus)
        return plans, held, base
    if policy.startswith("baseline:"):
        raise UsageError(f"--only {only} takes a policy with heads or " + (
            "baseline:mom[:P:G]|proxmox[:T:M]|tuned:mom|tuned:proxmox|rules" if only == "balloon"
            else "baseline:nova[:FRACTION]|rules"))
    return None


def tuning_actions(engine: Engine, cluster: Cluster, only: str, policy: str | None,
                   limits: Any) -> tuple[list[Action], dict[str, str], str]:
    """Pin or balloon actions: from the policy's head (default: the active version), or a field baseline by
    the name ``bench`` gives it (:func:`field_tuning`). Returns (actions, VMs left alone with why, policy
    label)."""
    from llmvirt.paths import policy_dir
    from llmvirt.policy import balloon_feedback, balloon_head, pin_head

    if only not in ("pin", "balloon"):
        raise UsageError("only pin or balloon")
    if policy and (field := field_tuning(cluster, only, policy, limits.reserved_cpus)) is not None:
        return field
    from llmvirt.store import snapshots

    spec, version = policy_spec(engine, policy)
    path = policy_dir(spec)
    history = snapshots.vm_usage_history(engine, balloon_head.DAY)
    if only == "pin":
        pin_plans, held = pin_head.plan(cluster, history, pin_head.load(path), limits.reserved_cpus)
        return pin_plans, held, f"{version}{path.name}/pin"
    unchanged: dict[str, str] = {}
    planned = balloon_head.plan(cluster, history, balloon_head.load(path), unchanged=unchanged,
                                pressure=snapshots.vm_pressure_history(engine, balloon_feedback.WINDOW))
    return planned, unchanged, f"{version}{path.name}/balloon"
