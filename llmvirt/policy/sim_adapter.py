"""Run llmvirt's own rebalance (learned or baseline scorer) inside the fleet simulator.

The simulator's state is turned into the shared Cluster model and handed to the same
``decide.rebalance`` that plans for scanned hosts, so a benchmark measures exactly the
code operators run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmvirt.model.arrays import ClusterArrays, FleetSetup
from llmvirt.policy import balloon_feedback, balloon_head, decide, pin_head, tuning
from llmvirt.policy.constraints import Limits
from llmvirt.sim.field_balloons import ROUNDS_PER_STEP
from llmvirt.sim.numa import Topology


def limits_for(setup: FleetSetup) -> Limits:
    """The fleet's allocation ratios as constraint limits."""
    return Limits(cpu_allocation_ratio=setup.cpu_allocation_ratio, ram_allocation_ratio=setup.ram_allocation_ratio,
                  reserved_cpus=0, reserved_memory_mib=0)


@dataclass
class LlmvirtBalancer:
    """``llmvirt[:POLICY]`` in ``bench --scenario balance``: rebalance each step with a scorer."""

    policy: str | None = None  #: checkpoint path/name or baseline:NAME; None = policies/default
    max_migrations: int = 2  #: per step
    name: str = "llmvirt"  #: display name
    _scorer: decide.BaselineScorer | decide.LearnedScorer | None = field(default=None, init=False, repr=False)

    def decide(self, view: ClusterArrays) -> list[tuple[int, int]]:
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

    Each 300 s step the head proposes targets from the use history it has seen so far (and, with
    pressure feedback, each VM's margin from its pressure flags: use above the balloon at a step);
    the safety limits then act in 10 s rounds as MOM's daemon does (step limit, floor), and a
    guest whose use exceeded its balloon is deflated to its maximum at once.
    """

    def __init__(self, policy: str | None = None, name: str = "llmvirt",
                 head: balloon_head.BalloonHead | None = None, rounds: int = ROUNDS_PER_STEP,
                 forecasts: np.ndarray | None = None) -> None:
        """Load the head of ``policy`` (or use ``head``). ``forecasts`` (VMs x steps x quantiles), when
        given, replaces the forecaster's output step by step (it depends on the use history only, so
        operating points can be compared without recomputing it)."""
        self.name, self.rounds = name, rounds
        self.head = head or balloon_head.load(decide.policy_dir(policy))
        self.forecasts = forecasts
        self._window: np.ndarray | None = None
        self._seen: np.ndarray | None = None
        self._pressure: np.ndarray | None = None
        self._t = 0

    def targets(self, view: ClusterArrays) -> np.ndarray:
        """New balloon targets after one step of rounds."""
        cap = view.vm_mem_cap.astype(np.float64)
        use = view.vm_mem_mib / cap
        flag = view.vm_mem_mib > view.vm_balloon + 1e-6  # the guest needed more than its balloon
        if self._window is None or self._seen is None or self._pressure is None:
            self._window = np.repeat(use[:, None], balloon_head.DAY, axis=1)
            self._seen = use.copy()
            self._pressure = flag[:, None]
        else:
            self._window = np.concatenate([self._window[:, 1:], use[:, None]], axis=1)
            self._seen = np.maximum(self._seen, use)
            self._pressure = np.concatenate([self._pressure[:, -(balloon_feedback.WINDOW - 1):], flag[:, None]], axis=1)
        feats = balloon_head.window_features(self._window, self._seen, cap)
        quantiles = self.forecasts[:, self._t, :] if self.forecasts is not None else None
        self._t += 1
        proposed, need = self.head.propose(feats, cap, self._pressure, quantiles)
        proposed = balloon_head.fit_proposals(proposed, need, view.vm_mem_mib, cap, view.vm_host,
                                              np.full(view.n_hosts, view.setup.host_mem_mib))
        proposed = np.where(flag, cap, proposed)  # under pressure: back to the maximum, and kept there this step
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
    """``llmvirt[:POLICY]`` in the pinning scenario: the pinning head on each host's recent history,
    sticky (a host's pinnings change only when the change pays for its move in the contention model
    with the head's ``remote_penalty``; ``sticky=False`` for the ablation)."""

    def __init__(self, policy: str | None = None, name: str = "llmvirt", head: pin_head.PinHead | None = None,
                 sticky: bool = True, model_penalty: float | None = None) -> None:
        """Load the head of ``policy`` (or use ``head``); ``model_penalty`` overrides the head's penalty."""
        self.name = name
        self.head = head or pin_head.load(decide.policy_dir(policy))
        self.sticky_horizon = self.head.sticky_horizon if sticky else 0
        self.model_penalty = self.head.remote_penalty if model_penalty is None else model_penalty

    def pinning(self, topo: Topology, history: np.ndarray, vcpus: np.ndarray,
                mem: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes chosen by the head from busy vCPUs now and at the last hour's peak."""
        now, peak = history[:, -1], history[:, -pin_head.PEAK_WINDOW:].max(axis=1)
        return pin_head.assign(topo, now, peak, vcpus, mem, self.head.choose), np.zeros(vcpus.size, dtype=bool)
