"""Reconciling a pin or balloon that a killed run left ``running``: read back from the host, never run again.

libvirt's test driver is a real libvirt host in this process; the actions are journaled as a killed run
leaves them (status ``running``), and the host is left either showing the action's effect or not.
"""

from __future__ import annotations

import libvirt
import pytest

from llmvirt.act import executor
from llmvirt.act.hosts import Hosts
from llmvirt.model.action import Action
from llmvirt.store import database, journal, registry

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE


@pytest.fixture
def lab(db_url: str):  # noqa: ANN201
    """(engine, hosts, the test driver's running guest) with host ``h`` registered."""
    engine = database.open_engine(db_url)
    registry.add_host(engine, registry.RegisteredHost("h", "test:///default"))
    hosts = Hosts(engine)
    dom = hosts.conn("h").lookupByName("test")
    yield engine, hosts, dom
    hosts.close()


def _left_running(engine, actions: list[Action]) -> list[int]:  # noqa: ANN001
    """Journal ``actions`` as a run killed mid-action leaves them: every one ``running``."""
    plan = journal.create_plan(engine, journal.NewPlan("balance", "test", {}, actions))
    ids = [e.id for e in journal.plan_actions(engine, plan)]
    for i in ids:
        journal.set_status(engine, i, "running")
    return ids


def _status(engine, action_id: int) -> tuple[str, str]:  # noqa: ANN001
    row = next(a for a in journal.all_actions(engine) if a["id"] == action_id)
    return row["status"], row["reason"]


def test_a_running_pin_is_done_only_when_the_host_shows_it(lab) -> None:
    engine, hosts, dom = lab
    ncpu = hosts.conn("h").getInfo()[2]
    dom.pinVcpu(0, tuple(i == 1 for i in range(ncpu)))  # the killed run got this far
    shown = Action.pin("test", "h", {0: (1,)}, "test", uuid=dom.UUIDString())
    not_shown = Action.pin("test", "h", {1: (2,)}, "test", uuid=dom.UUIDString())
    first, second = _left_running(engine, [shown, not_shown])
    notes = executor.reconcile(engine, hosts)
    assert len(notes) == 2
    assert _status(engine, first)[0] == "done" and _status(engine, first)[1].startswith("reconciled")
    status, reason = _status(engine, second)
    assert status == "failed" and reason.startswith("reconciled: interrupted; pinning not as asked"), reason
    assert executor.reconcile(engine, hosts) == []  # closed once, never again


def test_a_running_balloon_is_done_only_when_the_guest_reached_it(lab) -> None:
    engine, hosts, dom = lab
    max_mib = dom.maxMemory() // 1024
    reached, target = max_mib // 2, max_mib // 4
    dom.setMemoryFlags(reached * 1024, LIVE)
    ok = Action.balloon("test", "h", reached, "test", uuid=dom.UUIDString())
    short = Action.balloon("test", "h", target, "test", uuid=dom.UUIDString())
    first, second = _left_running(engine, [ok, short])
    executor.reconcile(engine, hosts)
    assert _status(engine, first) == ("done", f"reconciled: test balloon at {reached} MiB")
    status, reason = _status(engine, second)
    assert status == "failed" and f"balloon at {reached} MiB, not {target} MiB" in reason, reason
    assert dom.info()[2] // 1024 == reached  # reconciling read the host; it set nothing


def test_a_running_action_whose_guest_stopped_is_failed(lab) -> None:
    engine, hosts, dom = lab
    uuid = dom.UUIDString()
    dom.destroy()
    (aid,) = _left_running(engine, [Action.balloon("test", "h", 256, "test", uuid=uuid)])
    executor.reconcile(engine, hosts)
    status, reason = _status(engine, aid)
    assert status == "failed" and "test is not running on h" in reason, reason
