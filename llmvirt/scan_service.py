"""A scan as every front end runs it (``llmvirt scan``, the long-running controller): first set right what an
interrupted apply left open, then read the hosts, store one snapshot each, and score the outcomes whose
window the scan closed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from llmvirt.model.cluster import ScanResult


@dataclass
class Scanned:
    """What one scan did."""

    scan_id: int
    result: ScanResult
    reconciled: list[str] = field(default_factory=list)  #: notes on journal entries set right first


def scan_and_record(engine: Engine, db_url: str | None, config_path: Path | None,
                    targets: Sequence[tuple[str, str, bool]], workers: int = 8, timeout: float = 30.0) -> Scanned:
    """Reconcile, scan ``targets`` (name, URI, maintenance), record, score due outcomes."""
    from llmvirt import config
    from llmvirt.act import executor
    from llmvirt.measure import outcomes
    from llmvirt.observe import inventory, nvml
    from llmvirt.store import snapshots

    notes = executor.reconcile_if_idle(engine, db_url)
    result = inventory.scan_hosts(list(targets), nvml=nvml.default_source(), workers=workers, timeout=timeout)
    scan_id = snapshots.record_scan(engine, result)
    outcomes.score_due(engine, config.load_outcome_window(config_path))
    return Scanned(scan_id, result, notes)
