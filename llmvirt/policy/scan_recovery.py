"""What a saturated host hides: each VM's demand estimated from what scans showed (numpy inference, no torch).

A scan measures use, and a host's use stops at its cores: on a host whose demand exceeds its cores every VM reads
its fair share, so the size of the overload, the thing a balancer must relieve, is invisible. The default balancer
(tuned CP-SAT on the scan) then acts on a host that reads just under its cores without knowing how far above them
its demand is. Here a small MLP estimates each VM's CPU demand over the next step from the scans of the last hour:
its own readings, whether its host read as saturated at each of them, its vCPUs, and its host's reading now (feature
spec 1, the shipped default's); spec 2 adds its host's view as a whole (:data:`HOST_FEATURES`). It is
fitted (squared error) on the simulator's true demand of training VMs while the default ran on scans
(:mod:`llmvirt.learn.train_scan_recovery`). The balancer then decides on ``seen + gain x (estimate - seen)``,
and, where the checkpoint says ``"cap": "vcpus"``, never on more than the VM's vCPUs can run (or its reading, if
that is more): a guest's use in CPUs cannot exceed its vCPUs, and an estimate above them is a move made for demand
that cannot arrive.

:func:`last_clear` is the heuristic it must beat: on a host that reads saturated, a VM's demand is at least its
last reading from a step when its host was not saturated (what an operator's script would do).

Checkpoint: ``scan_recovery.safetensors`` (the MLP and its input scale) and ``scan_recovery.json`` (format,
feature spec, the weights' SHA-256, trigger, gain, training record), verified by
:func:`llmvirt.policy.weights.load_arrays`; nothing is unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.policy.weights import CheckpointError, load_arrays
from llmvirt.sim.scan_window import HISTORY, ScanWindow

STEM = "scan_recovery"  #: checkpoint file stem in a policy directory
FEATURE_SPEC_VERSION = 2
CPSAT_MOVES, CPSAT_PRICE = 2, 0.1  #: CP-SAT's moves per decision and price per move: the balance default's point
VM_FEATURES = (*(f"seen_change_since_{k}_steps_ago" for k in range(1, HISTORY)), "seen_now_cores", "log2_vcpus",
               "seen_now_per_vcpu", *(f"host_saturated_{k}_steps_ago" for k in range(HISTORY)),
               "host_reading_now", "share_of_host_reading")
"""Feature spec 1, the VM's own inputs, in order: its reading k steps ago minus now (cores), its reading now
(cores), log2(vCPUs), its reading per vCPU, whether its host read saturated k steps ago (0 is now), its host's
reading now (share of its cores), the VM's share of its host's reading."""
HOST_FEATURES = ("last_clear_change", "host_scaled_change", "log2_host_last_clear_ratio")
"""What spec 2 adds, from the VM's host as a whole: :func:`last_clear` minus the reading now, :func:`host_scaled`
minus the reading now, and log2 of the host's VMs' last clear readings summed over their readings now summed
(clipped to [1/16, 16]; 0 where the host is not known)."""
FEATURES = (*VM_FEATURES, *HOST_FEATURES)  #: spec 2: a checkpoint reads the first ``n_in`` of these
OLDER_SPECS = {1: VM_FEATURES}  #: older feature specs still read (the shipped default is spec 1)
LAYERS = ("net.0", "net.2", "net.4")  #: state-dict prefixes of the MLP's linear layers
CAPS = ("", "vcpus")  #: a checkpoint's ``cap``: none (older checkpoints), or each VM's vCPUs


def inputs(w: ScanWindow, n: int = len(FEATURES)) -> np.ndarray:
    """(E, V, n) inputs of every VM: the first ``n`` of :data:`FEATURES` (spec 1's are the first of spec 2's)."""
    now = w.seen[..., -1:]
    past = w.seen[..., -2::-1] - now  # 1, 2, ... steps ago
    vcpus = np.maximum(w.vcpus, 1.0)[..., None]
    sat = w.saturated[..., ::-1].astype(np.float64)  # 0, 1, ... steps ago
    host = w.host_reading[..., None]
    share = now / np.maximum(host, 1e-9)
    cols = [past, now, np.log2(vcpus), now / vcpus, sat, host, share]
    if n > len(VM_FEATURES):
        cols.append(host_inputs(w))
    return np.concatenate(cols, axis=-1)[..., :n].astype(np.float32)


def host_inputs(w: ScanWindow) -> np.ndarray:
    """(E, V, len(HOST_FEATURES)) the inputs spec 2 adds, from each VM's host as a whole."""
    now = w.seen[..., -1]
    clear = last_clear(w)
    if w.host is None:
        return np.stack([clear - now, clear - now, np.zeros_like(now)], axis=-1)
    ratio = _host_total(w.host, clear) / np.maximum(_host_total(w.host, now), 1e-9)
    return np.stack([clear - now, host_scaled(w) - now, np.log2(np.clip(ratio, 1 / 16, 16))], axis=-1)


