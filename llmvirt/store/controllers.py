"""Controllers' heartbeats: each ``llmvirt controller run`` records its role at every tick, so an operator
(``llmvirt controller list``, the ``llmvirt_controller_*`` metrics) sees who leads and who has gone quiet."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from llmvirt.store.schema import ControllerRow


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # stored as naive UTC, like every time in the store


STALE_TICKS = 3  #: a controller silent for this many of its intervals (plus 5 s) is reported stale


def heartbeat(engine: Engine, name: str, role: str, started_at: datetime, interval_s: float,
              now: datetime | None = None) -> None:
    """Record this controller's role now; ``leading_since`` is kept while it stays leader."""
    now = now or _now()
    with engine.begin() as conn:
        row = conn.execute(select(ControllerRow.role, ControllerRow.leading_since)
                           .where(ControllerRow.name == name)).first()
        since = (row.leading_since if row is not None and row.role == "leader" else now) if role == "leader" else None
        if row is None:
            conn.execute(insert(ControllerRow).values(name=name, role=role, started_at=started_at, last_tick_at=now,
                                                      interval_s=interval_s, leading_since=since))
        else:
            conn.execute(update(ControllerRow).where(ControllerRow.name == name)
                         .values(role=role, last_tick_at=now, leading_since=since))


def forget(engine: Engine, name: str) -> None:
    """A controller that stops cleanly removes its row."""
    with engine.begin() as conn:
        conn.execute(delete(ControllerRow).where(ControllerRow.name == name))


def all_controllers(engine: Engine, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every controller with its role, last tick, its age in seconds and whether it has gone quiet (stale: a
    controller killed without stopping leaves its row), live leader first."""
    now = now or _now()
    with engine.connect() as conn:
        rows = conn.execute(select(ControllerRow).order_by(ControllerRow.name)).all()
    out = [{"name": r.name, "role": r.role, "started_at": r.started_at.isoformat() + "Z",
            "last_tick_at": r.last_tick_at.isoformat() + "Z",
            "last_tick_age_s": round((now - r.last_tick_at).total_seconds(), 1), "interval_s": r.interval_s,
            "stale": (now - r.last_tick_at).total_seconds() > STALE_TICKS * r.interval_s + 5,
            "leading_since": r.leading_since.isoformat() + "Z" if r.leading_since else None} for r in rows]
    return sorted(out, key=lambda c: (c["stale"], c["role"] != "leader"))
