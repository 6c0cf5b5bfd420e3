"""What knowing the next step's demand is worth to the balance loop, and how much of it a learned forecast
captures (issues 14 and 15).

1. **Perfect look-ahead** (not a policy: it reads the future): the fallback and the shipped learned
   policy decide on the state one step ahead, so every VM's next 300 s of demand is known exactly. The
   drop in cost bounds what any forecast can bring to this loop.
2. **A learned forecast feeding the heuristic**: the fallback decides on the shipped forecaster's
   quantile of each VM's next-step demand instead of the demand measured now. The quantile (50 or
   90 %) and the trigger (share of a host's cores) are chosen on fleets of *training* VMs only (the
   tuning seeds of ``bench/balance_rl.py``), then run once on the held-back fleets. Its ablation is
   the fallback itself: the same loop with the forecast replaced by the value now.

Usage: python bench/forecast_value.py [--out bench/forecast_value.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from llmvirt.bench.balance_rl import TUNE_SEEDS, fleets, trace_families
from llmvirt.policy import balance_policy
from llmvirt.policy.balance_features import Forecaster
from llmvirt.sim.balance_env import BalanceEnv, BalanceState, EnvConfig
from llmvirt.sim.split import TRAIN_FRACTION, split
from llmvirt.sim.traces import UsageTrace, load_usage

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")
GRID = [(q, th) for q in (50, 90) for th in (0.9, 1.0, 1.1, 1.2)]


@dataclass
class ForecastTrigger:
    """The fallback deciding on a forecast quantile of next-step demand instead of demand now."""

    forecaster: Forecaster  #: the shipped policy's forecaster
    quantile: int  #: 50 or 90
    threshold: float  #: the fallback's trigger, share of a host's cores
    name: str = "forecast-trigger"  #: display name

    def act(self, state: BalanceState) -> Any:
        """The fallback's move on the forecast state."""
        q50, q90 = self.forecaster(state.history, state.vcpus)
        ahead = replace(state, demand=(q50 if self.quantile == 50 else q90) * state.vm_valid)
        return balance_policy.BalanceActor(name=self.name, fallback=True, threshold=self.threshold).act(ahead)


def run(actor: Any, trace: UsageTrace, vms: Any, seeds: tuple[int, ...] | range, cfg: EnvConfig,
        look_ahead: bool = False) -> list[float]:
    """Total cost per seed of ``actor`` on 16 fleets each (``look_ahead``: decide on the next step's state)."""
    out = []
    for seed in seeds:
        fl = fleets(trace, vms, 16, seed, cfg)
        env = BalanceEnv(trace, len(fl), cfg, fleets=fl)
        for _ in range(cfg.episode_steps):
            env.t += int(look_ahead)
            state = env.state()
            env.t -= int(look_ahead)
            vm, dst, _, _ = actor.act(state)
            env.step(vm, dst)
        out.append(sum(env.metrics.row(e)["cost"] for e in range(len(fl))))
    return out


def _family(path: Path, cfg: EnvConfig) -> dict[str, Any]:
    trace = load_usage(path)
    train_vms, held = split(trace.names, TRAIN_FRACTION)
    shipped = balance_policy.load(ROOT / "policies/default", name="llmvirt-rl")
    assert shipped.forecaster is not None
    fallback = balance_policy.BalanceActor(name="fallback", fallback=True, threshold=1.0)
    grid = {f"q{q}:{th}": sum(run(ForecastTrigger(shipped.forecaster, q, th), trace, train_vms, TUNE_SEEDS, cfg))
            for q, th in GRID}
    best = min(grid, key=grid.__getitem__)
    q, th = best.removeprefix("q").split(":")
    chosen = ForecastTrigger(shipped.forecaster, int(q), float(th), name=f"forecast-trigger:{best}")
    seeds = range(5)
    return {"grid_on_training_vms": grid, "chosen": best, "held_back": {
        "fallback:1.0": run(fallback, trace, held, seeds, cfg),
        "llmvirt-rl": run(shipped, trace, held, seeds, cfg),
        f"forecast-trigger:{best}": run(chosen, trace, held, seeds, cfg),
        "fallback:1.0, perfect look-ahead": run(fallback, trace, held, seeds, cfg, look_ahead=True),
        "llmvirt-rl, perfect look-ahead": run(shipped, trace, held, seeds, cfg, look_ahead=True)}}


def main() -> None:
    """Every family; a table each; the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench/forecast_value.json")
    args = ap.parse_args()
    cfg = EnvConfig()
    doc: dict[str, Any] = {"date": date.today().isoformat(), "families": {}}
    for family, path in TRACES.items():
        fam = doc["families"][family] = _family(path, cfg)
        print(f"\n{family}: chosen on training VMs: {fam['chosen']} "
              f"(grid: {', '.join(f'{k}={v:.0f}' for k, v in fam['grid_on_training_vms'].items())})\n")
        print("| policy (held-back VMs) | " + " | ".join(f"seed {s}" for s in range(5)) + " | mean ± sd |")
        print("|---" * 7 + "|")
        for name, costs in fam["held_back"].items():
            print(f"| {name} | " + " | ".join(f"{c:.1f}" for c in costs)
                  + f" | {statistics.mean(costs):.1f} ± {statistics.stdev(costs):.1f} |")
    args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
