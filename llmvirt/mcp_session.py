"""The state behind ``llmvirt mcp``'s tools: the store, the plans shown in this session, and the
operations each tool runs (the CLI's JSON contracts), kept apart from the protocol wiring in
:mod:`llmvirt.mcp_server` so they can be read (and tested) without the SDK.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmvirt.errors import LlmvirtError
from llmvirt.model.action import Action
from llmvirt.policy.constraints import Request

STALE_S = 600.0  #: a shown plan older than this is refused (scans move on)
APPLY_INTERVAL_S = 60.0  #: at most one apply per this many seconds
#: strategy names that take a policy directory after a colon
LEARNED = ("llmvirt", "llmvirt-rl", "llmvirt-head", "llmvirt-scorer")


@dataclass
class Shown:
    """A plan ``rebalance_plan`` showed: what ``apply_plan`` may run, and nothing else."""

    plan_id: str
    created: float  #: time.monotonic() when shown
    shown_at: str  #: ISO time, for people
    plan: Any  #: llmvirt.policy.decide.Plan
    actions: list[Action] | None = None  #: pin or balloon actions (``only``); None: the plan's moves
    held: dict[str, str] = field(default_factory=dict)  #: VMs left alone, with why

    def doc(self) -> dict[str, Any]:
        """What the client was shown: the ``rebalance --json`` (or ``--only ... --json``) document."""
        if self.actions is None:
            return self.plan.as_json()
        return {"goal": self.plan.goal, "policy": self.plan.policy, "dry_run": True,
                "actions": [a.as_json() for a in self.actions], "left_alone": self.held}

    def summary(self) -> str:
        """One line for the operator's confirmation."""
        if self.actions is None:
            return "; ".join(m.describe() for m in self.plan.moves) or "no moves"
        return "; ".join(a.describe() for a in self.actions) or "no changes"


