"""How far can a forecast take the best tuned consolidation baseline? It, knowing the next 5 minutes (issue 15).

Not a policy: it reads the future. The best tuned consolidation family (gated THR-MMT, the learned network's
fallback) runs in CloudSim's data centre deciding at every tick on each VM's peak request over the coming
interval (requests move linearly from one sample to the next, so the larger of now and the next sample) instead
of the request now: its overload test, its choice of VMs and hosts, and the hosts' utilisation it consolidates
from. The simulator then plays the real requests. Knowing more, the family's best point moves, so it is tuned
again with the look-ahead, on the training days only, over the grid of ``policies/tuned.json``; the chosen point
then runs once on each held-back day. Its honest cost (kWh + 10 x unmet core-hours + 0.001 x GiB migrated) bounds
what any next-interval forecast can bring to this family. Nothing is chosen from the held-back days; the runner
without the look-ahead reproduces the baseline's recorded runs there (bench/consolidate_net.json; asserted).

Usage: python bench/consolidation_lookahead.py [--out bench/consolidation_lookahead.json]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.model.score import consolidation_cost
from llmvirt.sim.cloudsim_policies import run_policy
from llmvirt.sim.datacenter import cloudsim_datacenter
from llmvirt.sim.engine import Simulation
from llmvirt.sim.split import HELD_DAYS, TRAIN_DAYS
from llmvirt.sim.traces import load_planetlab
from llmvirt.strategies.registry import make_policy
from llmvirt.strategies.tuned import tuned_name

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "tuned:gated-thr-mmt"
RECORDED = ROOT / "bench/consolidate_net.json"  #: the baseline's recorded held-back runs


class LookAhead:
    """``policy`` deciding on the next interval's requests; everything else is the policy's own."""

    def __init__(self, policy: Any) -> None:
        """Wrap ``policy`` (``initial_chooser``, ``decide``)."""
        self.policy, self.name = policy, f"{policy.name}, knowing the next 5 minutes"

    def initial_chooser(self, sim: Simulation) -> Any:
        """The policy's own initial placement."""
        return self.policy.initial_chooser(sim)

    def decide(self, sim: Simulation, t: float) -> list[tuple[int, int]]:
        """The policy's plan with ``sim.req`` and the hosts' utilisation set to the next interval's, restored
        afterwards."""
        dc = sim.dc
        req, util = sim.req, sim.util_mips
        nxt = dc.utilization_at(min(t + dc.interval_s, dc.duration_s)) * dc.vm_mips
        ahead = np.where(sim.alive, np.maximum(req, nxt), 0.0)  # requests move linearly: the interval's peak
        on = sim.alive & (sim.vm_host >= 0)
        hosts = np.bincount(sim.vm_host[on], ahead[on], minlength=dc.n_hosts)
        sim.req, sim.util_mips = ahead, np.minimum(hosts, dc.total_mips) * (util > 0)
        try:
            return self.policy.decide(sim, t)
        finally:
            sim.req, sim.util_mips = req, util


def _day(day: str) -> Any:
    return cloudsim_datacenter(load_planetlab(ROOT.parent / "shared/traces/planetlab" / day))


def tune() -> tuple[str, dict[str, float]]:
    """The gated family's grid, with the look-ahead, on the training days: the point with the lowest mean cost."""
    grid = [g["name"] for g in json.loads((ROOT / "policies/tuned.json").read_text())["families"]["gated-thr-mmt"]
            ["grid"]]
    days = [_day(d) for d in TRAIN_DAYS]
    costs = {name: float(np.mean([consolidation_cost(run_policy(Simulation(dc), LookAhead(make_policy(name))))
                                  for dc in days])) for name in grid}
    return min(costs, key=costs.__getitem__), costs


def main() -> None:
    """Tune with the look-ahead on the training days; the baseline and the look-ahead on every held-back day."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench/consolidation_lookahead.json")
    args = ap.parse_args()
    best, grid = tune()
    doc: dict[str, Any] = {"date": date.today().isoformat(), "baseline": BASELINE, "look_ahead_point": best,
                           "training_costs": grid, "days": {}}
    own = tuned_name(BASELINE.split(":", 1)[1])
    print(f"tuned with the look-ahead on {', '.join(TRAIN_DAYS)}: {best} ({grid[best]:.1f} mean; {grid[own]:.1f} at "
          f"the baseline's own point, {own})\n")
    print(f"| held-back day | {BASELINE} | {best}, knowing the next 5 minutes | x {BASELINE} | kWh | unmet core-h | "
          "migrations |\n|---|---|---|---|---|---|---|")
    for day in HELD_DAYS:
        dc = _day(day)
        row: dict[str, Any] = {}
        for key, policy in (("baseline", make_policy(BASELINE)), ("look_ahead", LookAhead(make_policy(best)))):
            t0 = time.perf_counter()
            summary = run_policy(Simulation(dc), policy)
            row[key] = {"cost": consolidation_cost(summary), "summary": summary, "wall_s": time.perf_counter() - t0}
        recorded = consolidation_cost(json.loads(RECORDED.read_text())["runs"][f"{day}|{BASELINE}"])
        assert abs(row["baseline"]["cost"] - recorded) < 1e-6, f"{day}: {row['baseline']['cost']} is not {recorded}"
        doc["days"][day] = row
        b, a = row["baseline"], row["look_ahead"]
        print(f"| {day} | {b['cost']:.1f} | {a['cost']:.1f} | {a['cost'] / b['cost']:.3f} | "
              f"{b['summary']['energy_kwh']:.1f} -> {a['summary']['energy_kwh']:.1f} | "
              f"{b['summary']['unmet_core_h']:.2f} -> {a['summary']['unmet_core_h']:.2f} | "
              f"{b['summary']['migrations']:.0f} -> {a['summary']['migrations']:.0f} |", flush=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
