"""Evaluate a policy version against another before it may become active.

Each version runs the benchmark scenarios on identical input: the balance scenario (its placement
head rebalancing) and the memory scenario (its balloon head) on every trace given, typically the
Bitbrains VMs held out from training and the store's own history replayed. Each run is reduced to
one reward by :func:`llmvirt.model.score.reward`, the code that also scores real outcomes.
"""

from __future__ import annotations

from pathlib import Path

from llmvirt.model.score import reward
from llmvirt.policy.sim_adapter import LearnedBalloon, LlmvirtBalancer
from llmvirt.sim.fleet import BALANCE_SETUP, MEMORY_SETUP, FleetSim
from llmvirt.sim.traces import UsageTrace


def evaluate(path: Path, traces: list[tuple[str, UsageTrace]], steps: int | None = None) -> dict[str, float]:
    """Rewards of the policy in ``path`` per (trace, scenario), and their total."""
    out: dict[str, float] = {}
    for label, tr in traces:
        bal = FleetSim(tr, BALANCE_SETUP, extra_hosts=1).run(balance=LlmvirtBalancer(str(path)), steps=steps)
        out[f"{label}/balance"] = round(reward(bal.score(), "balance"), 4)
        mem = FleetSim(tr, MEMORY_SETUP).run(balloon=LearnedBalloon(str(path)), steps=steps)
        out[f"{label}/memory"] = round(reward(mem.score(), "memory"), 4)
    out["total"] = round(sum(out.values()), 4)
    return out


def compare(candidate: Path, current: Path, traces: list[tuple[str, UsageTrace]],
            steps: int | None = None) -> tuple[bool, dict[str, float], dict[str, float]]:
    """(candidate is no worse, its rewards, the current version's rewards)."""
    cand, cur = evaluate(candidate, traces, steps), evaluate(current, traces, steps)
    return cand["total"] >= cur["total"] - 1e-9, cand, cur
