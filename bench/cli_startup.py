"""Benchmark: how long each command takes from start to exit, side by side in one run (issue 18).

Usage: python bench/cli_startup.py [--runs 7] [--compare GIT_REF]
Runs ``python -c pass``, ``virsh --version`` and llmvirt's commands against a store with two
libvirt test-driver hosts (scanned twice), and prints the median and the worst wall time of each.
``--compare REF`` also runs every llmvirt command from a git worktree of REF (same interpreter and
packages, its own code on PYTHONPATH), interleaved with this tree's runs, in one table;
``--compare-python PY`` runs REF with another interpreter (a venv holding the packages REF pinned).
Both trees run with their bytecode compiled, as an installed package does.
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


def _once(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    # cwd outside any checkout: ``python -m`` puts the working directory first on sys.path
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd="/")
    return time.perf_counter() - t0


def _worktree(ref: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(where), ref], check=True)
    return where


def _as_installed(tree: Path) -> None:
    """Compile the tree's bytecode, as pip and the Debian package do when they install: under
    PYTHONDONTWRITEBYTECODE (set on this machine) a checkout would otherwise compile every module at every start."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "llmvirt")], check=True,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    """Print a markdown table: command, median s, max s, goal."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--compare", help="a git ref to time side by side (e.g. the commit before a change)")
    ap.add_argument("--compare-python", help="the interpreter for --compare's tree, where the ref pins other "
                                             "packages (e.g. a venv with them that also sees this one's)")
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
        envs = {"this tree": env}
        _as_installed(ROOT)
        if args.compare:
            old = _worktree(args.compare, Path(tmp) / "ref")
            _as_installed(old)
            envs[args.compare] = {**env, "PYTHONPATH": str(old)}
        try:
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.runs):  # interleaved, so both trees see the same machine
                for label, cmd in rows:
                    for tree, e in envs.items():
                        if tree == "this tree" or cmd[:3] == LLMVIRT:
                            py = args.compare_python if tree != "this tree" and args.compare_python else cmd[0]
                            times.setdefault((label, tree), []).append(_once([py, *cmd[1:]], e))
        finally:
            if args.compare:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
        print(f"# command start-up, {args.runs} runs each, {platform.node()} "
              f"({os.cpu_count()} CPUs), {date.today()}\n")
        ref_cols = f" {args.compare} median s |" if args.compare else ""
        print(f"| command | median s | max s |{ref_cols} goal s | met |")
        print("|---|---|---|" + ("---|" if args.compare else "") + "---|---|")
        for label, _cmd in rows:
            t = times[(label, "this tree")]
            goal = GOALS.get(label)
            met = "" if goal is None else ("yes" if statistics.median(t) <= goal else "no")
            ref = ""
            if args.compare:
                r = times.get((label, args.compare))
                ref = f" {statistics.median(r):.3f} |" if r else " - |"
            print(f"| `{label}` | {statistics.median(t):.3f} | {max(t):.3f} |{ref} {goal or '-'} | {met} |")

if __name__ == "__main__":
    main()
