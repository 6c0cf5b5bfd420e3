"""A scan as every front end runs it (``llmvirt scan``, the long-running controller): first set right what an
interrupted apply left open, then read the hosts, store one snapshot each, and score the outcomes whose
window the scan closed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmvirt.model.cluster import ScanResult

if TYPE_CHECKING:
    from llmvirt.observe.host_sessions import HostSessions


@dataclass
class Scanned:
    """What one scan did."""

    scan_id: int
    result: ScanResult
    reconciled: list[str] = field(default_factory=list)  #: notes on journal entries set right first


@dataclass(frozen=True)
class Reach:
    """How the scan reaches its hosts."""

    workers: int = 8  #: hosts read at once
    timeout: float = 30.0  #: seconds a host may take
    sessions: HostSessions | None = None  #: the connections a long-running controller keeps between scans


def scan_and_record(store: Any, db_url: str | None, config_path: Path | None,
                    targets: Sequence[tuple[str, str, bool]], reach: Reach | None = None) -> Scanned:
    """Reconcile, scan ``targets`` (name, URI, maintenance), record, score due outcomes. ``store``: an engine or a
    :mod:`llmvirt.store.plain` store; the journal and the outcomes load SQLAlchemy only when there is work."""
    from llmvirt import config
    from llmvirt.observe import inventory, nvml
    from llmvirt.store import pending_work, scan_writer
    from llmvirt.store.opening import engine_of

    notes: list[str] = []
    if pending_work.any_open_action(store):
        from llmvirt.act import executor

        notes = executor.reconcile_if_idle(engine_of(store), db_url)
    reach = reach or Reach()
    result = inventory.scan_hosts(list(targets), nvml=nvml.default_source(), workers=reach.workers,
                                  timeout=reach.timeout, sessions=reach.sessions)
    scan_id = scan_writer.record_scan(store, result)
    window = config.load_outcome_window(config_path)
    if pending_work.any_outcome_due(store, window):
        from llmvirt.measure import outcomes

        outcomes.score_due(engine_of(store), window)
    return Scanned(scan_id, result, notes)
