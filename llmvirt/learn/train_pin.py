"""Training the pinning head by imitating a look-ahead planner in the pinning scenario.

1. Pack the training VMs (the same hash split as the other heads) onto two-cell hosts.
2. At sampled (host, decision step) pairs, decide the host's VMs busiest first. For each VM the
   planner scores every candidate pinning by the extra work the contention model predicts over
   the next ``horizon`` steps for the VMs decided so far plus this one, using their *future*
   demand, which a real scheduler cannot see. Its softmax over candidates is the target; the
   planner's choice is then recorded and the next VM decided (teacher forcing).
3. The scorer sees only what a scan shows (busy vCPUs now and at the last hour's peak, sizes,
   loads) and learns to rank candidates as the planner would: listwise cross-entropy, Adam.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from llmvirt.policy import checkpoint
from llmvirt.policy.pin_head import PEAK_WINDOW, SPEC, HostState, PinScorer, candidate_features, candidates
from llmvirt.sim import numa
from llmvirt.sim.pinning import PIN_SETUP, PinSetup, demand_cores, pack
from llmvirt.sim.split import TRAIN_FRACTION, split, split_meta
from llmvirt.sim.traces import UsageTrace


@dataclass
class PinTrainConfig:
    """Hyper-parameters of the pinning head, one place."""

    seed: int = 0  #: everything random derives from this
    decisions: int = 200  #: sampled (host, step) pairs
    horizon: int = 12  #: look-ahead steps of the planner (the decision interval)
    temperature: float = 0.05  #: softness of the planner's target (in units of extra busy vCPU-steps per vCPU)
    epochs: int = 40  #: passes over the samples
    lr: float = 3e-3  #: Adam learning rate
    hidden: int = 32  #: MLP width
    train_fraction: float = TRAIN_FRACTION  #: share of VMs used for training (llmvirt.sim.split)


def _extra_work(topo: numa.Topology, future: np.ndarray, vcpus: np.ndarray, mem: np.ndarray,
                codes: np.ndarray) -> float:
    """Busy vCPU-steps lost to contention over ``future`` (VMs x steps) with these pinnings."""
    total = 0.0
    for t in range(future.shape[1]):
        d = future[:, t]
        total += float((d * (numa.slowdowns(topo, numa.Guests(d, vcpus, mem), numa.Pinning(codes)) - 1.0)).sum())
    return total


def collect(trace: UsageTrace, cfg: PinTrainConfig, setup: PinSetup) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sampled decisions: (candidate features, planner target distribution)."""
    rng = np.random.default_rng(cfg.seed)
    host = pack(trace, setup)
    demand = demand_cores(trace)
    steps = demand.shape[1]
    mem_all = trace.mem_capacity_mib.astype(float)
    cands = candidates(setup.topo)
    samples: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(cfg.decisions):
        h = int(rng.integers(0, int(host.max()) + 1))
        t = int(rng.integers(PEAK_WINDOW, steps - cfg.horizon - 1))
        idx = np.flatnonzero(host == h)
        now, peak = demand[idx, t], demand[idx, t - PEAK_WINDOW + 1:t + 1].max(axis=1)
        future = demand[idx, t + 1:t + 1 + cfg.horizon]
        vcpus, mem = trace.vcpus[idx], mem_all[idx]
        state = HostState(setup.topo)
        decided: list[int] = []
        codes = np.full(idx.size, numa.SHARED)
        for v in np.argsort(-peak, kind="stable"):
            feats = candidate_features(state, float(now[v]), float(peak[v]), int(vcpus[v]), float(mem[v]))
            sel = np.array([*decided, v])
            cost = []
            for code in cands:
                trial = codes[sel].copy()
                trial[-1] = code
                cost.append(_extra_work(setup.topo, future[sel], vcpus[sel], mem[sel], trial))
            cost_arr = np.asarray(cost) / max(1.0, float(vcpus[v]) * cfg.horizon)
            target = np.exp(-(cost_arr - cost_arr.min()) / cfg.temperature)
            samples.append((feats, (target / target.sum()).astype(np.float32)))
            best = cands[int(np.argmin(cost_arr))]
            codes[v] = best
            decided.append(int(v))
            state.add(best, float(peak[v]), float(mem[v]))
    return samples


def train(trace: UsageTrace, out: Path, cfg: PinTrainConfig, setup: PinSetup = PIN_SETUP,
          trace_label: str = "") -> dict:
    """Train on the training VMs and write ``pin.safetensors`` + ``pin.json`` into ``out``."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    train_idx, held_idx = split(trace.names, cfg.train_fraction)
    data = collect(trace.select(train_idx), cfg, setup)
    n_val = max(1, len(data) // 10)
    val, fit = data[:n_val], data[n_val:]
    model = PinScorer(hidden=cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    curve = []
    for epoch in range(cfg.epochs):
        total = 0.0
        for i in rng.permutation(len(fit)):
            feats, target = fit[i]
            loss = -(torch.from_numpy(target) * torch.log_softmax(model(torch.from_numpy(feats)), dim=0)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        with torch.no_grad():
            agree = np.mean([int(model(torch.from_numpy(f)).argmax()) == int(np.argmax(t)) for f, t in val])
        curve.append((epoch + 1, total / len(fit), float(agree)))
    model.eval()
    metrics = {"train_loss": curve[-1][1], "val_agreement_with_planner": curve[-1][2], "samples": len(data),
               "train_seconds": round(time.perf_counter() - t0, 1)}
    checkpoint.save_head(model, out, SPEC, model.config(), {
        "scenario": "pinning", "goal": "lowest contention-weighted slowdown at the same VM density",
        "method": "imitation of a look-ahead planner (future extra work under the NUMA contention model)",
        "contention_model": {"remote_penalty": numa.REMOTE_PENALTY, "topology": asdict(setup.topo),
                             "vcpu_ratio": setup.vcpu_ratio},
        "training_data": split_meta(trace_label, train_idx, held_idx),
        "config": asdict(cfg), "seed": cfg.seed, "metrics": metrics})
    with (out / "pin_curve.csv").open("w") as f:
        f.write("epoch,train_loss,val_agreement\n")
        f.writelines(f"{e},{a:.5f},{b:.4f}\n" for e, a, b in curve)
    return metrics
