"""Balloon targets on libvirt (live)."""

from __future__ import annotations

import time

import libvirt

from llmvirt.act.runner import Env, running_here
from llmvirt.model.action import DONE, FAILED, Action, Outcome

SETTLE_S = 10.0  #: how long a guest may take to reach its balloon target


class Balloon:
    """The balloon runner: running here and the target within its maximum; set it; wait until reached."""

    def __init__(self, settle_s: float = SETTLE_S) -> None:
        """``settle_s``: how long the guest may take to reach the target."""
        self.settle_s = settle_s

    def pre_condition(self, a: Action, env: Env) -> Outcome | None:
        """Skipped when the VM does not run on its host; failed when the target is outside 1..maximum."""
        dom = running_here(a, env)
        if isinstance(dom, Outcome):
            return dom
        max_kib = dom.maxMemory()
        if not 0 < (a.target_mib or 0) * 1024 <= max_kib:
            return Outcome(FAILED, f"target {a.target_mib} MiB outside 1..{max_kib // 1024} MiB")
        return None

    def execute(self, a: Action, env: Env) -> Outcome:
        """Set the balloon's live size."""
        assert a.target_mib is not None
        env.hosts.conn(a.src).lookupByUUIDString(a.uuid).setMemoryFlags(a.target_mib * 1024,
                                                                         libvirt.VIR_DOMAIN_AFFECT_LIVE)
        return Outcome(DONE, f"{a.vm} balloon set to {a.target_mib} MiB")

    def post_condition(self, a: Action, env: Env, outcome: Outcome) -> Outcome:
        """The guest reaches the target (within 1 %) within the settle time."""
        assert a.target_mib is not None
        dom = env.hosts.conn(a.src).lookupByUUIDString(a.uuid)
        deadline = time.monotonic() + self.settle_s
        while True:
            cur = dom.memoryStats().get("actual", 0) // 1024
            if abs(cur - a.target_mib) <= max(1, a.target_mib // 100):
                return Outcome(DONE, f"{a.vm} balloon at {cur} MiB")
            if time.monotonic() >= deadline:
                detail = f"{a.vm} balloon at {cur} MiB, not {a.target_mib} MiB, after {self.settle_s:g} s"
                return Outcome(FAILED, detail)
            time.sleep(0.5)
