"""The executor's scheduler: global maximum, one action per host, plan order per host."""

from __future__ import annotations

import threading
import time

from llmvirt.act.executor import schedule
from llmvirt.act.runner import DONE, Outcome
from llmvirt.model.action import Action
from llmvirt.store.journal import Entry


def _a(i: int, src: str, dst: str) -> Entry:
    return Entry(i, 1, i, Action.migrate(f"vm{i}", src, dst, "test", uuid=f"u{i}"), "pending")


def test_parallel_with_per_host_exclusivity_and_order() -> None:
    actions = [_a(0, "h1", "h2"), _a(1, "h3", "h4"), _a(2, "h2", "h5"), _a(3, "h6", "h7"), _a(4, "h1", "h8")]
    lock = threading.Lock()
    active: set[str] = set()
    peak = [0]
    order: list[int] = []

    def run(a: Entry) -> Outcome:
        with lock:
            hosts = a.action.hosts
            assert not hosts & active, f"{a.id} shares a busy host"
            active.update(hosts)
            peak[0] = max(peak[0], len(active) // 2)
            order.append(a.id)
        time.sleep(0.05)
        with lock:
            active.difference_update(hosts)
        return Outcome(DONE)

    finished: list[int] = []
    schedule(actions, 2, run, finished=lambda a, o: finished.append(a.id))
    assert sorted(finished) == [0, 1, 2, 3, 4]
    assert peak[0] == 2  # two at once, never more
    assert order.index(0) < order.index(2) and order.index(0) < order.index(4)  # plan order on a shared host


def test_one_at_a_time_by_default() -> None:
    seen: list[int] = []
    schedule([_a(0, "h1", "h2"), _a(1, "h3", "h4")], 1, lambda a: (seen.append(a.id), Outcome(DONE))[1])
    assert seen == [0, 1]


def test_unexpected_error_fails_only_that_action() -> None:
    outcomes: dict[int, str] = {}

    def run(a: Entry) -> Outcome:
        if a.id == 0:
            raise RuntimeError("boom")
        return Outcome(DONE)

    schedule([_a(0, "h1", "h2"), _a(1, "h3", "h4")], 2, run, finished=lambda a, o: outcomes.update({a.id: o.status}))
    assert outcomes == {0: "failed", 1: "done"}
