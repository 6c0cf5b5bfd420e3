"""Performance of one THR-MMT-0.8 run of 20110303, whole process (the issue's yardstick: CloudSim took
17 s and 2.0 GB), plus environment steps per second for training.

Usage: python bench/cloudsim_perf.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DAY = SHARED / "traces" / "planetlab" / "20110303"
ONE_RUN = f"""
from pathlib import Path
from llmvirt.sim.traces import load_planetlab
from llmvirt.sim.datacenter import cloudsim_datacenter
from llmvirt.sim.engine import Simulation
from llmvirt.sim.cloudsim_policies import make_policy, run_policy
r = run_policy(Simulation(cloudsim_datacenter(load_planetlab(Path({str(DAY)!r})))), make_policy("thr-mmt-0.8"))
print(round(r["energy_kwh"], 2), r["migrations"])
"""


def whole_process(runs: int) -> tuple[list[float], float, str]:
    """Wall seconds of each run as a fresh process, peak RSS in MB over them, the printed result."""
    walls, result = [], ""
    for _ in range(runs):
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", ONE_RUN], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
        result = res.stdout.strip()
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return walls, peak_mb, result


def env_steps_per_second() -> tuple[float, float]:
    """Steps/s of CloudSimEnv with a no-op agent and with THR-MMT-0.8 deciding each step."""
    from llmvirt.sim.cloudsim_policies import make_policy
    from llmvirt.sim.datacenter import cloudsim_datacenter
    from llmvirt.sim.env import CloudSimEnv
    from llmvirt.sim.traces import load_planetlab

    dc = cloudsim_datacenter(load_planetlab(DAY))
    rates = []
    for agent in (None, make_policy("thr-mmt-0.8")):
        env = CloudSimEnv(dc)
        env.reset()
        steps, done = 0, False
        t0 = time.perf_counter()
        while not done:
            action = agent.decide(env.sim, env.t) if agent is not None else []
            _, _, done, _, _ = env.step(action)
            steps += 1
        rates.append(steps / (time.perf_counter() - t0))
    return rates[0], rates[1]


def main() -> None:
    """Print a Markdown table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    walls, peak, result = whole_process(args.runs)
    noop, thr = env_steps_per_second()
    print(f"# simulator performance, {platform.machine()} {os.cpu_count()} CPUs, {date.today()}\n")
    print("| measure | value |\n|---|---|")
    print(f"| THR-MMT-0.8, 20110303, whole process, median of {args.runs} (s) | {statistics.median(walls):.2f} |")
    print(f"| same, min / max (s) | {min(walls):.2f} / {max(walls):.2f} |")
    print(f"| peak resident memory (MB) | {peak:.0f} |")
    print(f"| result (energy kWh, migrations) | {result} |")
    print("| CloudSim 5.0 on this machine (reference README) | 17 s, 2.0 GB |")
    print(f"| speed-up vs CloudSim | {17 / statistics.median(walls):.1f}x |")
    print(f"| env steps/s, no-op agent (workload + accounting only) | {noop:.0f} |")
    print(f"| env steps/s, THR-MMT-0.8 deciding every step | {thr:.0f} |")


if __name__ == "__main__":
    main()
