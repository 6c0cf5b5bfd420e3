"""Run llmvirt's own rebalance (learned or baseline scorer) inside the fleet simulator.

The simulator's state is turned into the shared Cluster model and handed to the same
``decide.rebalance`` that plans for scanned hosts, so a benchmark measures exactly the
code operators run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmvirt.policy import balloon_head, decide, pin_head, tuning
from llmvirt.policy.train import limits_for
from llmvirt.sim.field_policies import ROUNDS_PER_STEP
from llmvirt.sim.fleet import FleetView
from llmvirt.sim.numa import Topology


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
        cluster = view.to_cluster()
        vm_index, host_index = view.names(cluster)
        plan = decide.rebalance(cluster, self._scorer, "balance",
                                decide.Context(limits_for(view.setup), max_migrations=self.max_migrations))
        return [(vm_index[m.vm], host_index[m.dst]) for m in plan.moves]


class LearnedBalloon:
    """``llmvirt[:POLICY]`` in ``bench --scenario memory``: the balloon head, through the safety limits.

    Each 300 s step the head proposes targets from the use history it has seen so far; the
    safety limits then act in 10 s rounds as MOM's daemon does (step limit, floor), and a
    guest whose use exceeded its balloon is deflated to its maximum at once.
    """

    def __init__(self, policy: str | None = None, name: str = "llmvirt",
                 head: balloon_head.BalloonHead | None = None, rounds: int = ROUNDS_PER_STEP) -> None:
        """Load the head of ``policy`` (or use ``head``)."""
        self.name, self.rounds = name, rounds
        self.head = head or balloon_head.load(decide.policy_dir(policy))
        self._window: np.ndarray | None = None
        self._seen: np.ndarray | None = None

    def targets(self, view: FleetView) -> np.ndarray:
        """New balloon targets after one step of rounds."""
        cap = view.vm_mem_cap.astype(np.float64)
        use = view.vm_mem_mib / cap
        if self._window is None or self._seen is None:
            self._window = np.repeat(use[:, None], balloon_head.DAY, axis=1)
            self._seen = use.copy()
        else:
            self._window = np.concatenate([self._window[:, 1:], use[:, None]], axis=1)
            self._seen = np.maximum(self._seen, use)
        proposed, need = self.head.propose(balloon_head.window_features(self._window, self._seen, cap), cap)
        proposed = balloon_head.fit_proposals(proposed, need, view.vm_mem_mib, cap, view.vm_host,
                                              np.full(view.n_hosts, view.setup.host_mem_mib))
        return apply_rounds(view.vm_balloon.astype(np.float64), cap, view.vm_mem_mib.astype(np.float64), proposed,
                            self.rounds)


def apply_rounds(cur: np.ndarray, cap: np.ndarray, demand: np.ndarray, proposed: np.ndarray,
                 rounds: int) -> np.ndarray:
    """Step balloons toward ``proposed`` through the safety limits for ``rounds`` 10 s rounds."""
    pressure = demand > cur + 1e-6  # use above the balloon: deflate now
    for _ in range(rounds):
        cur = tuning.safe_targets(cur, cap, np.minimum(demand, cur), proposed, pressure)
        pressure = np.zeros_like(pressure)
    return cur


class LearnedPinning:
    """``llmvirt[:POLICY]`` in the pinning scenario: the pinning head on each host's recent history."""

    def __init__(self, policy: str | None = None, name: str = "llmvirt", head: pin_head.PinHead | None = None) -> None:
        """Load the head of ``policy`` (or use ``head``)."""
        self.name = name
        self.head = head or pin_head.load(decide.policy_dir(policy))

    def pinning(self, topo: Topology, history: np.ndarray, vcpus: np.ndarray,
                mem: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes chosen by the head from busy vCPUs now and at the last hour's peak."""
        now, peak = history[:, -1], history[:, -pin_head.PEAK_WINDOW:].max(axis=1)
        return pin_head.assign(topo, now, peak, vcpus, mem, self.head.choose), np.zeros(vcpus.size, dtype=bool)
