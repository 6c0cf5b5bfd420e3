"""Placement scorers deciding the simulator's arrivals, and the tunable placement baseline.

:func:`chooser` turns any placement scorer (``place``'s rules, a learned checkpoint) into the callback
the placement scenario (:mod:`llmvirt.sim.placement_env`) asks for each arriving VM: the same hard
rules (allocation limits) and the same features (:func:`llmvirt.policy.index.host_features`) as
``llmvirt place`` on a scanned cluster, and the same choice (the best score, the first of equals).

``baseline:weighted:C:V:M[:P]`` is the baseline family the placement benchmark tunes: the host with the least
``C`` x CPU use after + ``V`` x vCPU allocation after + ``M`` x memory allocation after + ``P`` x recent peak
CPU use after (0 when left out). ``1:0:0`` is least-loaded; ``0:1:1`` spreads allocation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmvirt.errors import UsageError
from llmvirt.policy.constraints import Limits
from llmvirt.policy.features import FEATURES
from llmvirt.policy.index import HostTotals, host_features
from llmvirt.sim.placement_env import Arrival

_WEIGHTED = ("host_cpu_used_after", "host_vcpu_alloc_after", "host_mem_alloc_after", "host_cpu_peak_after")


@dataclass
class WeightedScorer:
    """``baseline:weighted:C:V:M[:P]`` (see the module docstring)."""

    weights: tuple[float, ...]  #: CPU use, vCPU allocation, memory allocation, recent peak, each after the VM
    name: str = ""  #: display name

    def __post_init__(self) -> None:
        """Four weights (a fourth 0 when three are given); the display name from them (three when P is 0)."""
        self.weights = tuple(self.weights) + (0.0,) * (4 - len(self.weights))
        shown = self.weights if self.weights[3] else self.weights[:3]
        self.name = self.name or "baseline:weighted:" + ":".join(f"{w:g}" for w in shown)

    @property
    def reads_peaks(self) -> bool:
        """True when the hosts' recent peaks weigh in."""
        return self.weights[3] > 0

    def scores(self, feats: np.ndarray, hosts: Any) -> np.ndarray:
        """Minus the weighted sum: higher is better."""
        cols = [FEATURES.index(f) for f in _WEIGHTED]
        return -(feats[:, cols] @ np.asarray(self.weights, dtype=np.float32))


def parse_weighted(spec: str) -> WeightedScorer:
    """``weighted:C:V:M[:P]`` (after ``baseline:``)."""
    parts = spec.split(":")[1:]
    try:
        weights = tuple(float(p) for p in parts)
    except ValueError:
        weights = ()
    if len(weights) not in (3, 4) or min(weights) < 0 or sum(weights) <= 0 or not all(map(np.isfinite, weights)):
        raise UsageError(f"baseline:{spec}: use baseline:weighted:C:V:M[:P], three or four weights >= 0, "
                         "e.g. 1:0.5:0 or 1:0.5:0:1")
    return WeightedScorer(weights)


def chooser(scorer: Any, vm_util: float) -> Callable[[Arrival], int]:
    """The placement scenario's callback for ``scorer`` (anything with ``scores(feats, hosts)``); ``vm_util`` is
    the CPU use expected of a new VM, as a share of its vCPUs (``place --expected-cpu``)."""

    def choose(a: Arrival) -> int:
        ok = ((a.vcpus + a.vm_vcpus <= a.cpu_allocation_ratio * a.cores + 1e-9)
              & (a.mem_gib + a.vm_mem_gib <= a.ram_allocation_ratio * a.host_mem_gib + 1e-9))
        rows = np.flatnonzero(ok)
        if rows.size == 0:
            return -1
        limits = Limits(a.cpu_allocation_ratio, a.ram_allocation_ratio, 0, 0)
        totals = HostTotals(a.used[rows], a.vcpus[rows], a.mem_gib[rows] * 1024, a.count[rows], a.cores[rows],
                            a.host_mem_gib[rows] * 1024, None if a.peak is None else a.peak[rows])
        feats = host_features(totals, a.vm_vcpus, a.vm_mem_gib * 1024, vm_util, limits)
        return int(rows[int(np.argmax(scorer.scores(feats, rows)))])  # argmax: the first of equals

    return choose
