"""Totals over the store for monitoring: scans, the journal, migrations' job figures and outcomes.

Each is one aggregate query with fixed SQL (nothing is built from input); the Prometheus exporter
(:mod:`llmvirt.prometheus_export`) turns them into metrics at every scrape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, func, select

from llmvirt.store.schema import ActionRow, OutcomeRow, PlanRow, ScanRow

FINAL = ("done", "skipped", "failed")  #: action statuses that never change again


@dataclass
class Tallies:
    """What the store has recorded so far."""

    scans: int = 0  #: scans run
    last_scan_seconds: float | None = None  #: wall time of the latest scan
    last_scan_failed_hosts: int | None = None  #: hosts the latest scan could not read
    actions: dict[tuple[str, str], int] = field(default_factory=dict)  #: (kind, status) -> actions
    plans: dict[str, int] = field(default_factory=dict)  #: status -> plans
    migration_seconds: tuple[int, float] = (0, 0.0)  #: done migrations with a duration: (count, sum)
    migration_downtime_s: tuple[int, float] = (0, 0.0)  #: done migrations with a downtime: (count, sum)
    rewards: dict[str, tuple[int, float]] = field(default_factory=dict)  #: action kind -> (outcomes, reward sum)


def tally(engine: Engine) -> Tallies:
    """Every total, in one read transaction."""
    t = Tallies()
    with engine.connect() as c:
        t.scans = int(c.execute(select(func.count(ScanRow.id))).scalar_one())
        last = c.execute(select(ScanRow.seconds, ScanRow.failed_hosts).order_by(ScanRow.id.desc()).limit(1)).first()
        if last is not None:
            t.last_scan_seconds, t.last_scan_failed_hosts = float(last[0]), int(last[1])
        rows = c.execute(select(ActionRow.kind, ActionRow.status, func.count(ActionRow.id))
                         .group_by(ActionRow.kind, ActionRow.status)).all()
        t.actions = {(k, s): int(n) for k, s, n in rows}
        t.plans = {s: int(n) for s, n in c.execute(select(PlanRow.status, func.count(PlanRow.id))
                                                   .group_by(PlanRow.status)).all()}
        results = c.execute(select(ActionRow.result).where(ActionRow.kind == "migrate",
                                                           ActionRow.status == "done")).scalars().all()
        rewards = c.execute(select(ActionRow.kind, func.count(OutcomeRow.id), func.sum(OutcomeRow.reward))
                            .join(ActionRow, ActionRow.id == OutcomeRow.action_id).group_by(ActionRow.kind)).all()
    seconds = [float(r["seconds"]) for r in results if r and r.get("seconds") is not None]
    downtime = [float(r["downtime_ms"]) / 1000 for r in results if r and r.get("downtime_ms") is not None]
    t.migration_seconds = (len(seconds), sum(seconds))
    t.migration_downtime_s = (len(downtime), sum(downtime))
    t.rewards = {k: (int(n), float(s or 0.0)) for k, n, s in rewards}
    return t
