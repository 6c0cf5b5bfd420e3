"""Decision latency of the default policy: `place` among 1,000 hosts (p50 of the decision) and a
rebalance plan for 800 hosts and 1,500 VMs. Usage: python bench/policy_latency.py [--repeats 200]"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np

from llmvirt.model.cluster import Cluster, Host, Vm
from llmvirt.policy import decide
from llmvirt.policy.constraints import Limits, Request


def synthetic(n_hosts: int, n_vms: int, seed: int = 0, hot: float = 0.1) -> Cluster:
    """Hosts of 32 CPUs / 256 GiB; VMs of 1-8 vCPUs; a fraction of hosts made hot."""
    rng = np.random.default_rng(seed)
    hosts = [Host(name=f"h{i}", uri="sim://", cpus=32, memory_mib=262144) for i in range(n_hosts)]
    for v in range(n_vms):
        h = hosts[int(rng.integers(0, n_hosts))]
        util = float(rng.beta(2, 5))
        if rng.random() < 0.4:  # a tenth of the hosts attract 40 % of the VMs, busier ones: hotspots
            h = hosts[int(rng.integers(0, max(1, int(hot * n_hosts))))]
            util = min(1.0, util + 0.5)
        vc = int(rng.integers(1, 9))
        h.vms.append(Vm(name=f"vm{v}", uuid=f"u{v}", vcpus=vc, max_vcpus=vc, memory_mib=4096 * vc,
                        current_memory_mib=4096 * vc, cpu_util=util))
    return Cluster(hosts)


def main() -> None:
    """Print a Markdown table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    scorer = decide.load_scorer(None)
    limits = Limits()
    cluster = synthetic(1000, 2000)
    req = Request(vcpus=4, memory_mib=8192)
    from llmvirt.model.arrays import ClusterArrays

    t0 = time.perf_counter()
    arrays = ClusterArrays.from_cluster(cluster)  # once per snapshot, as a scheduler keeps its model
    arrays.totals()
    build_ms = 1000 * (time.perf_counter() - t0)
    decide.place(cluster, req, scorer, decide.Context(limits), arrays=arrays, top=3)  # warm-up
    t = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        decide.place(cluster, req, scorer, decide.Context(limits), arrays=arrays, top=3)
        t.append(time.perf_counter() - t0)
    cold = []
    for _ in range(5):
        t0 = time.perf_counter()
        decide.place(cluster, req, scorer, decide.Context(limits))
        cold.append(time.perf_counter() - t0)
    plans = []
    for seed in range(5):
        c = synthetic(800, 1500, seed=seed)
        t0 = time.perf_counter()
        plan = decide.rebalance(c, scorer, "balance", decide.Context(limits, max_migrations=20))
        plans.append((time.perf_counter() - t0, len(plan.moves)))  # llmvirt's loop (llmvirt-scorer)
    print(f"# policy latency, default policy, {platform.machine()} {os.cpu_count()} CPUs, {date.today()}\n")
    print("| measure | value | goal |\n|---|---|---|")
    print(f"| place among 1,000 hosts, p50 (ms) | {1000 * statistics.median(t):.2f} | <= 5 |")
    print(f"| place, p95 (ms) | {1000 * sorted(t)[int(0.95 * len(t))]:.2f} | |")
    print(f"| building the index from a 1,000-host, 2,000-VM snapshot (ms, once per scan) | {build_ms:.1f} | |")
    print(f"| place including the index build, median of 5 (ms) | {1000 * statistics.median(cold):.1f} | |")
    print(f"| rebalance plan, 800 hosts / 1,500 VMs, median of 5 (s), llmvirt's loop (llmvirt-scorer) | "
          f"{statistics.median(p[0] for p in plans):.3f} "
          f"| <= 1 |")
    print(f"| moves in those plans (max 20) | {', '.join(str(p[1]) for p in plans)} | |")
    _consolidate_plans(limits)
    from llmvirt.plan_service import placement_spec
    from llmvirt.policy.features import recent_peaks

    rng = np.random.default_rng(0)  # a day of 5-minute history for every VM: the hosts' recent peaks
    history = {v.uuid: rng.random(288).tolist() for h in cluster.hosts for v in h.vms}
    spans = []
    for _ in range(5):
        t0 = time.perf_counter()
        peaks = recent_peaks(cluster.hosts, history)
        spans.append(time.perf_counter() - t0)
    print(f"| hosts' recent peaks from a day of history of 2,000 VMs (ms, once per scan), median of 5 | "
          f"{1000 * statistics.median(spans):.1f} | |")
    for name, spec in (("place's default (strategies.json)", placement_spec(None, given=False)),
                       ("place-rl", "place-rl")):
        other = decide.load_scorer(spec)
        ctx = decide.Context(limits, peaks=peaks)
        decide.place(cluster, req, other, ctx, arrays=arrays, top=3)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            decide.place(cluster, req, other, ctx, arrays=arrays, top=3)
            times.append(time.perf_counter() - t0)
        print(f"| place among 1,000 hosts, p50 (ms), {name}: {other.name} | "
              f"{1000 * statistics.median(times):.2f} | <= 5 |")


def _consolidate_plans(limits: Limits) -> None:
    """Goal consolidate's plan for 800 hosts / 1,500 VMs (each VM with an hour of CPU history, as the store
    gives it): the default (the tuned wake-aware gate), the network and the opt-in versions with a forecast,
    median of 5 fleets; then goal balance's default (the scan recovery), the tuned point it decides with on the
    reading alone, and the opt-in learned strategies the same way."""
    root = Path(__file__).resolve().parents[1] / "policies"
    for spec in (None, "llmvirt-net", *(f"llmvirt-net:{d}" for d in (root / "consolidate-net-forecast" / "seed0",
                                                             root / "consolidate-net-mixed" / "seed0") if d.is_dir())):
        _plans(limits, spec, "consolidate", root)
    for spec in (None, "baseline:cp-sat:2:0.1:0.95", "llmvirt-rl",
                 f"llmvirt-forecast:{root / 'balance-forecast' / 'seed1'}"):
        _plans(limits, spec, "balance", root)


def _plans(limits: Limits, spec: str | None, goal: str, root: Path) -> None:
    """One strategy's plan (None: the goal's default) for 800 hosts / 1,500 VMs with an hour of history per VM (and
    of scans, for the scan recovery), median of 5 fleets."""
    from llmvirt.strategies import registry

    strategy, times, moves = registry.resolve(spec, goal), [], []
    for seed in range(5):
        c = synthetic(800, 1500, seed=seed)
        rng = np.random.default_rng(seed)
        history = {v.uuid: (rng.random(12) * 0.6).tolist() for h in c.hosts for v in h.vms}
        scans = {v.uuid: [(float(x) * v.vcpus, float(s))
                          for x, s in zip(rng.random(13) * 0.6, rng.random(13), strict=True)]
                 for h in c.hosts for v in h.vms}
        t0 = time.perf_counter()
        plan = strategy.plan(c, goal, decide.Context(limits, max_migrations=20, history=history, scan_history=scans))
        times.append(time.perf_counter() - t0)
        moves.append(len(plan.moves))
    print(f"| rebalance --goal {goal} plan, 800 hosts / 1,500 VMs, median of 5 (s), "
          f"{(spec or strategy.name).replace(str(root.parent) + '/', '')} (moves: {', '.join(map(str, moves))}) | "
          f"{statistics.median(times):.3f} | <= 1 |")


if __name__ == "__main__":
    main()