@dataclass
class LlmvirtMcp:
    """The server's state: the store, the plans shown in this session, and the apply limits."""

    db_url: str | None = None
    config_path: Path | None = None
    allow_apply: bool = False
    stale_s: float = STALE_S
    apply_interval_s: float = APPLY_INTERVAL_S
    shown: dict[str, Shown] = field(default_factory=dict)
    last_apply: float | None = None
    _engine: Any = None
    _apply_lock: threading.Lock = field(default_factory=threading.Lock)

    # --- the store ---------------------------------------------------------------------------
    def engine(self) -> Any:
        """The store, opened once (as the CLI opens it: config hosts registered)."""
        if self._engine is None:
            from llmvirt.cli.common import State

            self._engine = State(self.db_url, self.config_path).engine()
        return self._engine

    def cluster(self) -> Any:
        """The latest scan as a Cluster."""
        from llmvirt import plan_service

        return plan_service.scanned_cluster(self.engine())

    def policy(self, name: str | None) -> str | None:
        """A policy name as the planners take it, resolved inside the store and policies/ only: a version
        (``v1``), a strategy (``baseline:...``, ``llmvirt-rl-fallback[:T]``) or a directory directly
        under policies/ (optionally after ``llmvirt:``, ``llmvirt-rl:`` or ``llmvirt-head:``)."""
        from llmvirt.paths import DEFAULT_POLICY
        from llmvirt.store import policy_versions as versions

        if name is None:
            return None
        if re.fullmatch(r"v\d+", name):
            return str(versions.get(self.engine(), name)["path"])
        if name.startswith(("baseline:", "llmvirt-rl-fallback")) or name in LEARNED:
            return name
        prefix, _, rest = name.rpartition(":")
        if prefix not in ("", *LEARNED):
            raise LlmvirtError(f"unknown policy {name!r}: use a version (v1), a name under policies/, or a strategy")
        path = DEFAULT_POLICY.parent / rest
        if not path.is_dir():
            raise LlmvirtError(f"unknown policy {rest!r}: not a version or a directory under policies/")
        return f"{prefix}:{path}" if prefix else str(path)

    # --- tools ---------------------------------------------------------------------------------
    def status(self, host: str | None, limit: int) -> dict[str, Any]:
        """The ``status --json`` document, at most ``limit`` hosts and ``limit`` VMs per host."""
        from llmvirt import status_view
        from llmvirt.store import snapshots

        views = snapshots.latest(self.engine(), [host] if host else None)
        if host and not views:
            raise LlmvirtError(f"unknown host {host!r}: see the status tool without a host")
        doc = status_view.status_json(views[:limit])
        for h in doc["hosts"]:
            vms = h.get("vms", [])
            if len(vms) > limit:
                h["vms"], h["vms_omitted"] = vms[:limit], len(vms) - limit
        doc["hosts_omitted"] = max(0, len(views) - limit)
        return doc

    def vm_history(self, vm: str, limit: int) -> dict[str, Any]:
        """One VM's last ``limit`` samples: time, host CPU use as a share of its vCPUs, memory used."""
        from llmvirt.store import snapshots

        found = [(h, v) for h in self.cluster().hosts for v in h.vms if v.name == vm]
        if not found:
            raise LlmvirtError(f"unknown VM {vm!r}: not in the latest scan")
        host, v = found[0]
        samples = snapshots.one_vm_usage(self.engine(), v.uuid, limit + 1)
        rows = []
        for (t0, _, c0), (t1, mem, c1) in zip(samples, samples[1:], strict=False):
            util = (c1 - c0) / (t1 - t0) / max(1, v.vcpus) if t1 > t0 else None
            rows.append({"at": datetime.fromtimestamp(t1, UTC).isoformat(), "cpu_util": util, "memory_used_mib": mem})
        return {"vm": vm, "uuid": v.uuid, "host": host.name, "vcpus": v.vcpus, "memory_mib": v.memory_mib,
                "samples": rows[-limit:]}

    def place(self, req: Request, policy: str | None, limit: int, expected_cpu: float | None = None) -> dict[str, Any]:
        """The ``place --json`` document (ranked hosts with reasons, excluded ones with the rule); ``expected_cpu``
        None: what a trained scorer was trained with, else 0.5 (as ``place``)."""
        from dataclasses import replace

        from llmvirt import config, plan_service
        from llmvirt.policy import decide

        chosen = self.policy(policy)
        spec, _ = plan_service.policy_spec(self.engine(), chosen)
        scorer, expected_cpu = plan_service.placement_scorer(spec, chosen is not None, expected_cpu)
        ctx = decide.Context(config.load_limits(self.config_path), config.load_groups(self.config_path),
                             history=plan_service.placement_history(self.engine(), scorer))
        req = replace(req, expected_cpu=expected_cpu)
        result = decide.place(self.cluster(), req, scorer, ctx, top=limit)
        doc = result.as_json()
        doc["ranked"] = doc["ranked"][:limit]
        return doc

    def rebalance_plan(self, goal: str, policy: str | None, max_migrations: int,
                       only: str | None = None) -> dict[str, Any]:
        """A dry-run plan (the ``rebalance --json`` document, or with ``only`` the ``rebalance --only pin|balloon
        --json`` one) with the id ``apply_plan`` takes."""
        from llmvirt import config, plan_service
        from llmvirt.policy import decide

        actions, held = None, {}
        if only is None:
            plan = plan_service.rebalance_plan(self.engine(), self.config_path, self.cluster(), goal,
                                               self.policy(policy), max_migrations)
        else:
            limits = config.load_limits(self.config_path)
            actions, held, label = plan_service.tuning_actions(self.engine(), self.cluster(), only,
                                                               self.policy(policy), limits)
            plan = decide.Plan(goal=only, policy=label, before={}, after={})
        plan_id = f"p-{secrets.token_hex(6)}"
        now = datetime.now(UTC).isoformat()
        shown = Shown(plan_id, time.monotonic(), now, plan, actions, held)
        self.shown[plan_id] = shown
        while len(self.shown) > 50:  # the oldest shown plans are forgotten
            self.shown.pop(next(iter(self.shown)))
        return {"plan_id": plan_id, "shown_at": now, "expires_in_s": self.stale_s,
                "apply": "apply_plan with this plan_id" if self.allow_apply else
                "this server is read-only (started without --allow-apply)", **shown.doc()}

    def journal_plans(self, limit: int, offset: int = 0) -> dict[str, Any]:
        """Recent applied plans, newest first (``plans list --json``), a page of them."""
        from llmvirt.store import journal

        return {"plans": journal.plans(self.engine(), offset + limit)[offset:], "offset": offset}

    def journal_plan(self, plan_id: int) -> dict[str, Any]:
        """One applied plan with its actions and their events (``plans show --json``)."""
        from llmvirt.store import journal

        doc = journal.plan(self.engine(), plan_id)
        if doc is None:
            raise LlmvirtError(f"no applied plan {plan_id} (see recent_plans)")
        return doc

    def actions(self, limit: int, offset: int = 0) -> dict[str, Any]:
        """Recent actions, newest first (``actions --json``), a page of them."""
        from llmvirt.store import journal

        return {"actions": journal.all_actions(self.engine(), offset + limit)[offset:], "offset": offset}

    def outcomes(self, limit: int, offset: int = 0) -> dict[str, Any]:
        """Executed actions with their measured outcome (``outcomes --json``), a page of them."""
        from llmvirt.measure import outcomes

        return {"outcomes": outcomes.listing(self.engine(), offset + limit)[offset:], "offset": offset}

    def policies(self) -> dict[str, Any]:
        """Policy versions, the active one marked, with their evaluation metrics."""
        from llmvirt.store import policy_versions as versions

        return {"versions": versions.list_versions(self.engine())}

    def doctor(self, timeout: float) -> dict[str, Any]:
        """The ``doctor --json`` document: store, hosts and cluster checks."""
        from llmvirt import doctor as doc
        from llmvirt.config import load_migration_settings
        from llmvirt.store import database

        migrate_uri = load_migration_settings(self.config_path).migrate_uri  # as `llmvirt doctor` reads it
        checks = doc.all_checks(self.engine, database.sqlite_path(database.resolve_url(self.db_url)), timeout,
                                migrate_uri)
        return doc.as_json(checks)

    # --- acting ------------------------------------------------------------------------------
    def take_shown(self, plan_id: str) -> Shown:
        """The shown plan ``plan_id`` if it may be applied now; else one clear error, nothing done."""
        shown = self.shown.get(plan_id)
        if shown is None:
            raise LlmvirtError(f"unknown plan id {plan_id!r}: call rebalance_plan first and apply the id it shows")
        age = time.monotonic() - shown.created
        if age > self.stale_s:
            raise LlmvirtError(f"plan {plan_id} was shown {age:.0f} s ago, past the {self.stale_s:.0f} s limit: "
                               "call rebalance_plan again")
        if self.last_apply is not None and time.monotonic() - self.last_apply < self.apply_interval_s:
            wait = self.apply_interval_s - (time.monotonic() - self.last_apply)
            raise LlmvirtError(f"rate limit: one apply per {self.apply_interval_s:.0f} s; try again in {wait:.0f} s")
        return shown

    def apply_shown(self, shown: Shown, caller: dict[str, Any]) -> dict[str, Any]:
        """Run a shown plan through the executor (hysteresis, guardrails, lock, journal)."""
        from llmvirt import config, plan_service
        from llmvirt.act import executor
        from llmvirt.store import journal

        with self._apply_lock:
            self.shown.pop(shown.plan_id, None)  # a plan is applied once
            self.last_apply = time.monotonic()
            plan = shown.plan
            if shown.actions is None:
                actions, held = plan_service.migrate_actions(self.engine(), self.config_path, plan)
            else:  # pin or balloon changes, exactly as shown
                actions, held = shown.actions, shown.held
            notes: list[str] = []
            if not actions:
                return {"plan_id": shown.plan_id, "journal_plan_id": None, "held": held, "requested_by": caller,
                        "outcomes": {"done": 0, "skipped": 0, "failed": 0}, "notes": ["nothing to apply"]}
            body = {**shown.doc(), "dry_run": False, "requested_by": caller, "shown_plan_id": shown.plan_id,
                    "shown_at": shown.shown_at}
            journal_id, counts = executor.apply(
                self.engine(), self.db_url, journal.NewPlan(plan.goal, plan.policy, body, actions),
                config.load_guardrails(self.config_path), say=notes.append)
            return {"plan_id": shown.plan_id, "journal_plan_id": journal_id, "held": held, "requested_by": caller,
                    "outcomes": counts, "notes": notes}


def caller_identity(ctx: Any) -> dict[str, Any]:
    """Who asked: the MCP client's name and version where it said, and this server's user and process."""
    info = None
    try:
        params = ctx.session.client_params
        info = params.client_info if params is not None else None
    except (AttributeError, RuntimeError):
        info = None
    return {"via": "mcp", "client": getattr(info, "name", None) or "unknown client",
            "client_version": getattr(info, "version", None), "user": getpass.getuser(), "pid": os.getpid()}
