"""Training the balloon head on the training split of the Bitbrains VMs.

1. Features and next-step use for every (VM, step) of the training VMs, from their history
   only (:func:`trace_features`; the same features the head reads on real hosts).
2. Fit :class:`BalloonForecaster` with the pinball loss on :data:`QUANTILES` (Adam, fixed seed).
3. Choose the operating point on the *training* VMs in the memory scenario: of a grid of
   (quantile, margin), the one that reclaims most memory while its guest-pressure time stays
   at or under 0.7 x MOM's on the same VMs (a safety factor for VMs the head has not seen).
   The held-out VMs are never looked at.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from llmvirt.policy import checkpoint
from llmvirt.policy.balloon_head import DAY, HOUR, QUANTILES, SPEC, BalloonForecaster, BalloonHead, OperatingPoint
from llmvirt.policy.sim_adapter import LearnedBalloon
from llmvirt.sim.field_balloons import MomBalloon
from llmvirt.sim.fleet import MEMORY_SETUP, FleetSim
from llmvirt.sim.split import TRAIN_FRACTION, split, split_meta
from llmvirt.sim.traces import UsageTrace


@dataclass
class BalloonTrainConfig:
    """Hyper-parameters of the balloon head, one place."""

    seed: int = 0  #: everything random derives from this
    samples: int = 200_000  #: (VM, step) pairs drawn from the training VMs
    epochs: int = 25  #: passes over the samples
    batch: int = 2048  #: minibatch size
    lr: float = 3e-3  #: Adam learning rate
    hidden: int = 32  #: MLP width
    train_fraction: float = TRAIN_FRACTION  #: share of VMs used for training (llmvirt.sim.split)
    margins: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)  #: operating-point grid
    pressure_factor: float = 0.7  #: operating point: pressure at most this x MOM's on the training VMs


def trace_features(trace: UsageTrace) -> tuple[np.ndarray, np.ndarray]:
    """Features of every (VM, step) from the history up to that step, and the use fractions (n, T)."""
    use = trace.mem_mib / np.maximum(trace.mem_capacity_mib, 1.0)[:, None]
    n, steps = use.shape
    padded = np.concatenate([np.repeat(use[:, :1], DAY - 1, axis=1), use], axis=1)
    day = sliding_window_view(padded, DAY, axis=1)  # (n, T, DAY), no copy
    hour = sliding_window_view(padded[:, DAY - HOUR:], HOUR, axis=1)
    c1 = np.cumsum(np.concatenate([np.zeros((n, 1)), padded], axis=1), axis=1)
    c2 = np.cumsum(np.concatenate([np.zeros((n, 1)), padded ** 2], axis=1), axis=1)
    mean = (c1[:, DAY:] - c1[:, :-DAY]) / DAY
    std = np.sqrt(np.maximum((c2[:, DAY:] - c2[:, :-DAY]) / DAY - mean ** 2, 0.0))
    rise = np.concatenate([np.zeros((n, 1)), sliding_window_view(np.diff(padded, axis=1), DAY - 1, axis=1).max(axis=2)],
                          axis=1)[:, -steps:]
    size = np.log2(np.maximum(trace.mem_capacity_mib, 1.0) / 1024.0) / 6.0
    dmax = day.max(axis=2)
    feats = np.stack([use, hour.max(axis=2), dmax, np.maximum.accumulate(use, axis=1), mean, std,
                      np.maximum(rise, 0.0), np.repeat(size[:, None], steps, axis=1)], axis=2)
    return feats.astype(np.float32), use


def pinball(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean pinball (quantile) loss over :data:`QUANTILES`."""
    q = torch.tensor(QUANTILES, dtype=pred.dtype)
    err = target[:, None] - pred
    return torch.maximum(q * err, (q - 1) * err).mean()


def fit(feats: np.ndarray, use: np.ndarray, cfg: BalloonTrainConfig) -> tuple[BalloonForecaster, list[tuple]]:
    """Fit the forecaster on (features at t, use at t+1) pairs; returns it and the learning curve."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    n, steps = use.shape
    vi, ti = rng.integers(0, n, cfg.samples), rng.integers(0, steps - 1, cfg.samples)
    x, y = torch.from_numpy(feats[vi, ti]), torch.from_numpy(use[vi, ti + 1].astype(np.float32))
    n_val = cfg.samples // 10
    model = BalloonForecaster(hidden=cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    curve = []
    for epoch in range(cfg.epochs):
        order = torch.from_numpy(rng.permutation(cfg.samples - n_val) + n_val)
        total = 0.0
        for i in range(0, order.numel(), cfg.batch):
            b = order[i:i + cfg.batch]
            loss = pinball(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * b.numel()
        with torch.no_grad():
            val = float(pinball(model(x[:n_val]), y[:n_val]))
        curve.append((epoch + 1, total / order.numel(), val))
    model.eval()
    return model, curve


def calibrate(model: BalloonForecaster, trace: UsageTrace, cfg: BalloonTrainConfig) -> tuple[OperatingPoint, dict]:
    """The operating point with the most memory reclaimed at ``pressure_factor`` x MOM's pressure or less."""
    mom = FleetSim(trace, MEMORY_SETUP).run(balloon=MomBalloon()).summary()
    best: tuple[OperatingPoint, dict] | None = None
    fallback: tuple[OperatingPoint, dict] | None = None
    for qi in range(len(QUANTILES)):
        for margin in cfg.margins:
            point = OperatingPoint(qi, margin)
            res = FleetSim(trace, MEMORY_SETUP).run(balloon=LearnedBalloon(head=BalloonHead(model, point))).summary()
            if fallback is None or res["guest_pressure_h"] < fallback[1]["guest_pressure_h"]:
                fallback = (point, res)
            if res["guest_pressure_h"] <= cfg.pressure_factor * mom["guest_pressure_h"] and (
                    best is None or res["reclaimed_gib_avg"] > best[1]["reclaimed_gib_avg"]):
                best = (point, res)
    point, res = best or fallback  # type: ignore[misc]
    return point, {"mom_train": {k: mom[k] for k in ("reclaimed_gib_avg", "guest_pressure_h")},
                   "head_train": {k: res[k] for k in ("reclaimed_gib_avg", "guest_pressure_h")}}


def train(trace: UsageTrace, out: Path, cfg: BalloonTrainConfig, trace_label: str = "") -> dict:
    """Train on the training VMs, calibrate there, and write ``balloon.safetensors`` + ``balloon.json``."""
    t0 = time.perf_counter()
    train_idx, held_idx = split(trace.names, cfg.train_fraction)
    part = trace.select(train_idx)
    feats, use = trace_features(part)
    model, curve = fit(feats, use, cfg)
    point, calib = calibrate(model, part, cfg)
    metrics = {"train_pinball": curve[-1][1], "val_pinball": curve[-1][2], **calib,
               "train_seconds": round(time.perf_counter() - t0, 1)}
    checkpoint.save_head(model, out, SPEC, model.config(), {
        "scenario": "memory", "goal": "reclaim memory at less guest pressure than MOM",
        "quantiles": list(QUANTILES), "operating_point": asdict(point),
        "method": "quantile regression (pinball loss) of next-step memory use; operating point chosen on "
                  "the training VMs in the memory scenario",
        "training_data": split_meta(trace_label, train_idx, held_idx),
        "config": asdict(cfg), "seed": cfg.seed, "metrics": metrics})
    with (out / "balloon_curve.csv").open("w") as f:
        f.write("epoch,train_pinball,val_pinball\n")
        f.writelines(f"{e},{a:.6f},{b:.6f}\n" for e, a, b in curve)
    return metrics
