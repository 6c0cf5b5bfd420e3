"""Commit the balance and memory baselines' tuned points, so ``tuned:FAMILY`` runs them (issue 14).

The benchmarks grid-searched every family on fleets of *training* VMs and recorded each grid point's
cost per Bitbrains family: ``bench/proxmox_crs.json`` (Watcher workload_balance, ProxLB with its
extended grid, llmvirt's loop, Proxmox's CRS), ``bench/cpsat_balance.json`` (CP-SAT) and
``bench/memory_tuned.json`` (MOM, Proxmox auto-ballooning). One point per family has to serve both
months, so this script sums each point's training cost over the two families and keeps the lowest.
No held-back figure is read. Writes ``policies/tuned_balance.json`` and ``policies/tuned_memory.json``.

Usage: python bench/tuned_scenarios.py
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _grids(families: dict) -> dict[str, dict[str, dict[str, float]]]:
    """family -> trace family -> {grid point: training cost}."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for trace, fam in families.items():
        for family, tuned in fam["tuned"].items():
            out.setdefault(family, {})[trace] = {k: float(v) for k, v in tuned["grid"].items()}
    return out


def _best(grids: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict]:
    """Each family's point with the lowest summed training cost (only points every trace family ran)."""
    out = {}
    for family, by_trace in grids.items():
        common = set.intersection(*(set(g) for g in by_trace.values()))
        total = {p: sum(g[p] for g in by_trace.values()) for p in common}
        best = min(sorted(total), key=lambda p: total[p])
        out[family] = {"best": best, "cost": round(total[best], 3),
                       "by_trace": {t: {p: round(c, 3) for p, c in g.items()} for t, g in by_trace.items()}}
    return out


def main() -> None:
    """Read the recorded training grids, write both files, print each family's pick."""
    crs = json.loads((ROOT / "bench/proxmox_crs.json").read_text())["balance"]
    cpsat = json.loads((ROOT / "bench/cpsat_balance.json").read_text())
    memory = json.loads((ROOT / "bench/memory_tuned.json").read_text())
    balance = _grids(crs["families"])
    for trace, fam in cpsat["families"].items():
        balance.setdefault("cp-sat", {})[trace] = {k: float(v) for k, v in fam["tuned"]["grid"].items()}
    docs = {
        "tuned_balance.json": {"scenario": "balance", "cost": "unmet_core_h + migration_core_h (docs/metrics.md)",
                               "split": "fleets of training VMs (llmvirt/sim/split.py), seeds 1000 and 1001",
                               "sources": ["bench/proxmox_crs.json", "bench/cpsat_balance.json"],
                               "families": _best(balance)},
        "tuned_memory.json": {"scenario": "memory", "cost": "memory_cost (docs/metrics.md)",
                              "split": "fleets of training VMs (llmvirt/sim/split.py), seeds 1000 and 1001",
                              "sources": ["bench/memory_tuned.json"],
                              "families": _best(_grids(memory["families"]))},
    }
    for name, doc in docs.items():
        doc["date"] = str(date.today())
        (ROOT / "policies" / name).write_text(json.dumps(doc, indent=1) + "\n")
        print(name, {f: v["best"] for f, v in doc["families"].items()})


if __name__ == "__main__":
    main()
