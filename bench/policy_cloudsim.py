"""The learned consolidation head against every CloudSim baseline, all 7 PlanetLab days (issue 5).

Goals, on the days the policy was not trained on: ESV at most 0.5x the best of THR/IQR/MAD/LR-MMT,
migrations at most 0.5x THR-MMT-0.8's, energy no higher than LR-MMT-1.2's.

Usage: python bench/policy_cloudsim.py
"""

from __future__ import annotations

import platform
import time
from datetime import date
from pathlib import Path

from llmvirt.bench.run import DEFAULT_CLOUDSIM_POLICIES, run_cloudsim
from llmvirt.sim.split import day_role

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MMT = ("thr-mmt-0.8", "iqr-mmt-1.5", "mad-mmt-2.5", "lr-mmt-1.2")


def main() -> None:
    """Run and print a markdown table with the goal verdict per day."""
    t0 = time.perf_counter()
    days = sorted(p for p in (SHARED / "traces" / "planetlab").iterdir() if p.is_dir())
    results, _ = run_cloudsim(days, list(DEFAULT_CLOUDSIM_POLICIES))
    by = {(r.trace, r.policy): r.summary for r in results}
    print(f"# learned consolidation vs CloudSim baselines, {platform.machine()} {date.today()}\n")
    print("| day | split | policy | energy kWh | migrations | SLAV % | ESV |\n|---|---|---|---|---|---|---|")
    _rows(days, by, lambda s: f"{s['energy_kwh']:.2f} | {int(s['migrations'])} | {s['slav_pct']:.5f} | "
                                f"{s['esv']:.6f}")
    verdicts = []
    for d in days:
        split = _split(d)
        me = by[(d.name, "llmvirt-head")]
        best_esv = min(by[(d.name, p)]["esv"] for p in MMT)
        esv_x = me["esv"] / best_esv
        mig_x = me["migrations"] / by[(d.name, "thr-mmt-0.8")]["migrations"]
        en_x = me["energy_kwh"] / by[(d.name, "lr-mmt-1.2")]["energy_kwh"]
        verdicts.append((d.name, split, esv_x, mig_x, en_x, esv_x <= 0.5 and mig_x <= 0.5 and en_x <= 1.0))
    print("\n| day | split | ESV / best MMT | migrations / THR-MMT-0.8 | energy / LR-MMT-1.2 | goals met |")
    print("|---|---|---|---|---|---|")
    for d, split, e, m, n, ok in verdicts:
        print(f"| {d} | {split} | {e:.3f} | {m:.3f} | {n:.3f} | {'yes' if ok else 'no'} |")
    _honest(days, by)
    print(f"\n({time.perf_counter() - t0:.0f} s)")


def _split(day: Path) -> str:
    return day_role(day.name)


def _rows(days: list[Path], by: dict, cells) -> None:  # noqa: ANN001 - summary -> the row's metric cells
    """One markdown row per day and policy, the head in bold."""
    for d in days:
        for p in DEFAULT_CLOUDSIM_POLICIES:
            name = f"**{p}**" if p == "llmvirt-head" else p
            print(f"| {d.name} | {_split(d)} | {name} | {cells(by[(d.name, p)])} |")


def ratio(a: float, b: float) -> str:
    """a / b to two decimals, or - when b is 0."""
    return f"{a / b:.2f}" if b else "-"


def _honest(days: list[Path], by: dict) -> None:
    """The same runs on the honest metrics (docs/metrics.md): unmet demand, genuine overload, migration time."""
    print("\n## The same runs on the honest metrics\n")
    print("| day | split | policy | energy kWh | unmet demand % | overload host-h | migrations | migration VM-h |")
    print("|---|---|---|---|---|---|---|---|")
    _rows(days, by, lambda s: f"{s['energy_kwh']:.2f} | {s['unmet_demand_pct']:.4f} | {s['overload_host_h']:.2f} | "
                                f"{int(s['migrations'])} | {s['migration_vm_s'] / 3600:.1f}")
    print("\n| day | split | unmet / THR-MMT-0.8 | overload h / THR-MMT-0.8 | unmet / best MMT |")
    print("|---|---|---|---|---|")
    for d in days:
        me, thr = by[(d.name, "llmvirt-head")], by[(d.name, "thr-mmt-0.8")]
        best = min(by[(d.name, p)]["unmet_demand_pct"] for p in MMT)
        print(f"| {d.name} | {_split(d)} | {ratio(me['unmet_demand_pct'], thr['unmet_demand_pct'])} | "
              f"{ratio(me['overload_host_h'], thr['overload_host_h'])} | {ratio(me['unmet_demand_pct'], best)} |")


if __name__ == "__main__":
    main()
