"""Speed of the learned balance policy (issue 15): simulator throughput with the policy in the loop, and
decision latency on a large fleet.

1. Decision steps per second: 64 random Bitbrains fleets stepped together, the shipped actor (numpy)
   choosing every fleet's move each step, features and forecast included (what training's rollouts
   do, less the torch forward pass).
2. A plan for 800 hosts / 1,500 VMs (a tenth of the hosts hot): `rebalance --policy llmvirt-rl`'s
   decision on the ClusterArrays, median of 5.

Usage: python bench/balance_rl_speed.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from llmvirt.model.arrays import ClusterArrays, FleetSetup
from llmvirt.policy import balance_policy
from llmvirt.sim.balance_env import BalanceEnv, EnvConfig
from llmvirt.sim.split import TRAIN_FRACTION, split
from llmvirt.sim.traces import load_usage

ROOT = Path(__file__).resolve().parents[1]


def big_view(n_hosts: int, n_vms: int, seed: int = 0) -> ClusterArrays:
    """A synthetic fleet: 32-core hosts, a tenth of them hot."""
    rng = np.random.default_rng(seed)
    setup = FleetSetup(host_cores=32, mhz_per_core=2600.0, host_mem_mib=1024 * 1024.0, cpu_allocation_ratio=8.0)
    vm_host = rng.integers(0, n_hosts, n_vms)
    hot = vm_host < n_hosts // 10
    cpu = (rng.uniform(0.05, 0.4, n_vms) + hot * 0.6) * 8 * 2600
    mem = np.full(n_vms, 16384.0)
    return ClusterArrays(setup, vm_host, np.full(n_vms, 8), mem, cpu, mem * 0.5, mem.copy(), mem * 0.5, n_hosts,
                     np.zeros(n_hosts, dtype=bool))


def main() -> None:
    """Print both figures."""
    actor = balance_policy.load(ROOT / "policies/default")
    trace = load_usage(ROOT.parent / "shared/traces/bitbrains-rnd/rnd_2013-7_week1.tar.gz")
    env = BalanceEnv(trace, 64, EnvConfig(), seed=5, eligible=split(trace.names, TRAIN_FRACTION)[0])
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(100):
            vm, dst, _, _ = actor.act(env.state())
            env.step(vm, dst)
        rates.append(64 * 100 / (time.perf_counter() - t0))
    print(f"decision steps per second, 64 fleets, policy in the loop: {', '.join(f'{r:.0f}' for r in rates)}")
    view = big_view(800, 1500)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        decisions = actor.explain(view)
        times.append(time.perf_counter() - t0)
    print(f"decision on 800 hosts / 1,500 VMs: median {statistics.median(times) * 1000:.1f} ms "
          f"(runs {', '.join(f'{t * 1000:.1f}' for t in times)}); moves: {[(d.vm, d.dst) for d in decisions]}")


if __name__ == "__main__":
    main()
