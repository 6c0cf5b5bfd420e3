"""What the learned balance policy sees: candidate moves and their features, for any fleet size.

The policy scores candidate moves ``(VM, destination host)`` one by one with shared weights, plus
a "do nothing" option, so the same network runs on 3 hosts or 10,000. Candidates, per fleet:

- the ``SOURCES`` hosts with the highest forecast load, and on each the ``PER_SOURCE`` VMs with the
  highest forecast demand that may live-migrate;
- as destinations, the ``DESTINATIONS`` placeable hosts with the lowest forecast load (every host
  in a small fleet).

The mask keeps only moves the hard rules allow (destination placeable and not the VM's host, its
vCPU and memory allocation within the limits): the policy proposes, the constraints dispose.

Every figure is scale-free (loads as a share of the host's cores), so fleets of any host size
share one network, and hosts of different sizes in one fleet too: a VM's figures are shares of its
source host's cores, and what it does to a destination is a share of that destination's cores.
The forecast (:class:`Forecaster`) turns each VM's last hour into quantiles of its next-step
demand; the ablation ``mode`` replaces it by the last value (``no-forecast``) or removes the
history features (``no-history``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from llmvirt.sim.balance_env import BalanceState

SOURCES = 3  #: hottest hosts a move may leave
PER_SOURCE = 8  #: VMs per source host considered
DESTINATIONS = 16  #: coolest hosts a move may go to
MODES = ("full", "no-forecast", "no-history")  #: the ablations' inputs

CANDIDATE_FEATURES = [
    "src_load_now", "src_load_q50", "src_load_q90",
    "dst_load_now", "dst_load_q50", "dst_load_q90",
    "vm_now", "vm_q50", "vm_q90",
    "src_excess_q90", "src_excess_after_q90", "dst_excess_after_q90", "relief_q90", "relief_now",
    "vm_mem_gib", "vm_hist_mean", "vm_hist_max", "vm_hist_std", "since_move", "dst_vcpu_room",
    "fleet_mean_load", "fleet_max_q90", "fallback_acts", "fallback_pick",
]  #: per candidate move, in order
GLOBAL_FEATURES = ["fleet_max_now", "fleet_max_q90", "hosts_over_q90", "hosts_over_now", "fleet_mean_load",
                   "best_relief_now", "best_relief_q90", "fallback_acts", "fallback_gain"]
FEATURE_SPEC_VERSION = 1


class Forecaster:
    """Quantiles (50 %, 90 %) of a VM's next-step CPU use from its last hour, a small MLP in numpy.

    Input: the last ``HISTORY`` samples as a share of the VM's vCPUs and log2(vCPUs); output: the
    two quantiles as a share of its vCPUs (the 90 % one never below the 50 % one)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        """``arrays``: ``forecast.{0,2,4}.{weight,bias}`` as trained by :mod:`llmvirt.learn.train_balance`."""
        self.layers = [(arrays[f"forecast.{i}.weight"].astype(np.float32),
                        arrays[f"forecast.{i}.bias"].astype(np.float32)) for i in (0, 2, 4)]

    @staticmethod
    def inputs(history: np.ndarray, vcpus: np.ndarray) -> np.ndarray:
        """(..., HISTORY + 1) network inputs from history (cores) and vCPUs."""
        v = np.maximum(vcpus, 1.0)[..., None]
        return np.concatenate([history / v, np.log2(v)], axis=-1).astype(np.float32)

    def __call__(self, history: np.ndarray, vcpus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(q50, q90) of next-step demand in cores, shaped like ``vcpus``."""
        h = self.inputs(history, vcpus)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < 2:
                h = np.maximum(h, 0.0)
        q50 = np.clip(h[..., 0], 0.0, 1.0)
        q90 = np.clip(q50 + np.logaddexp(0.0, h[..., 1]), 0.0, 1.0)
        v = np.maximum(vcpus, 1.0)
        return q50 * v, q90 * v


@dataclass
class Candidates:
    """Candidate moves of every fleet in a batch, padded to ``N`` per fleet."""

    vm: np.ndarray  #: (E, N) VM index
    dst: np.ndarray  #: (E, N) destination host index
    mask: np.ndarray  #: (E, N) allowed by the hard rules
    features: np.ndarray  #: (E, N, F) float32
    global_features: np.ndarray  #: (E, G) float32
    dst_scale: np.ndarray | None = None  #: (E, N) float32: source cores / destination cores (None: all 1)

    @property
    def noop_mask(self) -> np.ndarray:
        """(E, N + 1): "do nothing" (index 0, always allowed), then the candidates."""
        return np.concatenate([np.ones((self.mask.shape[0], 1), dtype=bool), self.mask], axis=1)


def _host_sum(vm_host: np.ndarray, per_vm: np.ndarray, valid: np.ndarray, n_hosts: int) -> np.ndarray:
    e = vm_host.shape[0]
    flat = (vm_host + np.arange(e)[:, None] * n_hosts).ravel()
    return np.bincount(flat, (per_vm * valid).ravel(), minlength=e * n_hosts).reshape(e, n_hosts)


def _take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Row-wise gather: a (E, X), idx (E, ...) -> (E, ...)."""
    return np.take_along_axis(a, idx.reshape(idx.shape[0], -1), axis=1).reshape(idx.shape)


@dataclass
class _Loads:
    """Every fleet's VM demand now and forecast (q50, q90), and host loads (share of cores) at each."""

    now: np.ndarray
    q50: np.ndarray
    q90: np.ndarray
    load_now: np.ndarray
    load50: np.ndarray
    load90: np.ndarray


def _loads(state: BalanceState, forecaster: Forecaster | None, mode: str) -> _Loads:
    valid, now = state.vm_valid, state.demand
    if forecaster is None or mode == "no-forecast":
        q50 = q90 = now
    else:
        q50, q90 = np.zeros_like(now), np.zeros_like(now)
        q50[valid], q90[valid] = forecaster(state.history[valid], state.vcpus[valid])
    n_h = state.host_valid.shape[1]
    return _Loads(now, q50, q90, *(_host_sum(state.vm_host, x, valid, n_h) / state.cores for x in (now, q50, q90)))


def _pairs(state: BalanceState, ld: _Loads) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sources (E, S): the hottest hosts at q90; their busiest movable VMs (E, S, K) and which exist;
    destinations (E, D): the coolest placeable hosts)."""
    hv, n_h = state.host_valid, state.host_valid.shape[1]
    src = np.argsort(np.where(hv, -ld.load90, np.inf), axis=1, kind="stable")[:, :min(SOURCES, n_h)]
    on_src = state.vm_host[:, None, :] == src[:, :, None]  # (E, S, V)
    vm_score = np.where(on_src & (state.vm_valid & state.movable)[:, None, :], ld.q90[:, None, :], -np.inf)
    top = np.argsort(-vm_score, axis=2, kind="stable")[:, :, :min(PER_SOURCE, vm_score.shape[2])]
    top_ok = np.take_along_axis(vm_score, top, axis=2) > -np.inf
    coolest = np.argsort(np.where(hv & state.placeable, ld.load90, np.inf), axis=1, kind="stable")
    dst = coolest[:, :min(DESTINATIONS, n_h)]
    return src, top, top_ok, dst


def _columns(state: BalanceState, ld: _Loads, pairs: tuple[np.ndarray, ...],
             mode: str) -> tuple[list[Any], np.ndarray]:
    """The candidate features' columns (each broadcastable to (E, S, K, D)) and the hard-rule mask."""
    src, top, top_ok, dst = pairs
    e_n, s_n, k = top.shape
    hv = state.host_valid
    c4, d_c4 = _take(state.cores, src)[:, :, None, None], _take(state.cores, dst)[:, None, None, :]
    # per source host (E, S, 1, 1), per VM (E, S, K, 1), per destination (E, 1, 1, D); a VM's figures are shares
    # of its source host's cores, and of the destination's where it lands there (the same on identical hosts)
    s_now, s50, s90 = (_take(x, src)[:, :, None, None] for x in (ld.load_now, ld.load50, ld.load90))
    v_now, v50, v90 = (_take(x, top)[..., None] / c4 for x in (ld.now, ld.q50, ld.q90))
    vd_now, vd90 = (_take(x, top)[..., None] / d_c4 for x in (ld.now, ld.q90))
    d_now, d50, d90 = (_take(x, dst)[:, None, None, :] for x in (ld.load_now, ld.load50, ld.load90))
    vc = _take(state.vcpus, top)[..., None]
    mc = _take(state.mem_cap_gib, top)[..., None]
    d_vc = _take(state.host_vcpus, dst)[:, None, None, :]
    d_mc = _take(state.host_mem_cap, dst)[:, None, None, :]
    ok = top_ok[..., None] & (dst[:, None, None, :] != src[:, :, None, None])
    ok = ok & _take(hv & state.placeable, dst)[:, None, None, :]
    vcl = _take(state.vcpu_limit, dst)[:, None, None, :]
    ok = ok & (d_vc + vc <= vcl + 1e-9)
    ok = ok & (d_mc + mc <= _take(state.mem_limit, dst)[:, None, None, :] + 1e-9)
    src_ex = np.maximum(s90 - 1.0, 0.0)
    src_after = np.maximum(s90 - v90 - 1.0, 0.0)
    dst_after = np.maximum(d90 + vd90 - 1.0, 0.0)
    relief_now = (np.maximum(s_now - 1.0, 0.0) - np.maximum(s_now - v_now - 1.0, 0.0)
                  - (np.maximum(d_now + vd_now - 1.0, 0.0) - np.maximum(d_now - 1.0, 0.0)))
    if mode == "no-history":
        h_mean = h_max = h_std = np.zeros((e_n, s_n, k, 1))
    else:
        past = np.take_along_axis(state.history[..., :-1], top.reshape(e_n, -1)[..., None], axis=1)
        past = past.reshape(e_n, s_n, k, state.history.shape[2] - 1)  # explicit: k is 0 on a fleet without VMs
        h_mean, h_max, h_std = (f(past, axis=3)[..., None] / c4 for f in (np.mean, np.max, np.std))
    mean_load = (ld.load_now * hv).sum(axis=1) / np.maximum(hv.sum(axis=1), 1)
    max90 = np.where(hv, ld.load90, -np.inf).max(axis=1)
    cols = [s_now, s50, s90, d_now, d50, d90, v_now, v50, v90, src_ex, src_after, dst_after,
            (src_ex - src_after) - (dst_after - np.maximum(d90 - 1.0, 0.0)), relief_now,
            _take(state.mem_gib, top)[..., None] / 64.0, h_mean, h_max, h_std,
            np.minimum(_take(state.since_move, top), 12.0)[..., None] / 12.0,
            (vcl - d_vc - vc) / vcl, mean_load[:, None, None, None], max90[:, None, None, None], 0.0, 0.0]
    return cols, ok


