"""``llmvirt tune --from-store`` on a week of real usage, replayed into a store as an operator's scans would be.

For each seed: draw ``--vms`` VMs of a Bitbrains week (at most 8 vCPUs and 64 GiB each, so every one fits a
host), spread them over a fleet of 24-core 2.6 GHz hosts with 192 GiB as an unmanaged cluster would (each VM on
the host with the most free memory, at most 2 vCPUs per core and 85 % of memory), and record the week as one
scan every 5 minutes (CPU-time counters and guest-reported memory from the trace). Then tune exactly as
``llmvirt tune --from-store --objective relative-tail`` does (:mod:`llmvirt.bench.store_tuning`): every family
on the week's first six days, on the operator's own hosts, and the check on the seventh, held back.

It decides nothing about the shipped default. It shows what an operator's own tuning finds, and how a point
tuned on CloudSim's 2-core hosts (the shipped default) fares on 24-core hosts it was never tuned for.

Usage: python bench/store_tuning_demo.py [--vms 100] [--seeds 0,1,2] [--workers 2]
Writes bench/store_tuning_demo.json and prints the table for RESULTS.md. With ``--compare A,B,...`` it tunes
nothing: it runs the named strategies on every day of each seed's store (the same fleets) and reports each as
a ratio to A, per seed-day (``--out`` another file).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.bench import store_tuning, tune
from llmvirt.model.cluster import Balloon, Host, ScanResult, Vm
from llmvirt.sim.traces import UsageTrace, load_bitbrains
from llmvirt.store import database, registry, snapshots

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared/traces/bitbrains-rnd/rnd_2013-7_week1.tar.gz"
HOST = {"cpus": 24, "mhz": 2600, "memory_mib": 192 * 1024}
T0 = datetime(2013, 7, 1, 0, 0, 0)


def _draw(trace: UsageTrace, n: int, seed: int) -> np.ndarray:
    """``n`` VMs that fit a host, drawn without replacement."""
    fits = np.flatnonzero((trace.vcpus >= 1) & (trace.vcpus <= 8) & (trace.mem_capacity_mib >= 256)
                          & (trace.mem_capacity_mib <= 64 * 1024))
    return np.sort(np.random.default_rng(seed).choice(fits, size=n, replace=False))


def _spread(vcpus: np.ndarray, mem: np.ndarray) -> tuple[int, np.ndarray]:
    """Hosts and each VM's host, as an unmanaged cluster places them: largest memory first, each on the host with
    the most free memory that keeps 2 vCPUs per core and 85 % memory; as few hosts as that allows."""
    n = max(1, int(np.ceil(max(vcpus.sum() / (2 * HOST["cpus"]), mem.sum() / (0.85 * HOST["memory_mib"])))))
    while True:
        free_mem = np.full(n, 0.85 * HOST["memory_mib"])
        free_cpu = np.full(n, 2.0 * HOST["cpus"])
        where = np.full(len(vcpus), -1)
        for v in np.argsort(-mem, kind="stable"):
            ok = (free_mem >= mem[v]) & (free_cpu >= vcpus[v])
            if not ok.any():
                break
            h = int(np.argmax(np.where(ok, free_mem, -1)))
            where[v], free_mem[h], free_cpu[h] = h, free_mem[h] - mem[v], free_cpu[h] - vcpus[v]
        if (where >= 0).all():
            return n, where
        n += 1


def _record(db_url: str, trace: UsageTrace, vms: np.ndarray) -> int:
    """The week as one scan every 5 minutes into a new store; returns the number of hosts."""
    engine = database.open_engine(db_url)
    vcpus, mem = trace.vcpus[vms].astype(int), trace.mem_capacity_mib[vms].astype(int)
    n_hosts, where = _spread(vcpus, mem)
    hosts = [Host(f"kvm{h:02d}", "test:///default", cpus=HOST["cpus"], memory_mib=HOST["memory_mib"],
                  cpu_mhz=HOST["mhz"], hostname=f"kvm{h:02d}") for h in range(n_hosts)]
    for h in hosts:
        registry.add_host(engine, registry.RegisteredHost(h.name, h.uri))
    guests = [Vm(f"vm{trace.names[i]}", f"{k:08x}-0000-4000-8000-{int(i):012x}", vcpus=int(vcpus[k]),
                 max_vcpus=int(vcpus[k]), memory_mib=int(mem[k]), current_memory_mib=int(mem[k]), cpu_time_ns=0)
              for k, i in enumerate(vms)]
    for k, g in enumerate(guests):
        hosts[where[k]].vms.append(g)
    util, used = trace.cpu_util[vms], trace.mem_mib[vms]
    for t in range(-1, util.shape[1]):  # a scan 5 min before the week, so that its first sample is a delta
        for k, g in enumerate(guests):
            if t >= 0:
                g.cpu_time_ns = int(g.cpu_time_ns or 0) + int(min(1.0, util[k, t]) * vcpus[k] * 300e9)
            m = int(min(mem[k], used[k, max(t, 0)]))
            g.balloon = Balloon(current_mib=int(mem[k]), maximum_mib=int(mem[k]), available_mib=int(mem[k]),
                                unused_mib=int(mem[k]) - m)
        snapshots.record_scan(engine, ScanResult(hosts=hosts), taken_at=T0 + timedelta(seconds=300 * t))
    return n_hosts


def compare_seed(trace: UsageTrace, n_vms: int, seed: int, workers: int, names: list[str]) -> dict[str, Any]:
    """Record as :func:`one_seed` does, then run ``names`` on every day of the store (nothing tuned)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/store.db"
        n_hosts = _record(url, trace, _draw(trace, n_vms, seed))
        train, held = store_tuning.history_days(database.open_engine(url), Path(tmp))
        days = [*train, *held]
        runs = tune.run_grid(days, names, tune.Setting(), workers)
    return {"seed": seed, "hosts": n_hosts, "days": [d.label for d in days],
            "cost": {n: [round(runs[(d.label, n)]["cost"], 4) for d in days] for n in names},
            "figures": {n: tune.point_summary(n, days, runs, "mean") for n in names}}


