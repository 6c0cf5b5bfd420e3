"""Proxmox CRS cases this project has not seen: each of two shared cases, altered the ways a newer
pve-ha-manager or an operator's own case may differ, through `llmvirt peers pve-crs` as a separate process.

The alterations: each file removed in turn; a command the replay does not model, and every node powered off;
an empty and a malformed command list; an unknown rule type; a non-numeric and a non-JSON CRS setting; a node
without its sizes; a log without decisions. What must hold for each: no traceback, and an exit code of 0 (the
same decisions), 1 (different decisions: the table says how) or 2 (bad input, one line).

Usage: python bench/peer_case_faults.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

CASES = ("test-crs-static-rebalance-resource-affinity1", "test-crs-dynamic-auto-rebalance-topsis3")
FILES = ("datacenter.cfg", "manager_status", "cmdlist", "rules_config", "dynamic_service_stats",
         "static_service_stats", "service_config", "log.expect", "README")
EDITS = {
    "unmodelled and all off": ("cmdlist", json.dumps([["power node1 off"], ["crm node1 enable-node-maintenance",
                                                        "service vm:101 migrate node2"], ["frobnicate node1"]])),
    "empty cmdlist": ("cmdlist", "[]"),
    "cmdlist not JSON": ("cmdlist", "not json"),
    "unknown rule type": ("rules_config", "weird-affinity: r1\n\tresources vm:101\n\tfoo bar\n"),
    "non-numeric setting": ("datacenter.cfg", json.dumps({"crs": {"ha": "static", "ha-auto-rebalance": 1,
                                                                  "ha-auto-rebalance-threshold": "x"}})),
    "datacenter.cfg not JSON": ("datacenter.cfg", "crs: ha=static\n"),
    "node without sizes": ("hardware_status", json.dumps({"node1": {"power": "off", "maxcpu": 4}})),
    "log without decisions": ("log.expect", "info 0 hello\nbogus line\n"),
}


def variants(shared: Path, root: Path) -> list[tuple[str, Path]]:
    """Every altered copy of the cases under ``root``: (what was altered, its directory)."""
    out = []
    for name in CASES:
        case = shared / "peers/pve-ha-manager-crs" / name
        for f in FILES:
            if (case / f).exists():
                d = root / f"{name}-no-{f}"
                shutil.copytree(case, d)
                (d / f).unlink()
                out.append((f"{name}: no {f}", d))
        for what, (f, text) in EDITS.items():
            d = root / f"{name}-{what.replace(' ', '-')}"
            shutil.copytree(case, d)
            (d / f).write_text(text)
            out.append((f"{name}: {what}", d))
    return out


def main() -> None:
    """Run every variant; print one row each; exit 1 if any printed a traceback or exited otherwise."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    args = ap.parse_args()
    bad = 0
    print(f"{date.today()} {platform.node()}; `llmvirt peers pve-crs CASE` per variant")
    print("| variant | exit | last line |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for what, d in variants(args.shared, Path(tmp)):
            r = subprocess.run([sys.executable, "-m", "llmvirt", "peers", "pve-crs", str(d)], capture_output=True,
                               text=True, timeout=600, check=False, env={**os.environ, "COLUMNS": "250"})
            lines = [ln for ln in (r.stderr if r.returncode == 2 else r.stdout).splitlines() if ln.strip()]
            last = lines[-1].replace(str(d), "CASE") if lines else ""
            traceback = "Traceback" in r.stderr + r.stdout
            bad += traceback or r.returncode not in (0, 1, 2)
            print(f"| {what} | {r.returncode}{' TRACEBACK' if traceback else ''} | {last[:140]} |")
    print(f"{bad} variant(s) with a traceback or an unexpected exit")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
