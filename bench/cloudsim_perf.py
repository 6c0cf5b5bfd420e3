"""Performance of one THR-MMT-0.8 run of 20110303, whole process (the issue's yardstick: CloudSim took
17 s and 2.0 GB), plus environment steps per second for training.

Usage: python bench/cloudsim_perf.py [--runs 5]
       python bench/cloudsim_perf.py --cli [--runs 10] [--against TREE ...]
       python bench/cloudsim_perf.py --instructions [--against TREE ...]

``--cli`` times what issue 14 names: ``llmvirt bench --scenario cloudsim ... --json`` as a whole process
on 20110303 and 20110403; ``--against TREE`` (a ``git worktree`` of an older commit, repeatable) runs that
tree's code with the same interpreter, alternating run by run, so all see the same machine. Every tree's
bytecode is compiled first, as an install leaves it (with PYTHONDONTWRITEBYTECODE set, an edited module
would otherwise be compiled again in every run). ``--instructions`` counts the same process's instructions
on 20110303 under ``valgrind --tool=callgrind`` (PYTHONHASHSEED=0), a measure of work that the machine's
state does not move (a few minutes per tree under valgrind).
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


CLI_ARGS = ["bench", "--scenario", "cloudsim", "--policies", "thr-mmt-0.8", "--json", "--trace"]
#: runs llmvirt's CLI from another tree: the editable install's import hook would load this checkout
FROM_TREE = """
import sys
root = sys.argv.pop(1)
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, root)
from llmvirt.cli import main
sys.argv[0] = "llmvirt"
main()
"""
ROOT = Path(__file__).resolve().parents[1]
REFERENCE_S = {"20110303": ("17 s, 2.0 GB (reference README)", 17.0),
               "20110403": ("about 27 s, 2.0 GB (issue 14's figure for a 1,500-VM day)", 27.0)}


def _time_cli(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one whole-process run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed")
    return wall, usage.ru_maxrss / 1024


def cli_table(runs: int, against: list[Path]) -> None:
    """Markdown rows: the CLI on each day, this tree (and the trees in ``against``), runs alternating."""
    llmvirt = str(Path(sys.executable).with_name("llmvirt"))
    for root in (ROOT, *against):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "llmvirt")], check=True,
                       stdout=subprocess.DEVNULL)
    print("| day (VMs) | code | median s | min / max s | peak memory | CloudSim 5.0 | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for day, (ref_text, ref_s) in REFERENCE_S.items():
        trace = str(SHARED / "traces" / "planetlab" / day)
        trees = {"this tree": [llmvirt, *CLI_ARGS, trace]}
        for tree in against:
            trees[f"`{tree.name}`"] = [sys.executable, "-c", FROM_TREE, str(tree), *CLI_ARGS, trace]
        walls: dict[str, list[float]] = {k: [] for k in trees}
        peaks: dict[str, float] = dict.fromkeys(trees, 0.0)
        for _ in range(runs):
            for name, argv in trees.items():
                wall, peak = _time_cli(argv)
                walls[name].append(wall)
                peaks[name] = max(peaks[name], peak)
        n_vms = len(list(Path(trace).iterdir()))
        for name, w in walls.items():
            med = statistics.median(w)
            print(f"| {day} ({n_vms:,}) | {name} | {med:.2f} | {min(w):.2f} / {max(w):.2f} | {peaks[name]:.0f} MB "
                  f"| {ref_text} | {ref_s / med:.1f}x |")


def instructions(against: list[Path]) -> None:
    """Markdown rows: instructions of the whole CLI process on 20110303, per tree, under callgrind."""
    trace = str(DAY)
    print("| code | instructions | x this tree |\n|---|---|---|")
    counts: dict[str, int] = {}
    for root in (ROOT, *against):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "llmvirt")], check=True,
                       stdout=subprocess.DEVNULL)
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", FROM_TREE,
                str(root), *CLI_ARGS, trace]
        res = subprocess.run(argv, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": "0"})
        line = next(x for x in res.stderr.splitlines() if "Collected" in x)
        counts["this tree" if root == ROOT else f"`{root.name}`"] = int(line.split()[-1])
    for name, n in counts.items():
        print(f"| {name} | {n / 1e9:.2f} G | {n / counts['this tree']:.2f} |")


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
    ap.add_argument("--cli", action="store_true", help="time `llmvirt bench` through the CLI on two days")
    ap.add_argument("--against", type=Path, action="append", default=[],
                    help="with --cli or --instructions: another tree (git worktree) to measure too; repeatable")
    ap.add_argument("--instructions", action="store_true",
                    help="count the CLI's instructions on 20110303 under valgrind (callgrind), per tree")
    args = ap.parse_args()
    if args.instructions:
        instructions(args.against)
        return
    if args.cli:
        print(f"# llmvirt bench through the CLI, {platform.machine()} {os.cpu_count()} CPUs, {date.today()}\n")
        cli_table(args.runs, args.against)
        return
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
