"""How good is the consolidation network's learned demand forecast, on days it was not fitted on (issue 15)?

For each committed network with a forecast (policies/consolidate-net-forecast/seedS) and each PlanetLab day,
every placed VM at every step of the tuned gate's run (the histories exactly as the policy sees them,
:func:`llmvirt.learn.train_consolidate_net.forecast_samples`): the mean absolute error of the 50 % quantile
against the next sample, the same for the value now (the forecast ablation (b) puts in its place), the
pinball losses at 50 % and 90 % of both, and how often the next sample is at or below the 90 % quantile.
The forecasters were fitted on the training days only; the held-back days are marked.

Usage: python bench/consolidate_forecast.py
"""

from __future__ import annotations

import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

from llmvirt.learn.train_consolidate_net import forecast_samples
from llmvirt.policy import consolidate_net
from llmvirt.sim.split import HELD_DAYS, TRAIN_DAYS

ROOT = Path(__file__).resolve().parents[1]
PLANETLAB = ROOT.parent / "shared" / "traces" / "planetlab"
NETS = ROOT / "policies" / "consolidate-net-forecast"


def _pinball(q: np.ndarray, y: np.ndarray, tau: float) -> float:
    d = y - q
    return float(np.maximum(tau * d, (tau - 1) * d).mean())


def main() -> None:
    """Print one row per (seed, day)."""
    t0 = time.perf_counter()
    samples = {day: forecast_samples((str(PLANETLAB / day), consolidate_net.FALLBACK))
               for day in (*TRAIN_DAYS, *HELD_DAYS)}
    rows = []
    for seed_dir in sorted(NETS.glob("seed*")):
        forecaster = consolidate_net.load(seed_dir)[0].forecaster
        for day, (x, y) in samples.items():
            q50, q90 = forecaster(x[:, :-1], np.ones(y.size))
            now = x[:, -2]
            rows.append((seed_dir.name, day, "train" if day in TRAIN_DAYS else "held back", y.size,
                         np.abs(y - q50).mean(), np.abs(y - now).mean(), _pinball(q50, y, 0.5),
                         _pinball(q90, y, 0.9), _pinball(now, y, 0.9), (y <= q90).mean(), (y <= now).mean()))
    print(f"# the consolidation network's demand forecast; {platform.machine()}, {date.today()}, "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| seed | day | split | VM-steps | MAE q50 | MAE now | pinball 50 % q50 | pinball 90 % q90 | "
          "pinball 90 % now | next <= q90 | next <= now |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.4f} | {r[5]:.4f} | {r[6]:.4f} | {r[7]:.4f} | "
              f"{r[8]:.4f} | {r[9]:.1%} | {r[10]:.1%} |")


if __name__ == "__main__":
    main()
