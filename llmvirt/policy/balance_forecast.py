"""The balance loop deciding on a learned forecast of each VM's next-step change: numpy inference, no torch.

A small MLP predicts how much each VM's CPU demand will change over the next 300 s step (or, where the recipe
chose a longer horizon, its mean over the next few steps against now), from its last hour
(12 samples) and its vCPUs; it was fitted on the training VMs' next-step changes (squared error) by
:mod:`llmvirt.learn.train_balance_forecast`. The loop is llmvirt's balance fallback (the hottest host's
busiest VM to the coolest host that takes it, when a host is above its trigger), deciding on
``demand now + gain x predicted change`` instead of the demand now, so it moves before a rise and holds off
before a fall. With ``gain`` 0 it is the fallback itself (ablation a). Trigger and gain are chosen with the
weights, on fleets of training VMs, and stored in the checkpoint.

Checkpoint: ``balance_forecast.safetensors`` (the MLP and its input scale) and ``balance_forecast.json``
(format, feature spec, the weights' SHA-256, trigger, gain, training record), verified by
:func:`llmvirt.policy.weights.load_arrays`; nothing is unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.model.arrays import ClusterArrays
from llmvirt.policy.balance_policy import BalanceActor, Decision, state_of
from llmvirt.policy.weights import CheckpointError, load_arrays
from llmvirt.sim.balance_env import HISTORY, BalanceState

STEM = "balance_forecast"  #: checkpoint file stem in a policy directory
FEATURE_SPEC_VERSION = 1
FEATURES = (*(f"change_since_{k}_steps_ago" for k in range(1, HISTORY)), "log2_vcpus", "demand_now_cores")
"""The MLP's inputs, in order: the demand k steps ago minus now (cores), log2(vCPUs), the demand now (cores)."""
LAYERS = ("net.0", "net.2", "net.4")  #: state-dict prefixes of the MLP's linear layers


def inputs(history: np.ndarray, vcpus: np.ndarray) -> np.ndarray:
    """(..., len(FEATURES)) inputs from history (..., HISTORY) in cores, oldest first, and vCPUs (...)."""
    now = history[..., -1:]
    past = history[..., -2::-1][..., : HISTORY - 1] - now  # 1, 2, ... steps ago
    return np.concatenate([past, np.log2(np.maximum(vcpus, 1.0))[..., None], now], axis=-1).astype(np.float32)


