"""Two questions a scan asks before it loads the journal's and the outcomes' machinery: is any action left
open by an interrupted run, and is any outcome due? Almost always the answer is no, and a cron scan then
never imports SQLAlchemy (issue 18). Plain, constant SQL on any store (:mod:`llmvirt.store.plain`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from llmvirt.store.plain import begin, expand

OPEN = ("pending", "running")  #: action states an interrupted run can leave (the journal's, imported from here)
_OPEN = "SELECT id FROM actions WHERE status IN (:states*) LIMIT 1"
_DUE = """SELECT id FROM actions WHERE status IN ('done', 'failed') AND finished_at IS NOT NULL
    AND finished_at <= :cut AND id NOT IN (SELECT action_id FROM outcomes) LIMIT 1"""


def any_open_action(store: Any) -> bool:
    """Whether an action is pending or running (:data:`OPEN`)."""
    with begin(store) as c:
        return bool(c.rows(*expand(_OPEN, states=OPEN)))


def any_outcome_due(store: Any, window_s: float, now: datetime | None = None) -> bool:
    """Whether a finished action's outcome window has passed without an outcome (what ``score_due`` scores)."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    with begin(store) as c:
        return bool(c.rows(_DUE, {"cut": now - timedelta(seconds=window_s)}))