def last_clear(w: ScanWindow) -> np.ndarray:
    """(E, V) the heuristic estimate: on a host that reads saturated now, the larger of a VM's reading now and its
    last reading while its host was not saturated (its reading now if there is none); elsewhere its reading now."""
    clear = ~w.saturated
    idx = np.where(clear, np.arange(w.seen.shape[-1]), -1).max(axis=-1)  # the last clear step, -1: none
    last = np.take_along_axis(w.seen, np.maximum(idx, 0)[..., None], axis=-1)[..., 0]
    now = w.seen[..., -1]
    return np.where(w.saturated[..., -1] & (idx >= 0), np.maximum(now, last), now)


def host_scaled(w: ScanWindow) -> np.ndarray:
    """(E, V) the host-wide heuristic: on a host that reads saturated now, every VM's reading scaled by how much more
    its host's VMs read at their last clear step than now (their :func:`last_clear` summed over the summed readings
    now, at least 1); elsewhere its reading now. Needs ``w.host``; without it, :func:`last_clear`."""
    if w.host is None:
        return last_clear(w)
    now = w.seen[..., -1]
    ratio = _host_total(w.host, last_clear(w)) / np.maximum(_host_total(w.host, now), 1e-9)
    return np.where(w.saturated[..., -1], now * np.maximum(ratio, 1.0), now)


def _host_total(host: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(E, V) the sum of ``x`` over each VM's host's VMs."""
    e = np.broadcast_to(np.arange(host.shape[0])[:, None], host.shape)
    total = np.zeros((host.shape[0], int(host.max(initial=0)) + 1))
    np.add.at(total, (e, host), x)
    return np.take_along_axis(total, host, axis=1)


HEURISTICS = {"last-clear": last_clear, "host": host_scaled}  #: the heuristics by name: ablation (a)'s and the host's


class DemandEstimator:
    """The fitted MLP, or the mean of several (an ensemble): each VM's estimated CPU demand over the next step, in
    cores."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        """``arrays``: ``scale`` and ``net.{0,2,4}.{weight,bias}`` of one MLP, or the same under ``memberK.`` for
        each member of an ensemble; a wrong shape is refused as a CheckpointError."""
        self.members = [_member(a) for a in _split_members(arrays)]
        self.n_out = int(self.members[0][1][-1][0].shape[0])  #: outputs: 1, or one per quantile
        self.output = 0  #: which output estimates (a quantile checkpoint's chosen quantile)
        widths = {n for scale, layers in self.members for n in (scale.shape[0], layers[0][0].shape[1])}
        self.n_in = int(self.members[0][1][0][0].shape[1])
        if widths != {self.n_in} or self.n_in not in (len(VM_FEATURES), len(FEATURES)):
            raise CheckpointError("weights do not fit the scan recovery's feature spec")
        if {layers[-1][0].shape[0] for _, layers in self.members} != {self.n_out}:
            raise CheckpointError("weights do not fit the scan recovery: the members' outputs differ")

    def difference(self, x: np.ndarray) -> np.ndarray:
        """(...) the estimate of the next step's demand minus the reading now, from inputs (..., FEATURES): the
        MLP's, or the mean of the members'."""
        out = np.zeros(x.shape[:-1])
        for scale, layers in self.members:
            h = x[..., : self.n_in] / scale
            for i, (wt, b) in enumerate(layers):
                h = h @ wt.T + b
                if i < len(layers) - 1:
                    h = np.maximum(h, 0.0)
            out += h[..., self.output].astype(np.float64)
        return out / len(self.members)

    def __call__(self, w: ScanWindow) -> np.ndarray:
        """(E, V) estimated demand: the reading now plus the MLP's difference, never below 0."""
        return np.maximum(w.seen[..., -1] + self.difference(inputs(w, self.n_in)), 0.0)


Member = tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]  #: one MLP: (input scale, [(weight, bias)])


