"""Training the placement scorer by imitating a lookahead planner in the balance scenario.

Method (imitation of a lookahead planner):

1. Split the Bitbrains VMs by a hash of their name: 60 % train, 40 % held out (never seen).
2. Replay the training VMs in the fleet simulator. At sampled steps, take a VM and its
   feasible destinations (the same constraint mask ``place`` and ``rebalance`` use).
3. The planner looks ahead ``horizon`` steps in the trace, which a real scheduler cannot,
   and scores each destination by the overload it would see there (host-steps above
   100 % CPU, then the peak utilisation). Its softmax over destinations is the target.
4. The scorer sees only what a scan shows now (the features), and learns to rank
   destinations as the planner would: a listwise cross-entropy, Adam, fixed seed.

The result is reproducible from the seed; the learning curve goes to CSV and PNG.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from llmvirt.model.arrays import FleetSetup, expected_util
from llmvirt.policy import checkpoint
from llmvirt.policy.constraints import migration_mask, request_of
from llmvirt.policy.features import pair_features
from llmvirt.policy.model import PlacementScorer
from llmvirt.policy.sim_adapter import limits_for
from llmvirt.sim.fleet import BALANCE_SETUP, FleetSim
from llmvirt.sim.split import TRAIN_FRACTION, split, split_meta
from llmvirt.sim.traces import UsageTrace


@dataclass
class TrainConfig:
    """Hyper-parameters, one place, each with its reason."""

    seed: int = 0  #: everything random derives from this
    samples: int = 3000  #: decisions sampled from the training replay
    horizon: int = 24  #: look-ahead steps of the planner (2 hours of 300 s)
    temperature: float = 0.25  #: softness of the planner's target distribution
    epochs: int = 60  #: passes over the samples
    lr: float = 3e-3  #: Adam learning rate
    hidden: int = 64  #: MLP width
    train_fraction: float = TRAIN_FRACTION  #: share of VMs used for training (llmvirt.sim.split); the rest is held out


def _planner_cost(trace: UsageTrace, placement: np.ndarray, move: tuple[int, int], t: int, horizon: int,
                  host_mhz: float) -> float:
    """Future overload on the destination with the VM there (``move``: VM index, destination host index):
    host-steps above capacity, plus the peak utilisation."""
    vm, dst = move
    end = min(trace.cpu_mhz.shape[1], t + 1 + horizon)
    on = (placement == dst) & (np.arange(placement.size) != vm)
    load = trace.cpu_mhz[on, t + 1:end].sum(axis=0) + trace.cpu_mhz[vm, t + 1:end]
    util = load / host_mhz
    return float((util > 1.0).sum()) + float(util.max(initial=0.0))


def collect(trace: UsageTrace, cfg: TrainConfig,
            setup: FleetSetup = BALANCE_SETUP) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sampled decisions: (candidate features, planner target distribution)."""
    rng = np.random.default_rng(cfg.seed)
    sim = FleetSim(trace, setup, extra_hosts=1)
    limits = limits_for(setup)
    steps = trace.cpu_mhz.shape[1] - cfg.horizon - 1
    samples: list[tuple[np.ndarray, np.ndarray]] = []
    while len(samples) < cfg.samples:
        t = int(rng.integers(0, steps))
        view = sim.view(t)
        cluster = view.to_cluster()
        vm_index, host_index = view.names(cluster)
        vm_idx = int(rng.integers(0, len(trace.names)))
        src = cluster.hosts[int(view.vm_host[vm_idx])]
        vm = next((v for v in src.vms if vm_index.get(v.name) == vm_idx), None)
        if vm is None:
            continue
        verdict = migration_mask(cluster, vm, src, limits, {})
        cands = [src] + [h for h in cluster.hosts if h.name in verdict.feasible]
        if len(cands) < 2:
            continue
        req = request_of(vm)
        util = expected_util(vm.cpu_util)
        feats = np.stack([pair_features(h, req, util, limits, current=h is src, exclude_vm=vm.name) for h in cands])
        cost = np.array([_planner_cost(trace, view.vm_host, (vm_idx, host_index[h.name]), t, cfg.horizon,
                                       setup.host_mhz) for h in cands])
        target = np.exp(-(cost - cost.min()) / cfg.temperature)
        samples.append((feats, target / target.sum()))
    return samples


def train(trace: UsageTrace, out: Path, cfg: TrainConfig, scenario: str = "balance",
          trace_label: str = "") -> dict[str, float]:
    """Train on the training split of ``trace``, write the checkpoint and the learning curve to ``out``."""
    torch.manual_seed(cfg.seed)
    train_idx, held_idx = split(trace.names, cfg.train_fraction)
    t0 = time.perf_counter()
    data = collect(trace.select(train_idx), cfg)
    n_val = max(1, len(data) // 10)
    val, fit = data[:n_val], data[n_val:]
    model = PlacementScorer(hidden=cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    curve: list[tuple[int, float, float, float]] = []

    def epoch_loss(batch: list[tuple[np.ndarray, np.ndarray]], learn: bool) -> tuple[float, float]:
        total, agree = 0.0, 0
        for feats, target in batch:
            logits = model(torch.from_numpy(feats))
            loss = -(torch.from_numpy(target).float() * torch.log_softmax(logits, dim=0)).sum()
            if learn:
                opt.zero_grad()
                loss.backward()
                opt.step()
            total += float(loss.detach())
            agree += int(int(logits.argmax()) == int(np.argmax(target)))
        return total / len(batch), agree / len(batch)

    rng = np.random.default_rng(cfg.seed)
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(fit))
        train_loss, _ = epoch_loss([fit[i] for i in order], learn=True)
        with torch.no_grad():
            val_loss, val_agree = epoch_loss(val, learn=False)
        curve.append((epoch + 1, train_loss, val_loss, val_agree))
    seconds = time.perf_counter() - t0
    metrics = {"train_loss": curve[-1][1], "val_loss": curve[-1][2], "val_agreement_with_planner": curve[-1][3],
               "train_seconds": round(seconds, 1)}
    checkpoint.save(model, out, {
        "name": out.name, "scenario": scenario, "goal": "balance",
        "method": "imitation of a lookahead planner (future overload on the destination)",
        "training_data": split_meta(trace_label, train_idx, held_idx),
        "config": asdict(cfg), "seed": cfg.seed, "metrics": metrics,
    })
    _write_curve(out, curve)
    return metrics


def _write_curve(out: Path, curve: list[tuple[int, float, float, float]]) -> None:
    with (out / "learning_curve.csv").open("w") as f:
        f.write("epoch,train_loss,val_loss,val_agreement\n")
        f.writelines(f"{e},{a:.5f},{b:.5f},{c:.4f}\n" for e, a, b, c in curve)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ep = [c[0] for c in curve]
    ax[0].plot(ep, [c[1] for c in curve], label="train")
    ax[0].plot(ep, [c[2] for c in curve], label="validation")
    ax[0].set(title="listwise cross-entropy", xlabel="epoch")
    ax[0].legend()
    ax[1].plot(ep, [c[3] for c in curve])
    ax[1].set(title="agreement with the planner (validation)", xlabel="epoch")
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=100)
    plt.close(fig)