def candidates(state: BalanceState, forecaster: Forecaster | None, mode: str = "full",
               threshold: float = 1.0) -> Candidates:
    """The candidate moves and features of every fleet in ``state`` (see the module docstring).

    Figures are computed at the level they vary on (source host, VM, destination, pair) and
    broadcast into one preallocated array, which keeps a batch of 64 fleets at a few milliseconds."""
    if mode not in MODES:
        raise ValueError(f"unknown feature mode {mode!r}: use {', '.join(MODES)}")
    ld = _loads(state, forecaster, mode)
    src, top, top_ok, dst = _pairs(state, ld)
    cols, ok = _columns(state, ld, (src, top, top_ok, dst), mode)
    e_n, s_n, k = top.shape
    shape, n = (e_n, s_n, k, dst.shape[1]), s_n * k * dst.shape[1]
    feats = np.empty((*shape, len(cols)), dtype=np.float32)
    for j, col in enumerate(cols):
        feats[..., j] = col
    ok = np.broadcast_to(ok, shape).reshape(e_n, n)
    feats = feats.reshape(e_n, n, len(cols))
    feats[~ok] = 0.0
    scale = np.broadcast_to((_take(state.cores, src)[:, :, None, None] / _take(state.cores, dst)[:, None, None, :])
                            .astype(np.float32), shape).reshape(e_n, n)
    gain = _fallback_scores(feats, ok, threshold, scale)  # what the fallback would do, from the figures above
    acts = gain.max(axis=1, initial=-np.inf) > -np.inf
    pick = np.where(acts, gain.argmax(axis=1), -1) if n else np.full(e_n, -1)  # n is 0 when no VM runs
    feats[..., CANDIDATE_FEATURES.index("fallback_acts")] = acts[:, None]
    feats[np.arange(e_n)[acts], pick[acts], CANDIDATE_FEATURES.index("fallback_pick")] = 1.0
    feats[~ok] = 0.0
    vm = np.broadcast_to(top[..., None], shape).reshape(e_n, n)
    dh = np.broadcast_to(dst[:, None, None, :], shape).reshape(e_n, n)
    return Candidates(vm, dh, ok, feats, _globals(state, ld, feats, ok, gain), scale)


