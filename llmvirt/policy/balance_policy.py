"""The learned balance policy at decision time: numpy inference of the trained actor, no torch.

The actor scores every candidate move (:mod:`llmvirt.policy.balance_features`) with one shared MLP
and "do nothing" with a small MLP over fleet-wide figures, each added to the heuristic fallback's
prior logit (residual reinforcement learning: the network learns where to depart from the
fallback); the best-scoring allowed option is taken (a softmax over them during training).
It decides on the simulator's batched state and on a
:class:`~llmvirt.model.arrays.ClusterArrays` built from a real cluster, so ``bench`` and ``rebalance`` run
the same code. Each decision carries its reason: what drove it (forecast peak, overload now or
avoided, the destination's headroom).

Checkpoints: ``balance_rl.safetensors`` (actor, critic and forecaster weights) and
``balance_rl.json`` (format, feature spec, feature mode, the weights' SHA-256, training record),
verified by :func:`llmvirt.policy.weights.load_arrays` before use; nothing is unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.model.arrays import ClusterArrays
from llmvirt.policy import balance_features as bf
from llmvirt.policy.weights import CheckpointError, load_arrays
from llmvirt.sim.balance_env import HISTORY, BalanceState

STEM = "balance_rl"  #: checkpoint file stem in a policy directory
ACTOR_LAYERS = ("cand.0", "cand.2", "cand.4", "noop.0", "noop.2")  #: actor state-dict prefixes


def feature_list() -> list[str]:
    """The feature spec a checkpoint must match: candidate features, then global ones."""
    return [*bf.CANDIDATE_FEATURES, *(f"global:{g}" for g in bf.GLOBAL_FEATURES)]


def _mlp(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


@dataclass
class Decision:
    """One chosen move of one fleet, with why."""

    vm: int  #: VM index
    dst: int  #: destination host index
    reason: str  #: what drove it


@dataclass
class BalanceActor:
    """The trained actor (or, with ``fallback``, the heuristic in the same loop: ablation a)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)  #: verified weights
    meta: dict[str, Any] = field(default_factory=dict)  #: checkpoint metadata
    name: str = "llmvirt-rl"  #: display name
    fallback: bool = False  #: use the heuristic fallback instead of the network
    threshold: float = 1.0  #: the fallback's trigger (share of a host's cores)

    def __post_init__(self) -> None:
        """Unpack the layers and the forecaster; check their shapes."""
        self.mode = str(self.meta.get("mode", "full"))
        self.head = str(self.meta.get("head", "residual"))  #: advantage (policy iteration) or residual (PPO)
        self.margin = float(self.meta.get("margin", 0.0))  #: advantage head: least predicted saving to depart
        shape = self.meta.get("prior_shape", [bf.PRIOR_ACT, bf.PRIOR_GAIN])
        self.prior_shape = (float(shape[0]), float(shape[1]))  #: the prior's act logit and logit per gain point
        if "prior_threshold" in self.meta:
            self.threshold = float(self.meta["prior_threshold"])
        self.forecaster = bf.Forecaster(self.arrays) if "forecast.0.weight" in self.arrays else None
        if self.fallback:
            return
        try:
            lay = {p: (self.arrays[f"actor.{p}.weight"].astype(np.float32),
                       self.arrays[f"actor.{p}.bias"].astype(np.float32)) for p in ACTOR_LAYERS}
        except KeyError as exc:
            raise CheckpointError(f"weights do not fit the balance policy: missing {exc}") from None
        self.cand = [lay[p] for p in ACTOR_LAYERS[:3]]
        self.noop = [lay[p] for p in ACTOR_LAYERS[3:]]
        if (self.cand[0][0].shape[1] != len(bf.CANDIDATE_FEATURES)
                or self.noop[0][0].shape[1] != len(bf.GLOBAL_FEATURES)):
            raise CheckpointError("weights do not fit the balance policy's feature spec")

    def logits(self, cand: bf.Candidates) -> np.ndarray:
        """(E, N + 1) masked logits: "do nothing" first, then each candidate; disallowed are -inf.
        The fallback's prior logits plus the network's correction (none for the fallback itself)."""
        prior = bf.prior_logits(cand, self.threshold, *self.prior_shape)
        if self.fallback:
            return prior
        s = _mlp(self.cand, cand.features)[..., 0]
        n = _mlp(self.noop, cand.global_features)[..., 0]
        if self.head == "advantage":
            return advantage_logits(prior, n, s, cand.noop_mask, self.margin)
        return prior + np.concatenate([n[:, None], s], axis=1)

    def act(self, state: BalanceState) -> tuple[np.ndarray, np.ndarray, bf.Candidates, np.ndarray]:
        """Greedy moves of every fleet: (vm, dst) with -1 for none, the candidates and the chosen index."""
        cand = bf.candidates(state, self.forecaster, self.mode, self.threshold)
        choice = self.logits(cand).argmax(axis=1)
        if cand.vm.shape[1] == 0:  # no VM runs anywhere: nothing to move
            none = np.full(choice.size, -1)
            return none, none.copy(), cand, choice
        e = np.arange(choice.size)
        pick = np.maximum(choice - 1, 0)
        vm = np.where(choice > 0, cand.vm[e, pick], -1)
        dst = np.where(choice > 0, cand.dst[e, pick], -1)
        return vm, dst, cand, choice

    def decide(self, view: ClusterArrays, history: np.ndarray | None = None) -> list[tuple[int, int]]:
        """The balance scenario's interface: at most one move on one fleet (Watcher's "one per audit")."""
        return [(d.vm, d.dst) for d in self.explain(view, history)]

    def explain(self, view: ClusterArrays, history: np.ndarray | None = None,
                movable: np.ndarray | None = None) -> list[Decision]:
        """:meth:`decide` with the reason for the move; ``movable`` (per VM) masks VMs that cannot live-migrate."""
        state = state_of(view, history, movable)
        vm, dst, cand, choice = self.act(state)
        if vm[0] < 0:
            return []
        forecast = self.forecaster is not None and self.mode != "no-forecast" and not self.fallback
        return [Decision(int(vm[0]), int(dst[0]), reason(cand, int(choice[0]) - 1, forecast))]


