"""The sim-to-production gap, and how much of it retraining from recorded outcomes closes (issue 7).

"Production" differs from the training simulator in its workload mix: the held-out Bitbrains VMs
with a nightly-batch-like pattern added, a memory burst of +25 % of each VM's size for 30 minutes
every 6 hours (at a VM-specific phase). The first half of the production week is the recorded
period: the simulator-trained balloon head runs there, and what it sees (each VM's memory use at
every step after its forecast) is recorded as outcomes. Three balloon heads are then compared on
the second half, by the memory scenario's reward (:func:`llmvirt.model.score.reward`):

- **sim-only**: the shipped head, trained on the training VMs without bursts;
- **outcome-retrained**: the sim-only head fine-tuned on the recorded outcomes and its operating
  point chosen again on the replayed recorded period, with the same code as
  ``llmvirt train --from-store`` (:mod:`llmvirt.learn.finetune`);
- **production-trained**: a head trained from scratch on the recorded period, with its operating
  point chosen there (what one would get by training directly on production conditions).

Gap closed = (outcome-retrained - sim-only) / (production-trained - sim-only).

Usage: python bench/outcome_gap.py [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

from llmvirt.learn.finetune import FinetuneConfig, finetune_balloon, recalibrate
from llmvirt.learn.train_balloon import BalloonTrainConfig, calibrate, fit, trace_features
from llmvirt.model.score import reward
from llmvirt.policy import balloon_head
from llmvirt.policy.balloon_head import BalloonHead
from llmvirt.policy.decide import DEFAULT_POLICY
from llmvirt.policy.sim_adapter import LearnedBalloon
from llmvirt.sim.fleet import MEMORY_SETUP, FleetSim
from llmvirt.sim.split import split
from llmvirt.sim.traces import UsageTrace, load_bitbrains

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TRACE = SHARED / "traces" / "bitbrains-rnd" / "rnd_2013-7_week1.tar.gz"


def production(trace: UsageTrace, seed: int) -> UsageTrace:
    """The same VMs under a different workload mix: periodic memory bursts."""
    rng = np.random.default_rng(seed)
    steps = trace.mem_mib.shape[1]
    period, burst = 72, 6  # 6 h and 30 min in 300 s steps
    phase = rng.integers(0, period, trace.mem_mib.shape[0])
    on = ((np.arange(steps)[None, :] + phase[:, None]) % period) < burst
    mem = np.minimum(trace.mem_mib + on * 0.25 * trace.mem_capacity_mib[:, None], trace.mem_capacity_mib[:, None])
    return UsageTrace(trace.names, trace.interval_s, trace.vcpus, trace.cpu_capacity_mhz, trace.cpu_mhz,
                      trace.mem_capacity_mib, mem, trace.notes)


def window(trace: UsageTrace, start: int, end: int) -> UsageTrace:
    """Steps [start, end) of a trace."""
    return UsageTrace(trace.names, trace.interval_s, trace.vcpus, trace.cpu_capacity_mhz,
                      trace.cpu_mhz[:, start:end], trace.mem_capacity_mib, trace.mem_mib[:, start:end], trace.notes)


def score(head: BalloonHead, trace: UsageTrace) -> tuple[float, dict[str, float]]:
    """Memory-scenario reward of a head on a trace, and its headline figures."""
    m = FleetSim(trace, MEMORY_SETUP).run(balloon=LearnedBalloon(head=head))
    s = m.summary()
    return reward(m.score(), "memory"), {k: round(s[k], 2) for k in ("reclaimed_gib_avg", "guest_pressure_h")}


def main() -> None:
    """Run the experiment and print a markdown table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    full = load_bitbrains(TRACE)
    _, held = split(full.names)
    prod = production(full.select(held), args.seed)
    half = prod.mem_mib.shape[1] // 2
    recorded, later = window(prod, 0, half), window(prod, half, prod.mem_mib.shape[1])


    sim_only = balloon_head.load(DEFAULT_POLICY)
    print(f"# sim-to-production gap, balloon head, {platform.machine()} {date.today()}, seed {args.seed}\n")
    print("| recorded | head | reward (memory) | reclaimed GiB | pressure h |\n|---|---|---|---|---|")
    base_r, base_s = score(sim_only, later)
    print(f"| - | sim-only | {base_r:.2f} | {base_s['reclaimed_gib_avg']} | {base_s['guest_pressure_h']} |")
    for days in (3.5, 1.0):
        rec = window(recorded, 0, int(days * 288))
        heads = _heads(rec, args.seed)
        r = {name: score(h, later) for name, h in heads.items()}
        for name, (rw, sm) in r.items():
            print(f"| {days} d | {name} | {rw:.2f} | {sm['reclaimed_gib_avg']} | {sm['guest_pressure_h']} |")
        closed = (r["outcome-retrained"][0] - base_r) / (r["production-trained"][0] - base_r)
        print(f"| {days} d | **gap closed by outcome retraining** | {100 * closed:.0f} % | | |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


def _heads(rec: UsageTrace, seed: int) -> dict[str, BalloonHead]:
    """The heads built from a recorded period: recalibrated only, outcome-retrained, production-trained."""
    feats, use = trace_features(rec)  # what the running head saw, and the use that followed
    x, y = feats[:, :-1].reshape(-1, feats.shape[2]), use[:, 1:].reshape(-1)
    ft_cfg = FinetuneConfig(seed=seed)
    recal = balloon_head.load(DEFAULT_POLICY)
    recal.point, _ = recalibrate(recal.model, rec, ft_cfg)
    retrained = balloon_head.load(DEFAULT_POLICY)
    finetune_balloon(retrained.model, (x, y), x, ft_cfg)
    retrained.point, _ = recalibrate(retrained.model, rec, ft_cfg)
    cfg = BalloonTrainConfig(seed=seed)
    model, _ = fit(feats, use, cfg)
    point, _ = calibrate(model, rec, cfg)
    return {"operating point re-chosen only": recal, "outcome-retrained": retrained,
            "production-trained": BalloonHead(model, point)}


if __name__ == "__main__":
    main()
