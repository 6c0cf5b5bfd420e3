"""Benchmark: how long each command takes from start to exit, side by side in one run (issue 18).

Usage: python bench/cli_startup.py [--runs 7]
Runs ``python -c pass``, ``virsh --version`` and llmvirt's commands against a store with two
libvirt test-driver hosts (scanned twice), and prints the median and the worst wall time of each.
Goals: ``--help``, ``hosts list``, ``status`` and ``scan`` of a test-driver host at most 0.3 s;
``place`` and ``rebalance`` with the default policy at most 1.0 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
LLMVIRT = [sys.executable, "-m", "llmvirt"]
GOALS = {"--help": 0.3, "hosts list": 0.3, "status": 0.3, "scan": 0.3, "place": 1.0, "rebalance": 1.0}


def _time(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    """Print a markdown table: command, median s, max s, goal."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LLMVIRT_DB": f"sqlite:///{tmp}/bench.db", "LLMVIRT_CONFIG": f"{tmp}/none.toml"}
        Path(tmp, "none.toml").write_text("")
        for name, fixture in (("busy", "busy-host.xml"), ("spare", "small-host.xml")):
            subprocess.run([*LLMVIRT, "hosts", "add", name, f"test://{FIXTURES / fixture}"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        for _ in range(2):
            subprocess.run([*LLMVIRT, "scan"], env=env, check=True, stdout=subprocess.DEVNULL)
        rows: list[tuple[str, list[str]]] = [("python -c pass", [sys.executable, "-c", "pass"])]
        if shutil.which("virsh"):
            rows.append(("virsh --version", ["virsh", "--version"]))
        rows += [("--help", [*LLMVIRT, "--help"]), ("hosts list", [*LLMVIRT, "hosts", "list"]),
                 ("status", [*LLMVIRT, "status"]), ("scan", [*LLMVIRT, "scan", "--host", "spare"]),
                 ("place", [*LLMVIRT, "place", "--vcpus", "2", "--memory", "2G"]),
                 ("rebalance", [*LLMVIRT, "rebalance"])]
        print(f"# command start-up, {args.runs} runs each, {platform.node()} "
              f"({os.cpu_count()} CPUs), {date.today()}\n")
        print("| command | median s | max s | goal s | met |\n|---|---|---|---|---|")
        for label, cmd in rows:
            t = _time(cmd, env, args.runs)
            goal = GOALS.get(label)
            met = "" if goal is None else ("yes" if statistics.median(t) <= goal else "no")
            print(f"| `{label}` | {statistics.median(t):.3f} | {max(t):.3f} | {goal or '-'} | {met} |")


if __name__ == "__main__":
    main()
