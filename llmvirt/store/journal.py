"""The journal: every applied plan and action, with each state change and its time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import OperationalError

from llmvirt.errors import StoreError
from llmvirt.model.action import Action
from llmvirt.store.pending_work import OPEN
from llmvirt.store.schema import ActionEventRow, ActionRow, PlanRow


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Entry:
    """An action as the journal holds it: the planned :class:`Action` and where it stands."""

    id: int  #: action id
    plan_id: int  #: plan id
    seq: int  #: order in the plan
    action: Action  #: what is to be done
    status: str  #: pending, running, done, skipped, failed
    reason: str | None = None  #: why skipped or failed (or what was done)

    def as_json(self) -> dict[str, Any]:
        """The journal's JSON contract for one action (``plan --json``)."""
        return {"id": self.id, "plan_id": self.plan_id, "seq": self.seq, **self.action.row(), "status": self.status,
                "reason": self.reason}


@dataclass
class NewPlan:
    """A plan about to be applied: what it is for, who made it, its document, and its actions in order."""

    goal: str  #: balance, consolidate, pin, balloon
    policy: str  #: the policy (and version) that made it
    body: dict[str, Any]  #: the plan's JSON document as shown
    actions: list[Action]  #: what to do, in order


def _guard(fn):  # noqa: ANN001, ANN202
    def wrapped(*a: Any, **k: Any) -> Any:
        try:
            return fn(*a, **k)
        except OperationalError as exc:
            raise StoreError(f"cannot write the journal: {exc.orig}") from None

    return wrapped


@_guard
def create_plan(engine: Engine, plan: NewPlan) -> int:
    """Record a plan and its actions (all pending) in one transaction; returns the plan id."""
    with engine.begin() as conn:
        plan_id = conn.execute(insert(PlanRow).values(created_at=_now(), goal=plan.goal, policy=plan.policy,
                                                      status="applying", body=plan.body)).inserted_primary_key[0]
        for seq, a in enumerate(plan.actions):
            aid = conn.execute(insert(ActionRow).values(plan_id=plan_id, seq=seq, status="pending",
                                                     **a.row())
                               ).inserted_primary_key[0]
            conn.execute(insert(ActionEventRow).values(action_id=aid, at=_now(), status="pending", detail=None))
        return int(plan_id)


@_guard
def set_status(engine: Engine, action_id: int, status: str, detail: str | None = None,
               result: dict[str, float] | None = None) -> None:
    """Move an action to ``status`` and record the event (and what the action measured, if anything)."""
    now = _now()
    values: dict[str, Any] = {"status": status}
    if status == "running":
        values["started_at"] = now
    if status in ("done", "skipped", "failed"):
        values["finished_at"] = now
        values["reason"] = detail
    if result:
        values["result"] = result
    with engine.begin() as conn:
        conn.execute(update(ActionRow).where(ActionRow.id == action_id).values(**values))
        conn.execute(insert(ActionEventRow).values(action_id=action_id, at=now, status=status, detail=detail))


@_guard
def finish_plan(engine: Engine, plan_id: int) -> str:
    """Close a plan: done, partial (some skipped/failed) or failed (nothing done)."""
    with engine.begin() as conn:
        statuses = [s for (s,) in conn.execute(select(ActionRow.status).where(ActionRow.plan_id == plan_id))]
        if any(s in OPEN for s in statuses):
            status = "applying"
        elif all(s == "done" for s in statuses):
            status = "done"
        elif any(s == "done" for s in statuses):
            status = "partial"
        else:
            status = "failed" if statuses else "done"
        conn.execute(update(PlanRow).where(PlanRow.id == plan_id).values(status=status))
        return status


def _entry(r: ActionRow) -> Entry:
    action = Action.from_params(r.kind, r.vm, r.src or "", r.dst, r.params or {}, r.vm_uuid)
    return Entry(r.id, r.plan_id, r.seq, action, r.status, r.reason)


def open_actions(engine: Engine) -> list[Entry]:
    """Actions left pending or running by an earlier run (a crash), oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(ActionRow).where(ActionRow.status.in_(OPEN)).order_by(ActionRow.id)).all()
        return [_entry(ActionRow(**r._mapping)) for r in rows]


def plan_actions(engine: Engine, plan_id: int) -> list[Entry]:
    """The actions of one plan, in order."""
    with engine.connect() as conn:
        rows = conn.execute(select(ActionRow).where(ActionRow.plan_id == plan_id).order_by(ActionRow.seq)).all()
        return [_entry(ActionRow(**r._mapping)) for r in rows]


def plans(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    """Recent plans, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(PlanRow).order_by(PlanRow.id.desc()).limit(limit)).all()
        return [{"id": r.id, "created_at": r.created_at.isoformat() + "Z", "goal": r.goal, "policy": r.policy,
                 "status": r.status} for r in rows]


def plan(engine: Engine, plan_id: int) -> dict[str, Any] | None:
    """One plan with its actions and their events."""
    with engine.connect() as conn:
        p = conn.execute(select(PlanRow).where(PlanRow.id == plan_id)).first()
        if p is None:
            return None
        acts = []
        for a in plan_actions(engine, plan_id):
            ev = conn.execute(select(ActionEventRow.at, ActionEventRow.status, ActionEventRow.detail)
                              .where(ActionEventRow.action_id == a.id).order_by(ActionEventRow.id)).all()
            acts.append({**a.as_json(), "events": [{"at": t.isoformat() + "Z", "status": s, "detail": d}
                                                  for t, s, d in ev]})
        return {"id": p.id, "created_at": p.created_at.isoformat() + "Z", "goal": p.goal, "policy": p.policy,
                "status": p.status, "plan": p.body, "actions": acts}


def all_actions(engine: Engine, limit: int = 200) -> list[dict[str, Any]]:
    """Recent actions, newest first (``llmvirt actions --json``)."""
    with engine.connect() as conn:
        rows = conn.execute(select(ActionRow).order_by(ActionRow.id.desc()).limit(limit)).all()
        return [{k: (v.isoformat() + "Z" if isinstance(v, datetime) else v) for k, v in r._mapping.items()}
                for r in rows]
