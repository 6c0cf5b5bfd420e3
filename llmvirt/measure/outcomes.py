"""Outcomes: what each executed action came to, scored with the simulator's reward.

An action's outcome is measured from the scans around it: the load of its source and destination
hosts in the last scan pair before it started and in the scans within ``window_s`` after it
finished; host overload (CPU demand above capacity) and guest memory-pressure time in that window;
the migration's duration and downtime from libvirt's completed-job statistics; success or failure.
:func:`score_due` fills in every outcome whose window has passed (``llmvirt score``, and the end of
each ``llmvirt scan``). The reward is :func:`llmvirt.model.score.reward` over a :class:`Score`, the same
code that scores a simulated run.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from llmvirt.config import OUTCOME_WINDOW_S
from llmvirt.model.pressure import PRESSURE_USABLE
from llmvirt.model.score import Score, reward
from llmvirt.store.schema import ActionRow, HostRow, HostSnapshotRow, OutcomeRow, PlanRow, VmSampleRow
from llmvirt.store.snapshots import pair_load

WINDOW_S = OUTCOME_WINDOW_S  #: default: outcomes are measured over the 15 minutes after an action (3 cron intervals)
OVERLOAD = 1.0  #: a host is overloaded when its VMs' CPU demand exceeds its CPUs


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def host_loads(s: Session, host: str, start: datetime, end: datetime,
               arrived: dict[str, datetime] | None = None) -> list[tuple[datetime, float]]:
    """CPU use of ``host`` (fraction of its CPUs) for each pair of consecutive good snapshots whose
    later one falls in (start, end]. ``arrived``: VM uuid -> when it started arriving on this host (a
    migration's start), so a pair that straddles the move counts the VM at its rate since then."""
    hid = s.scalar(select(HostRow.id).where(HostRow.name == host))
    if hid is None:
        return []
    rows = s.execute(select(HostSnapshotRow.id, HostSnapshotRow.taken_at, HostSnapshotRow.cpus)
                     .where(HostSnapshotRow.host_id == hid, HostSnapshotRow.ok.is_(True),
                            HostSnapshotRow.taken_at <= end)
                     .order_by(HostSnapshotRow.taken_at.desc()).limit(200)).all()
    rows = rows[::-1]
    out = []
    for (old_id, old_t, _), (new_id, new_t, cpus) in zip(rows, rows[1:], strict=False):
        if new_t > start:
            here = {u: (new_t - t).total_seconds() for u, t in (arrived or {}).items()}
            out.append((new_t, pair_load(s, old_id, new_id, cpus, (new_t - old_t).total_seconds(), here)))
    return out


def _before(s: Session, host: str | None, at: datetime) -> float | None:
    if host is None:
        return None
    loads = host_loads(s, host, at - timedelta(days=1), at)
    return loads[-1][1] if loads else None


def _pressure_samples(s: Session, uuid: str | None, start: datetime, end: datetime) -> tuple[int, int]:
    """(samples of the VM under memory pressure, samples) in (start, end]."""
    if uuid is None:
        return 0, 0
    rows = s.execute(select(VmSampleRow.usable_mib, VmSampleRow.balloon_current_mib)
                     .join(HostSnapshotRow, HostSnapshotRow.id == VmSampleRow.snapshot_id)
                     .where(VmSampleRow.uuid == uuid, VmSampleRow.state == "running",
                            HostSnapshotRow.taken_at > start, HostSnapshotRow.taken_at <= end)).all()
    under = sum(1 for usable, cur in rows if usable is not None and cur and usable < PRESSURE_USABLE * cur)
    return under, len(rows)


def measure(s: Session, a: ActionRow, window_s: float) -> tuple[Score, dict[str, Any], str]:
    """The score of one finished action, its detail, and the goal it is weighed by."""
    assert a.finished_at is not None
    start, end = a.finished_at, a.finished_at + timedelta(seconds=window_s)
    hosts = [h for h in (a.src, a.dst) if h]
    before = {h: _before(s, h, a.started_at or a.finished_at) for h in hosts}
    arrived = ({a.vm_uuid: a.started_at or a.finished_at} if a.kind == "migrate" and a.status == "done"
               and a.vm_uuid else {})
    after = {h: host_loads(s, h, start, end, arrived if h == a.dst else None) for h in hosts}
    samples = max((len(v) for v in after.values()), default=0)
    step_h = window_s / 3600 / max(samples, 1)
    overload_h = sum(step_h for v in after.values() for _, load in v if load > OVERLOAD)
    under, seen = _pressure_samples(s, a.vm_uuid, start, end)
    done = a.status == "done"
    params, result = a.params or {}, a.result or {}
    score = Score(overload_h=overload_h, pressure_h=under * window_s / 3600 / max(seen, 1))
    if a.kind == "migrate" and done:
        mem = s.scalar(select(VmSampleRow.memory_mib).where(VmSampleRow.uuid == a.vm_uuid)
                       .order_by(VmSampleRow.id.desc()).limit(1))
        score.migrations, score.gib_migrated = 1.0, float(mem or 0) / 1024
    if a.kind == "balloon" and done:
        cap = s.scalar(select(VmSampleRow.balloon_maximum_mib).where(VmSampleRow.uuid == a.vm_uuid)
                       .order_by(VmSampleRow.id.desc()).limit(1))
        if cap:
            score.reclaimed_gib_h = max(0.0, cap - float(params.get("target_mib", cap))) / 1024 * window_s / 3600
    detail = {"before": before, "after": {h: (sum(x for _, x in v) / len(v) if v else None) for h, v in after.items()},
              "after_scans": samples, "score": asdict(score), "job": result}
    return score, detail, "memory" if a.kind == "balloon" else "balance"


def score_due(engine: Engine, window_s: float = WINDOW_S, now: datetime | None = None) -> int:
    """Score every finished action whose window has passed and that has no outcome yet; returns how many."""
    now = now or _now()
    with Session(engine) as s:
        scored = select(OutcomeRow.action_id)
        due = s.scalars(select(ActionRow).where(ActionRow.status.in_(("done", "failed")),
                                                ActionRow.finished_at.is_not(None),
                                                ActionRow.finished_at <= now - timedelta(seconds=window_s),
                                                ActionRow.id.not_in(scored))).all()
        for a in due:
            score, detail, goal = measure(s, a, window_s)
            s.execute(insert(OutcomeRow).values(action_id=a.id, scored_at=now, window_s=window_s,
                                                success=a.status == "done", reward=reward(score, goal), goal=goal,
                                                detail=detail))
        s.commit()
        return len(due)


def listing(engine: Engine, limit: int = 200) -> list[dict[str, Any]]:
    """Executed actions, newest first, with their outcome (``scored``) or ``pending``."""
    with Session(engine) as s:
        q = (select(ActionRow, OutcomeRow, PlanRow.policy)
             .join(PlanRow, PlanRow.id == ActionRow.plan_id)
             .outerjoin(OutcomeRow, OutcomeRow.action_id == ActionRow.id)
             .where(ActionRow.status.in_(("done", "failed")))
             .order_by(ActionRow.id.desc()).limit(limit))
        out = []
        for a, o, policy in s.execute(q).all():
            row: dict[str, Any] = {"action_id": a.id, "plan_id": a.plan_id, "policy": policy, "kind": a.kind,
                                   "vm": a.vm, "src": a.src, "dst": a.dst, "status": a.status,
                                   "finished_at": a.finished_at.isoformat() + "Z" if a.finished_at else None}
            if o is None:
                row["outcome"] = "pending"
            else:
                row.update(outcome="scored", success=o.success, reward=round(o.reward, 5), goal=o.goal,
                           window_s=o.window_s, detail=o.detail)
            out.append(row)
        return out
