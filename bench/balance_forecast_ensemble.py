"""The balance loop on the mean of the three committed forecasters (issue 15): a first look.

The forecast is the average of policies/balance-forecast/seed{0,1,2}'s predicted changes; the loop's trigger and
gain are chosen as ``llmvirt train --head balance-forecast`` chooses them (the same grid, on the same fleets of
training VMs); then it runs once on the held-back fleets of bench/balance_forecast.py, beside its fallback.

Usage: python bench/balance_forecast_ensemble.py [--seeds 5]
Writes bench/balance_forecast_ensemble.json and prints the tables for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from balance_forecast import TRACES, scenario, show  # noqa: E402
from balance_shapes import SCENARIOS  # noqa: E402

from llmvirt.learn.train_balance_forecast import TUNE_SEEDS, choose, tuning_fleets  # noqa: E402
from llmvirt.policy import balance_forecast as bfc  # noqa: E402
from llmvirt.sim.split import TRAIN_FRACTION, split  # noqa: E402
from llmvirt.sim.traces import load_usage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class MeanForecaster:
    """The mean of several forecasters' predicted changes."""

    def __init__(self, members: list[bfc.ChangeForecaster]) -> None:
        """``members``: the forecasters averaged."""
        self.members = members

    def __call__(self, history: np.ndarray, vcpus: np.ndarray) -> np.ndarray:
        """The mean predicted next-step change, cores."""
        return np.mean([m(history, vcpus) for m in self.members], axis=0)


def main() -> None:
    """Choose on training fleets, run on held-back ones, print and write the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/balance_forecast_ensemble.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    dirs = [ROOT / f"policies/balance-forecast/seed{s}" for s in range(3)]
    mean = MeanForecaster([bfc.load(d).forecaster for d in dirs])
    traces = []
    for path in TRACES.values():
        trace = load_usage(path)
        traces.append((trace, split(trace.names, TRAIN_FRACTION)[0]))
    (th, gain), grid = choose(mean, tuning_fleets(traces, TUNE_SEEDS))  # type: ignore[arg-type]
    print(f"chosen on training fleets: trigger {th}, gain {gain} (grid: "
          + ", ".join(f"{k}={v:.0f}" for k, v in grid.items()) + ")")
    name = "mean of seeds 0-2"
    loops: dict[str, Any] = {name: bfc.ForecastLoop(mean, th, gain, name=name),  # type: ignore[arg-type]
                             f"(a) fallback at trigger {th}": bfc.ForecastLoop(None, th, 0.0, name="fallback")}
    doc: dict[str, Any] = {"date": date.today().isoformat(), "threshold": th, "gain": gain, "grid_costs": grid,
                           "families": {}}
    for (family, _), (trace, _) in zip(TRACES.items(), traces, strict=True):
        held = split(trace.names, TRAIN_FRACTION)[1]
        doc["families"][family] = {}
        for sc in SCENARIOS:
            res = doc["families"][family][sc] = scenario(trace, held, family, sc, loops, args.seeds)
            show(family, sc, res)
    doc["wall_s"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nwrote {args.out} in {doc['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