def _globals(state: BalanceState, ld: _Loads, feats: np.ndarray, ok: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """The fleet figures the "do nothing" scorer reads."""
    hv = state.host_valid
    n_valid = np.maximum(hv.sum(axis=1), 1)
    acts = gain.max(axis=1, initial=-np.inf) > -np.inf
    max_now = np.where(hv, ld.load_now, -np.inf).max(axis=1)
    max90 = np.where(hv, ld.load90, -np.inf).max(axis=1)
    mean_load = (ld.load_now * hv).sum(axis=1) / n_valid
    best_now = np.where(ok, feats[..., CANDIDATE_FEATURES.index("relief_now")], 0.0).max(axis=1, initial=0.0)
    best_q90 = np.where(ok, feats[..., CANDIDATE_FEATURES.index("relief_q90")], 0.0).max(axis=1, initial=0.0)
    best_gain = np.where(acts, gain.max(axis=1, initial=-np.inf), 0.0) / 100.0
    return np.stack([max_now, max90, ((ld.load90 > 1.0) & hv).sum(axis=1) / n_valid,
                     ((ld.load_now > 1.0) & hv).sum(axis=1) / n_valid, mean_load, best_now, best_q90,
                     acts.astype(np.float64), best_gain], axis=-1).astype(np.float32)


PRIOR_ACT = 5.0  #: prior logit of a move the fallback would make (above "do nothing" at 0), plus its gain
PRIOR_GAIN = 1.0  #: prior logit per point of gain (overload relieved x100 + the hotter end's drop)
PRIOR_SKIP = -10.0  #: prior logit of an allowed move the fallback would not make: with a few hundred
#: candidates, "do nothing" stays about 99 % likely when sampling where the fallback would not act


def _fallback_scores(f: np.ndarray, mask: np.ndarray, threshold: float, scale: np.ndarray | None = None) -> np.ndarray:
    """(E, N) the fallback's gain for each move it would consider, -inf for the others. ``scale``: source cores
    over destination cores per candidate (the VM's share of the destination is its share of the source times it)."""
    i = CANDIDATE_FEATURES.index
    src_now = f[..., i("src_load_now")]
    v_now = f[..., i("vm_now")]
    after_dst = f[..., i("dst_load_now")] + (v_now if scale is None else v_now * scale)
    hotter_after = np.maximum(src_now - v_now, after_dst)
    acts = mask & (src_now > threshold) & (after_dst < src_now)
    gain = f[..., i("relief_now")] * 100 + np.maximum(src_now - hotter_after, 0.0)
    return np.where(acts, gain, -np.inf)


def prior_logits(cand: Candidates, threshold: float = 1.0, act: float = PRIOR_ACT, per_gain: float = PRIOR_GAIN
                 ) -> np.ndarray:
    """The heuristic fallback as logits: (E, N + 1), "do nothing" first at 0; disallowed moves -inf.

    React to what is measured now: when a source host is above ``threshold`` of its cores, a move that
    lowers its load without making the destination hotter than the source was scores ``act`` plus
    ``per_gain`` x its gain: the overload it relieves now (x100, in shares of a host) plus how much it
    lowers the hotter end; every other allowed move scores ``PRIOR_SKIP``. Its argmax is the fallback's
    decision (ablation a: no forecast, no history, no network), whatever ``act`` and ``per_gain``; they set
    how sharply a residual policy samples around it."""
    gain = _fallback_scores(cand.features, cand.mask, threshold, cand.dst_scale)
    scores = np.where(gain > -np.inf, act + per_gain * gain, PRIOR_SKIP)
    scores = np.where(cand.mask, scores, -np.inf)
    return np.concatenate([np.zeros((scores.shape[0], 1)), scores], axis=1).astype(np.float32)

