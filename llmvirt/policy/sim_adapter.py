"""Run llmvirt's own rebalance (learned or baseline scorer) inside the fleet simulator.

The simulator's state is turned into the shared Cluster model and handed to the same
``decide.rebalance`` that plans for scanned hosts, so a benchmark measures exactly the
code operators run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmvirt.policy import decide
from llmvirt.policy.train import limits_for
from llmvirt.sim.fleet import FleetView


@dataclass
class LlmvirtBalancer:
    """``llmvirt[:POLICY]`` in ``bench --scenario balance``: rebalance each step with a scorer."""

    policy: str | None = None  #: checkpoint path/name or baseline:NAME; None = policies/default
    max_migrations: int = 2  #: per step
    name: str = "llmvirt"  #: display name
    _scorer: decide.BaselineScorer | decide.LearnedScorer | None = field(default=None, init=False, repr=False)

    def decide(self, view: FleetView) -> list[tuple[int, int]]:
        """Plan on the cluster view and map the moves back to simulator indices."""
        if self._scorer is None:
            self._scorer = decide.load_scorer(self.policy)
        plan = decide.rebalance(view.to_cluster(), self._scorer, limits_for(view.setup), {}, "balance",
                                self.max_migrations)
        return [(int(m.vm.split("-")[1]), int(m.dst.split("-")[1])) for m in plan.moves]