class ChangeForecaster:
    """The fitted MLP: each VM's predicted change in CPU demand over the next step, in cores."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        """``arrays``: ``scale`` and ``net.{0,2,4}.{weight,bias}``; a wrong shape is refused as a CheckpointError."""
        try:
            self.scale = arrays["scale"].astype(np.float32)
            self.layers = [(arrays[f"{p}.weight"].astype(np.float32), arrays[f"{p}.bias"].astype(np.float32))
                           for p in LAYERS]
        except KeyError as exc:
            raise CheckpointError(f"weights do not fit the balance forecaster: missing {exc}") from None
        if self.scale.shape != (len(FEATURES),) or self.layers[0][0].shape[1] != len(FEATURES):
            raise CheckpointError("weights do not fit the balance forecaster's feature spec")

    def __call__(self, history: np.ndarray, vcpus: np.ndarray) -> np.ndarray:
        """Predicted next-step change of each VM, cores, shaped like ``vcpus``."""
        h = inputs(history, vcpus) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h[..., 0].astype(np.float64)


@dataclass
class ForecastLoop:
    """The balance fallback deciding on demand now + ``gain`` x the forecast change (``gain`` 0: the fallback)."""

    forecaster: ChangeForecaster | None  #: None: the fallback alone
    threshold: float = 1.0  #: the loop's trigger, share of a host's cores
    gain: float = 1.0  #: weight of the forecast change
    name: str = "llmvirt-forecast"  #: display name
    meta: dict[str, Any] = field(default_factory=dict)  #: checkpoint metadata
    no_history: bool = False  #: ablation (c): the forecaster sees the past hour as flat at now
    horizon: int = 1  #: steps the forecast change averages over (the checkpoint's choice)

    def expected(self, state: BalanceState) -> np.ndarray:
        """(E, V) the demand the loop decides on: now plus the weighted forecast change, never below 0."""
        if self.forecaster is None or self.gain == 0.0:
            return state.demand
        hist = np.repeat(state.demand[..., None], HISTORY, -1) if self.no_history else state.history
        change = np.zeros_like(state.demand)
        valid = state.vm_valid
        change[valid] = self.forecaster(hist[valid], state.vcpus[valid])
        return np.maximum(state.demand + self.gain * change, 0.0) * valid

    def act(self, state: BalanceState,
            ahead: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, Any, np.ndarray]:
        """Greedy moves of every fleet, as :meth:`BalanceActor.act` returns them (``ahead``: :meth:`expected`
        already computed for ``state``)."""
        loop = BalanceActor(name=self.name, fallback=True, threshold=self.threshold)
        return loop.act(replace(state, demand=self.expected(state) if ahead is None else ahead))

    def decide(self, view: ClusterArrays, history: np.ndarray | None = None) -> list[tuple[int, int]]:
        """The balance scenario's interface: at most one move on one fleet."""
        return [(d.vm, d.dst) for d in self.explain(view, history)]

    def explain(self, view: ClusterArrays, history: np.ndarray | None = None,
                movable: np.ndarray | None = None) -> list[Decision]:
        """:meth:`decide` with the reason: the source's load now and forecast, the VM's forecast change, the
        destination's forecast load after the move."""
        state = state_of(view, history, movable)
        ahead = self.expected(state)  # the forecast once, for the decision and its reason
        vm, dst, _, _ = self.act(state, ahead)
        if vm[0] < 0:
            return []
        return [Decision(int(vm[0]), int(dst[0]), self.reason(state, ahead[0], int(vm[0]), int(dst[0])))]

    def reason(self, state: BalanceState, ahead: np.ndarray, vm: int, dst: int) -> str:
        """What drove moving ``vm`` to ``dst`` in the first fleet of ``state`` (``ahead``: its VMs' expected
        demand), in words."""
        now = state.demand[0]
        on = state.vm_host[0]
        src = int(on[vm])
        cores = state.cores[0]
        load_now = now[on == src].sum() / cores[src]
        load_ahead = ahead[on == src].sum() / cores[src]
        after = (ahead[on == dst].sum() + ahead[vm]) / cores[dst]
        ahead_of = "next step" if self.horizon == 1 else f"on average over the next {self.horizon} steps"
        parts = [f"source at {load_now:.0%} of its cores now, forecast {load_ahead:.0%} {ahead_of} "
                 f"(trigger {self.threshold:.0%})"]
        change = ahead[vm] - now[vm]
        if abs(change) >= 0.05:
            parts.append(f"the VM is forecast to {'rise' if change > 0 else 'fall'} by {abs(change):.2f} cores")
        parts.append(f"overload avoided {max(load_ahead - 1.0, 0.0):.0%} of a host (forecast)")
        parts.append(f"destination {after:.0%} after (forecast)")
        return "; ".join(parts)


def load(directory: Path, name: str = "llmvirt-forecast") -> ForecastLoop:
    """The verified forecast loop of a policy directory; one clear line if it has none or it was tampered with."""
    if not (directory / f"{STEM}.json").is_file():
        raise CheckpointError(f"{directory} has no balance forecaster ({STEM}.json): "
                              "train one with `llmvirt train --head balance-forecast`")
    arrays, meta = load_arrays(directory, STEM, FEATURE_SPEC_VERSION, list(FEATURES))
    try:
        threshold, gain, horizon = float(meta["threshold"]), float(meta["gain"]), int(meta.get("horizon", 1))
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{directory / (STEM + '.json')}: no trigger and gain") from None
    if horizon < 1:
        raise CheckpointError(f"{directory / (STEM + '.json')}: horizon {horizon} is not a number of steps")
    return ForecastLoop(ChangeForecaster(arrays), threshold, gain, name=name, meta=meta, horizon=horizon)
