"""Policy versions: which checkpoints exist, which one is active, promotion and rollback.

The shipped ``policies/default`` is version ``v0``. ``llmvirt train --from-store`` writes new
versions into a directory beside the database (``llmvirt-policies/vN``), registered here but not
active. :func:`promote` activates a version only if :func:`llmvirt.learn.evaluate.compare` finds it
no worse than the active one (``force`` overrides); :func:`rollback` goes back to the version that
was active before. ``place`` and ``rebalance`` use the active version when no ``--policy`` is given,
and every plan records the version that made it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from llmvirt.errors import UsageError
from llmvirt.paths import DEFAULT_POLICY
from llmvirt.store.schema import PolicyVersionRow


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def versions_dir(db_url: str) -> Path:
    """Where new versions are written: beside a SQLite database, else in the user's data directory."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(str(url.database)).resolve().parent / "llmvirt-policies"
    return Path.home() / ".local" / "share" / "llmvirt" / "policies"


def _ensure_shipped(s: Session) -> None:
    if s.scalar(select(func.count()).select_from(PolicyVersionRow)) == 0:
        s.execute(insert(PolicyVersionRow).values(name="v0", path=str(DEFAULT_POLICY), parent=None, source="shipped",
                                                  created_at=_now(), active=True, activated_at=_now(), metrics={}))
        s.commit()


def _row(r: PolicyVersionRow) -> dict[str, Any]:
    return {"name": r.name, "path": r.path, "parent": r.parent, "source": r.source,
            "created_at": r.created_at.isoformat() + "Z", "active": r.active,
            "activated_at": r.activated_at.isoformat() + "Z" if r.activated_at else None, "metrics": r.metrics or {}}


def list_versions(engine: Engine) -> list[dict[str, Any]]:
    """Every version, oldest first."""
    with Session(engine) as s:
        _ensure_shipped(s)
        return [_row(r) for r in s.scalars(select(PolicyVersionRow).order_by(PolicyVersionRow.id))]


def get(engine: Engine, name: str) -> dict[str, Any]:
    """One version by name; a clear error when there is none."""
    with Session(engine) as s:
        _ensure_shipped(s)
        r = s.scalars(select(PolicyVersionRow).where(PolicyVersionRow.name == name)).first()
        if r is None:
            raise UsageError(f"no policy version {name!r}: see `llmvirt policy list`")
        return _row(r)


def active(engine: Engine) -> dict[str, Any]:
    """The active version."""
    with Session(engine) as s:
        _ensure_shipped(s)
        r = s.scalars(select(PolicyVersionRow).where(PolicyVersionRow.active.is_(True))).first()
        assert r is not None  # _ensure_shipped leaves one active; promote/rollback keep one
        return _row(r)


def next_name(engine: Engine) -> str:
    """The name the next version gets."""
    with Session(engine) as s:
        _ensure_shipped(s)
        return f"v{s.scalar(select(func.count()).select_from(PolicyVersionRow))}"


def register(engine: Engine, name: str, path: Path, source: str, parent: str | None,
             metrics: dict[str, Any]) -> dict[str, Any]:
    """Record a new, inactive version."""
    with Session(engine) as s:
        _ensure_shipped(s)
        s.execute(insert(PolicyVersionRow).values(name=name, path=str(path), parent=parent, source=source,
                                                  created_at=_now(), active=False, metrics=metrics))
        s.commit()
    return get(engine, name)


def activate(engine: Engine, name: str, metrics: dict[str, Any] | None = None) -> None:
    """Make ``name`` the only active version."""
    get(engine, name)
    with Session(engine) as s:
        s.execute(update(PolicyVersionRow).values(active=False))
        values: dict[str, Any] = {"active": True, "activated_at": _now()}
        if metrics is not None:
            values["metrics"] = metrics
        s.execute(update(PolicyVersionRow).where(PolicyVersionRow.name == name).values(**values))
        s.commit()


def rollback(engine: Engine) -> str:
    """Activate the version that was active before the current one; returns its name."""
    current = active(engine)
    with Session(engine) as s:
        prev = s.scalars(select(PolicyVersionRow)
                         .where(PolicyVersionRow.name != current["name"], PolicyVersionRow.activated_at.is_not(None))
                         .order_by(PolicyVersionRow.activated_at.desc())).first()
        if prev is None:
            raise UsageError(f"{current['name']} is the only version ever active: nothing to roll back to")
        name = prev.name
    activate(engine, name)
    return name


def active_spec(engine: Engine) -> tuple[str, str]:
    """(path to load, label for plans) of the active version."""
    a = active(engine)
    return a["path"], a["name"]
