"""The balloon head with pressure feedback against MOM and Proxmox on held-back VMs, with ablations (issue 16).

1. Operating points are chosen by cross-validation over the two groups of *training* VMs, July
   week 1 and August (the split every head uses): the most memory reclaimed on the worst group while
   guest-pressure time stays at or under MOM's there (``--pressure-factor``, 1.0). Three families, each
   chosen the same way: the forecaster with pressure feedback (what ships), the forecaster with one
   fixed margin (feedback ablated), and "the maximum of the last day" with pressure feedback (the
   forecaster ablated).
2. On the *held-back* VMs of each trace, five seeds (each a random 80 % of them, same draws for every
   policy): no ballooning, MOM, Proxmox's auto-ballooning, the head at its previous operating point,
   and the three chosen above. Reclaimed memory and guest-pressure time, as multiples of MOM's.

Usage: python bench/balloon_feedback.py [--seeds 5] [--write-policy]
``--write-policy`` stores the chosen operating point in policies/default/balloon.json.
Writes bench/balloon_feedback.json and prints the tables for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmvirt.bench.balance_rl import trace_families
from llmvirt.learn import balloon_calibration as bc
from llmvirt.learn.train_balloon import BalloonTrainConfig
from llmvirt.policy import balloon_head
from llmvirt.policy.balloon_head import BalloonHead, OperatingPoint
from llmvirt.policy.sim_adapter import LearnedBalloon
from llmvirt.sim.field_balloons import MomBalloon, NoBalloon, ProxmoxAutoBalloon
from llmvirt.sim.split import split
from llmvirt.sim.traces import load_bitbrains

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")
POLICY = ROOT / "policies/default"


def summary(res: dict[str, float]) -> dict[str, float]:
    """The figures the tables show."""
    return {"reclaimed_gib_avg": res["reclaimed_gib_avg"], "guest_pressure_h": res["guest_pressure_h"],
            "mem_overload_h": res["mem_overload_h"]}


def main() -> None:
    """Cross-validate, evaluate on held-back VMs, print, write JSON (and the policy's operating point)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--pressure-factor", type=float, default=1.0)
    ap.add_argument("--write-policy", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/balloon_feedback.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    head = balloon_head.load(POLICY)
    model = head.model
    frac = BalloonTrainConfig().train_fraction
    traces = {k: load_bitbrains(p) for k, p in TRACES.items()}
    splits = {k: split(t.names, frac) for k, t in traces.items()}
    train_parts = {k: t.select(splits[k][0]) for k, t in traces.items()}
    out: dict[str, Any] = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor()}",
                           "pressure_factor": args.pressure_factor, "previous_point": head.point.describe(),
                           "cv": {}, "chosen": {}, "held_back": {}}

    # 1. cross-validation on the training VMs
    g_fc = bc.groups(train_parts, lambda p: bc.forecasts(model, p))
    g_max = bc.groups(train_parts, bc.max_last_day)
    out["mom_train"] = {g.label: summary(g.mom) for g in g_fc}
    families = {"forecast + feedback": (bc.feedback_grid(), g_fc),
                "forecast, fixed margin": (bc.fixed_grid(), g_fc),
                "max of last day + feedback": (bc.feedback_grid(quantiles=(0,), bases=(0.1, 0.2, 0.3),
                                                                narrows=(0.99, 0.998), floors=(0.05,)), g_max)}
    chosen: dict[str, OperatingPoint] = {}
    for name, (grid, gs) in families.items():
        rows = bc.cross_validate(model, grid, gs)
        point, row = bc.choose(grid, rows, args.pressure_factor)
        chosen[name] = point
        out["cv"][name] = rows
        out["chosen"][name] = row
        print(f"{name}: chose {point.describe()} (worst training group: {row['worst_x_mom_reclaimed']:.2f}x MOM's "
              f"memory at {row['worst_x_mom_pressure']:.2f}x MOM's pressure; {time.perf_counter() - t0:.0f} s)")

    args.out.write_text(json.dumps(out, indent=1) + "\n")  # the choice is kept even if evaluation fails

    # 2. held-back VMs, seeds of 80 % draws
    for label, trace in traces.items():
        held = trace.select(splits[label][1])
        runs: dict[int, dict[str, dict[str, float]]] = {}
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(len(held.names), size=int(0.8 * len(held.names)), replace=False))
            part = held.select(idx)
            fc, mx = bc.forecasts(model, part), bc.max_last_day(part)
            pols: dict[str, Any] = {"no-balloon": NoBalloon(), "mom": MomBalloon(), "proxmox": ProxmoxAutoBalloon(),
                                    "head, previous point": LearnedBalloon(head=head, forecasts=fc)}
            for name, point in chosen.items():
                need = mx if name.startswith("max") else fc
                pols[name] = LearnedBalloon(head=BalloonHead(model, point), forecasts=need)
            runs[seed] = {k: summary(bc.memory_run(part, p)) for k, p in pols.items()}
        out["held_back"][label] = runs
        _print(label, runs, len(held.names))
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out} in {out['wall_s']:.0f} s")
    if args.write_policy:
        _write_policy(chosen["forecast + feedback"], out)


def _ratio(a: float, b: float) -> float:
    """a / b; inf when only b is 0, 1 when both are."""
    if b > 0:
        return a / b
    return 1.0 if a == 0 else float("inf")


def _print(label: str, runs: dict, n_held: int) -> None:
    seeds = sorted(runs)
    names = list(runs[seeds[0]])
    print(f"\n{label}, held-back VMs ({n_held}; each seed a random 80 %): reclaimed GiB (average over time) and "
          "guest-pressure hours, mean and min-max over seeds; x MOM pools all seeds (sum over sum)")
    print("| policy | reclaimed GiB (min-max) | pressure h (min-max) | x MOM reclaimed | x MOM pressure |")
    print("|---|---|---|---:|---:|")
    mom_rec = sum(runs[s]["mom"]["reclaimed_gib_avg"] for s in seeds)
    mom_pres = sum(runs[s]["mom"]["guest_pressure_h"] for s in seeds)
    for n in names:
        rec = [runs[s][n]["reclaimed_gib_avg"] for s in seeds]
        pres = [runs[s][n]["guest_pressure_h"] for s in seeds]
        print(f"| {n} | {statistics.mean(rec):.1f} ({min(rec):.1f}-{max(rec):.1f}) | "
              f"{statistics.mean(pres):.2f} ({min(pres):.2f}-{max(pres):.2f}) | {_ratio(sum(rec), mom_rec):.2f} | "
              f"{_ratio(sum(pres), mom_pres):.2f} |")


def _write_policy(point: OperatingPoint, out: dict[str, Any]) -> None:
    path = POLICY / "balloon.json"
    meta = json.loads(path.read_text())
    meta["operating_point"] = point.describe()
    meta["method"] = ("quantile regression (pinball loss) of next-step memory use, plus per-VM pressure feedback; "
                      "operating point chosen by cross-validation over the training VMs of July week 1 and August "
                      "(worst group, pressure at most MOM's; bench/balloon_feedback.py)")
    meta.setdefault("metrics", {})["operating_point_cv"] = {
        "pressure_factor": out["pressure_factor"], "worst_group": {
            k: out["chosen"]["forecast + feedback"][k] for k in ("worst_x_mom_reclaimed", "worst_x_mom_pressure")}}
    path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote the operating point {point.describe()} to {path}")


if __name__ == "__main__":
    main()