def advantage_logits(prior: np.ndarray, noop: np.ndarray, moves: np.ndarray, mask: np.ndarray,
                     margin: float = 0.0) -> np.ndarray:
    """The advantage head's logits: the fallback's choice scores 0, every other option the network's
    predicted saving over it (``noop``: of doing nothing instead; ``moves``: of that move instead). So the
    policy is the fallback wherever the network predicts no option is better, and departs from it only
    where it predicts one is by more than ``margin`` (a guard against the most over-estimated of a few
    hundred predictions winning)."""
    e = np.arange(prior.shape[0])
    base = prior.argmax(axis=1)
    scores = np.concatenate([noop[:, None], moves], axis=1).astype(np.float32) - margin
    scores[e, base] = 0.0
    return np.where(mask, scores, -np.inf)


def reason(cand: bf.Candidates, k: int, forecast: bool = True) -> str:
    """What drove candidate ``k`` of the first fleet, in words (``forecast``: the figures are forecasts)."""
    f = dict(zip(bf.CANDIDATE_FEATURES, cand.features[0, k].tolist(), strict=True))
    parts = []
    if f["src_load_now"] > 1.0:
        parts.append(f"host overloaded now ({f['src_load_now']:.0%} of its cores)")
    elif forecast and f["src_load_q90"] > 1.0:
        parts.append(f"forecast peak {f['src_load_q90']:.0%} of the host's cores (90 % quantile)")
    else:
        parts.append(f"hottest host at {f['src_load_now']:.0%} of its cores"
                     + (f", forecast {f['src_load_q90']:.0%}" if forecast else ""))
    if forecast and f["vm_q90"] > f["vm_now"] * 1.2 + 0.01:
        parts.append(f"the VM is forecast to grow from {f['vm_now']:.0%} to {f['vm_q90']:.0%} of a host")
    kind = "forecast" if forecast else "measured now"
    parts.append(f"overload avoided {max(f['relief_q90'], 0.0):.0%} of a host ({kind})")
    parts.append(f"destination {f['dst_load_q90'] + f['vm_q90']:.0%} after ({kind})")
    return "; ".join(parts)


def state_of(view: ClusterArrays, history: np.ndarray | None = None, movable: np.ndarray | None = None) -> BalanceState:
    """One fleet's ClusterArrays (a scan or the simulator) as a batch of one. ``history``: (VMs, k) past CPU
    demand in MHz, oldest first, without now; missing samples repeat the oldest known (now, if none).
    ``movable``: per VM, may live-migrate (default all)."""
    s = view.setup
    mhz = s.mhz_per_core
    n = view.vm_host.size
    now = view.vm_cpu_mhz / mhz
    hist = np.repeat(now[:, None], HISTORY, axis=1)
    if history is not None and history.size:
        past = (history / mhz)[:, -(HISTORY - 1):]
        k = past.shape[1]
        hist[:, HISTORY - 1 - k: HISTORY - 1] = past
        hist[:, : HISTORY - 1 - k] = past[:, :1]
    vcpus = view.vm_vcpus.astype(np.float64)
    mcap = view.vm_mem_cap / 1024
    host_v = np.bincount(view.vm_host, vcpus, minlength=view.n_hosts)
    host_m = np.bincount(view.vm_host, mcap, minlength=view.n_hosts)
    maint = view.maintenance if view.maintenance.size else np.zeros(view.n_hosts, dtype=bool)
    cores, mem_mib = view.host_sizes()  # each host's own (a fleet of mixed sizes is as welcome as identical hosts)
    cores = np.maximum(np.asarray(cores, dtype=np.float64), 1.0)
    return BalanceState(
        cores=cores[None, :], host_valid=np.ones((1, view.n_hosts), dtype=bool),
        vm_valid=np.ones((1, n), dtype=bool), vm_host=view.vm_host[None, :].astype(np.int64),
        demand=now[None, :], history=hist[None, :, :].astype(np.float32), vcpus=vcpus[None, :],
        mem_cap_gib=mcap[None, :], mem_gib=(view.vm_mem_mib / 1024)[None, :],
        host_vcpus=host_v[None, :], host_mem_cap=host_m[None, :],
        vcpu_limit=(s.cpu_allocation_ratio * cores)[None, :],
        mem_limit=(s.ram_allocation_ratio * np.asarray(mem_mib, dtype=np.float64) / 1024)[None, :],
        since_move=np.full((1, n), 1000.0),
        movable=(np.ones((1, n), dtype=bool) if movable is None else np.asarray(movable, dtype=bool)[None, :]),
        placeable=~maint[None, :])


def load(directory: Path, name: str = "llmvirt-rl") -> BalanceActor:
    """The verified actor of a policy directory; one clear line if it has none or it was tampered with."""
    if not (directory / f"{STEM}.json").is_file():
        raise CheckpointError(f"{directory} has no learned balance policy ({STEM}.json): "
                              "train one with `llmvirt train-balance`")
    arrays, meta = load_arrays(directory, STEM, bf.FEATURE_SPEC_VERSION, feature_list())
    return BalanceActor(arrays, meta, name=name)