def _split_members(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """One MLP's arrays, or each ensemble member's (``memberK.`` prefixes, in K's order)."""
    if "scale" in arrays or not any(k.startswith("member") for k in arrays):
        return [arrays]
    groups: dict[int, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        head, _, rest = key.partition(".")
        if not head.startswith("member") or not head[6:].isdigit():
            raise CheckpointError(f"weights do not fit the scan recovery: unexpected {key!r}")
        groups.setdefault(int(head[6:]), {})[rest] = value
    return [groups[k] for k in sorted(groups)]


def _member(arrays: dict[str, np.ndarray]) -> Member:
    """One MLP's (scale, layers), each layer's shape checked against the one before it."""
    try:
        scale = arrays["scale"].astype(np.float32)
        layers = [(arrays[f"{p}.weight"].astype(np.float32), arrays[f"{p}.bias"].astype(np.float32)) for p in LAYERS]
    except KeyError as exc:
        raise CheckpointError(f"weights do not fit the scan recovery: missing {exc}") from None
    width = scale.shape
    for wt, b in layers:
        if wt.ndim != 2 or (wt.shape[1],) != width or b.shape != wt.shape[:1]:
            raise CheckpointError("weights do not fit the scan recovery: a layer's shape does not follow the last")
        width = b.shape
    return scale, layers


def ensemble_arrays(members: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays of an ensemble whose estimate is the mean of ``members``' (each one MLP's arrays)."""
    return {f"member{k}.{name}": v for k, arrays in enumerate(members) for name, v in arrays.items()}


@dataclass
class ScanRecovery:
    """The demand a balancer decides on: ``seen + gain x (estimate - seen)``; no estimator: a heuristic's."""

    estimator: DemandEstimator | None  #: None: the heuristic (ablation: the network replaced)
    gain: float = 1.0  #: weight of the estimate's difference from the reading
    trigger: float = 1.0  #: the balancer's trigger the recipe chose with it
    meta: dict[str, Any] = field(default_factory=dict)  #: checkpoint metadata
    heuristic: str = "last-clear"  #: with no estimator, which of :data:`HEURISTICS` estimates
    cap: str = ""  #: of :data:`CAPS`: "vcpus" decides on no more than a VM's vCPUs (or its reading, if more)

    def demand(self, w: ScanWindow) -> np.ndarray:
        """(E, V) the demand to decide on, cores."""
        seen = w.seen[..., -1]
        est = HEURISTICS[self.heuristic](w) if self.estimator is None else self.estimator(w)
        demand = np.maximum(seen + self.gain * (est - seen), 0.0)
        return np.minimum(demand, np.maximum(w.vcpus, seen)) if self.cap == "vcpus" else demand


def load(directory: Path) -> ScanRecovery:
    """The verified scan recovery of a policy directory; one clear line if it has none or it was tampered with."""
    if not (directory / f"{STEM}.json").is_file():
        raise CheckpointError(f"{directory} has no scan recovery ({STEM}.json)")
    arrays, meta = load_arrays(directory, STEM, FEATURE_SPEC_VERSION, list(FEATURES), OLDER_SPECS)
    try:
        gain, trigger = float(meta["gain"]), float(meta["trigger"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{directory / (STEM + '.json')}: no gain and trigger") from None
    estimator = DemandEstimator(arrays)
    where = directory / f"{STEM}.json"
    if estimator.n_in != len(meta["feature_spec"]["features"]):
        raise CheckpointError(f"{where}: weights read {estimator.n_in} inputs, its feature "
                              f"spec names {len(meta['feature_spec']['features'])}")
    quantiles = meta.get("quantiles") or []
    if (not isinstance(quantiles, list) or estimator.n_out != max(len(quantiles), 1)
            or (quantiles and meta.get("quantile") not in quantiles)):
        raise CheckpointError(f"{where}: its {estimator.n_out} outputs do not match its quantiles {quantiles} and "
                              f"the chosen one {meta.get('quantile')!r}")
    estimator.output = quantiles.index(meta["quantile"]) if quantiles else 0
    cap = meta.get("cap", "")
    if cap not in CAPS:
        raise CheckpointError(f"{where}: unknown cap {cap!r} (known: 'vcpus', or none)")
    return ScanRecovery(estimator, gain, trigger, meta, cap=cap)