def one_seed(trace: UsageTrace, n_vms: int, seed: int, workers: int, hold: int = 1) -> dict[str, Any]:
    """Record, tune on the first 7 - ``hold`` days, check on the last ``hold`` (by default: six, then the seventh)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/store.db"
        n_hosts = _record(url, trace, _draw(trace, n_vms, seed))
        engine = database.open_engine(url)
        train, held = store_tuning.history_days(engine, Path(tmp), hold=hold)
        setting = tune.Setting(kind="relative-tail")
        doc = tune.tune_cloudsim(list(train), None, workers, None, setting)
        check = store_tuning.check(doc, held, setting, workers)
    cost = {r["name"]: r for r in check["runs"]}
    point, default = check["recommended"], check["default"]
    return {"seed": seed, "vms": n_vms, "hosts": n_hosts, "train_days": doc["train_days"], "held_days": check["days"],
            "recommended": point, "families": {f: v["best"] for f, v in doc["families"].items()},
            "check": check["runs"], "ratio_to_default": round(cost[point]["cost"] / cost[default]["cost"], 4),
            "ratio_to_reference": round(cost[point]["cost"] / cost[tune.REFERENCE]["cost"], 4),
            "default_to_reference": round(cost[default]["cost"] / cost[tune.REFERENCE]["cost"], 4),
            "verdict": store_tuning.verdict(check), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    """Every seed, printed and written as JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=100)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/store_tuning_demo.json")
    ap.add_argument("--hold-back", type=int, default=1, help="the latest days held back (tune --from-store's)")
    ap.add_argument("--compare", help="Comma-separated strategies to run on every day of each seed's store instead "
                    "of tuning, the first the one to compare against (ratios per seed-day)")
    args = ap.parse_args()
    trace = load_bitbrains(TRACE)
    if args.compare:
        _compare(trace, args, [n.strip() for n in args.compare.split(",") if n.strip()])
        return
    runs = [one_seed(trace, args.vms, int(s), args.workers, args.hold_back) for s in args.seeds.split(",")]
    out = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor()}",
           "trace": TRACE.name, "host": HOST, "objective": "relative-tail", "hold_back": args.hold_back, "runs": runs,
           "ratio_to_default_mean": round(statistics.mean(r["ratio_to_default"] for r in runs), 4)}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"| seed | hosts | recommended (tuned on days 0-{6 - args.hold_back}) | held days (mean): cost vs default | "
          "vs thr-mmt-0.8 | default vs thr-mmt-0.8 |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['seed']} | {r['hosts']} | `{r['recommended']}` | {r['ratio_to_default']:.3f}x | "
              f"{r['ratio_to_reference']:.3f}x | {r['default_to_reference']:.3f}x |")
    print(f"mean ratio to the default {out['ratio_to_default_mean']:.3f}; written to {args.out}")


def _compare(trace: UsageTrace, args: argparse.Namespace, names: list[str]) -> None:
    """``--compare``: every name on every seed-day, as ratios to the first name's cost, printed and written."""
    seeds = [compare_seed(trace, args.vms, int(s), args.workers, names) for s in args.seeds.split(",")]
    base = names[0]
    rows = {}
    for n in names:
        ratios = [c / b for sd in seeds for c, b in zip(sd["cost"][n], sd["cost"][base], strict=True)]
        total = sum(sum(sd["cost"][n]) for sd in seeds) / sum(sum(sd["cost"][base]) for sd in seeds)
        rows[n] = {"min": round(min(ratios), 4), "mean": round(statistics.mean(ratios), 4),
                   "max": round(max(ratios), 4), "cheaper": sum(r < 1 for r in ratios), "days": len(ratios),
                   "total": round(total, 4)}
    out = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor()}",
           "trace": TRACE.name, "host": HOST, "against": base, "seeds": seeds, "ratios": rows}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"| policy | x {base} per seed-day: min / mean / max | seed-days cheaper | x {base} in total | "
          "energy kWh / unmet core-h / GiB a day (mean) |")
    print("|---|---|---|---|---|")
    for n, r in rows.items():
        f = [sd["figures"][n] for sd in seeds]
        fig = " / ".join(f"{statistics.mean(x[k] for x in f):.1f}" for k in ("energy_kwh", "unmet_core_h",
                                                                            "gib_migrated"))
        print(f"| {n} | {r['min']:.3f} / {r['mean']:.3f} / {r['max']:.3f} | {r['cheaper']} of {r['days']} | "
              f"{r['total']:.3f} | {fig} |")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
