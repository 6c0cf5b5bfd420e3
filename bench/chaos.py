"""The chaos soak (issue 17): a lab of 4 hosts, hundreds of random actions, faults injected at random,
and an audit after every round (:mod:`llmvirt.lab.chaos`). Writes bench/chaos.json and prints the table
bench/RESULTS.md records.

    .venv/bin/python bench/chaos.py --actions 500 --faults 50
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from llmvirt.lab import chaos, lab
from llmvirt.store import database

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Lab up, soak, lab down; the audit as JSON and a table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--actions", type=int, default=500)
    ap.add_argument("--faults", type=int, default=50)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--vms", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/chaos.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmvirt-chaos-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'chaos.db'}"
        engine = database.open_engine(url)
        lab.up(Path(tmp) / "lab", args.hosts, args.vms, engine, say=print)
        try:
            audit = chaos.soak(Path(tmp) / "lab", url, chaos.SoakConfig(args.actions, args.faults, args.seed),
                               say=print)
        finally:
            lab.down(Path(tmp) / "lab", engine, quiet=True)
    doc = {"date": datetime.now(UTC).date().isoformat(), "machine": f"{platform.node()} ({platform.machine()})",
           "hosts": args.hosts, "vms": args.vms, "seed": args.seed, **chaos.report(audit)}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print("\n| figure | value |\n|---|---|")
    for key in ("rounds", "actions", "faults", "outcomes", "exit_codes", "lost_guests", "duplicated_guests",
                "open_entries", "lost_plans", "snapshots_lost", "tracebacks", "hung", "wall_s"):
        print(f"| {key} | {doc[key]} |")
    for line in audit.problems:
        print("problem:", line)


if __name__ == "__main__":
    main()
