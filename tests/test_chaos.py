"""The chaos soak's short run (issue 17): random actions with a fault injected in every round, on the lab's
real libvirtd and QEMU; after each round every guest runs on exactly one host, the journal has the plan
and nothing left open, the stored scans only grow, and nothing printed a traceback. The long run is
bench/chaos.py, recorded in bench/RESULTS.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmvirt.lab import chaos, lab
from llmvirt.store import database

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def chaos_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """Its own lab (3 hosts, 4 guests), torn down at the end even when the soak fails."""
    root = tmp_path_factory.mktemp("chaos")
    url = f"sqlite:///{root / 'chaos.db'}"
    engine = database.open_engine(url)
    lab.up(root / "lab", 3, 4, engine, say=lambda *_: None)
    try:
        yield root / "lab", url
    finally:
        lab.down(root / "lab", engine, quiet=True)


def test_a_short_chaos_soak_loses_nothing(chaos_lab) -> None:  # noqa: ANN001
    lab_dir, url = chaos_lab
    audit = chaos.soak(lab_dir, url, chaos.SoakConfig(actions=16, faults=16, seed=3), say=lambda *_: None)
    assert audit.rounds >= 6 and sum(audit.actions.values()) >= 16
    assert len(audit.faults) >= 3, audit.faults  # several kinds of fault were injected
    assert (audit.lost_guests, audit.duplicated_guests, audit.open_entries, audit.lost_plans,
            audit.snapshots_lost, audit.tracebacks, audit.hung) == (0, 0, 0, 0, 0, 0, 0), audit.problems
    assert not audit.problems, audit.problems
    assert set(audit.outcomes) <= {"done", "skipped", "failed"} and audit.outcomes.get("done", 0) > 0


def test_the_audit_sees_a_guest_that_runs_nowhere(chaos_lab) -> None:  # noqa: ANN001
    """The check can fail: a guest destroyed and not set right is counted as lost."""
    import libvirt

    lab_dir, url = chaos_lab
    state = lab.LabState.load(lab_dir)
    where = chaos._where(state)
    guest, hosts = next((g, h) for g, h in where.items() if len(h) == 1)
    conn = libvirt.open(next(h for h in state.hosts if h.name == hosts[0]).uri)
    try:
        conn.lookupByName(guest).destroy()
        audit = chaos.Audit()
        rnd = chaos._Round([])
        chaos._audit_round(audit, url, state, rnd, (*chaos._counts(url), False), settle_s=1.0)
        assert audit.lost_guests == 1 and guest in audit.problems[0]
    finally:
        conn.lookupByName(guest).create()
        conn.close()
