"""Hosts of different sizes in one fleet (issue 14's hard scenario; issue 15's policy on real clusters).

Operators' clusters rarely have identical hosts. Every balance strategy reads each host's own CPUs and
memory: the simulator costs overload per host, the learned policy's features and mask are per host,
and on a scanned cluster of mixed sizes no strategy is refused or fills a small host as if it were big.
"""

from __future__ import annotations

import numpy as np
import pytest

from llmvirt.model.arrays import ClusterArrays, FleetSetup
from llmvirt.policy import balance_features as bf
from llmvirt.policy import balance_policy, decide
from llmvirt.policy.constraints import Limits
from llmvirt.sim.balance_bound import greedy_fits, min_overflow_whole, step_bound
from llmvirt.sim.balance_env import BalanceEnv, EnvConfig, Fleet
from llmvirt.sim.traces import UsageTrace
from llmvirt.strategies import registry as strategies

MHZ = 2600.0


def flat_trace(cores: list[float], steps: int = 40) -> UsageTrace:
    """VMs of constant demand (``cores`` each), 4 vCPUs and 4 GiB each."""
    n = len(cores)
    vcpus = np.full(n, 4.0)
    mem = np.full(n, 4096.0)
    cpu = np.repeat(np.asarray(cores, dtype=np.float64)[:, None] * MHZ, steps, axis=1)
    return UsageTrace(tuple(f"vm{i}" for i in range(n)), 300, vcpus, vcpus * MHZ, cpu, mem,
                      np.repeat(mem[:, None] * 0.5, steps, axis=1))


def test_mixed_fleets_draw_several_sizes_and_identical_ones_do_not() -> None:
    trace = flat_trace([0.5] * 60, steps=400)
    mixed = BalanceEnv(trace, 8, EnvConfig(hosts=(4, 6), host_cores=(4, 8, 16), episode_steps=40, mixed_sizes=True))
    same = BalanceEnv(trace, 8, EnvConfig(hosts=(4, 6), host_cores=(4, 8, 16), episode_steps=40))
    sizes = [set(mixed.cores[e][mixed.host_valid[e]].tolist()) for e in range(8)]
    assert any(len(s) > 1 for s in sizes)
    assert all(len(set(same.cores[e][same.host_valid[e]].tolist())) == 1 for e in range(8))


def test_overload_is_costed_against_each_hosts_own_cores() -> None:
    """Three VMs of 3 cores: on the 4-core host 5 cores go unserved each step; on the 16-core host none."""
    trace = flat_trace([3.0, 3.0, 3.0])
    cfg = EnvConfig(hosts=(2, 2), host_cores=(4, 16), episode_steps=4, mixed_sizes=True, max_vms=8)
    fleet = Fleet(np.arange(3), np.full(3, 12), 2, np.array([4.0, 16.0]), np.zeros(3, dtype=np.int64))
    env = BalanceEnv(trace, 1, cfg, fleets=[fleet])
    env.advance()
    assert env.metrics.unmet_core_h[0] == pytest.approx(5.0 * 300 / 3600)
    assert env.metrics.overload_host_h[0] == pytest.approx(300 / 3600)
    assert env.metrics.bound_core_h[0] == 0.0  # 9 cores fit in the fleet's 20
    for v in range(3):
        env.move(np.array([v]), np.array([1]))
    before = env.metrics.unmet_core_h[0]
    env.advance()
    assert env.metrics.unmet_core_h[0] == pytest.approx(before)  # nothing more unserved on the big host


def test_the_simulator_refuses_what_the_small_hosts_limits_refuse() -> None:
    """4 vCPUs per core at most: the 1-core host takes one 4-vCPU VM, not two."""
    trace = flat_trace([0.1, 0.1, 0.1])
    cfg = EnvConfig(hosts=(2, 2), host_cores=(1, 16), episode_steps=4, mixed_sizes=True, max_vms=8,
                    cpu_allocation_ratio=4.0)
    fleet = Fleet(np.arange(3), np.full(3, 12), 2, np.array([1.0, 16.0]), np.ones(3, dtype=np.int64))
    env = BalanceEnv(trace, 1, cfg, fleets=[fleet])
    env.move(np.array([0]), np.array([0]))
    env.move(np.array([1]), np.array([0]))
    assert env.metrics.migrations[0] == 1 and env.metrics.refused[0] == 1
    st = env.state()
    np.testing.assert_array_equal(st.vcpu_limit[0, :2], [4.0, 64.0])


def test_the_whole_vm_bound_on_mixed_hosts_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(25):
        sizes = rng.uniform(0.2, 6.0, int(rng.integers(2, 7)))
        caps = rng.choice([2.0, 4.0, 8.0], int(rng.integers(2, 4)))
        best = min(np.maximum(np.bincount(np.array(p), sizes, minlength=caps.size) - caps, 0.0).sum()
                   for p in np.ndindex(*(caps.size,) * sizes.size))
        got = min_overflow_whole(sizes, caps.size, caps)
        assert got <= best + 1e-9 and got >= best - 0.01 * sizes.size  # hundredths of a core, rounded down
        assert step_bound(sizes, caps.size, caps) >= max(0.0, sizes.sum() - caps.sum()) - 1e-9
        if greedy_fits(sizes, caps):
            assert best == pytest.approx(0.0, abs=1e-9)


def _mixed_cluster() -> tuple[ClusterArrays, list[str]]:
    """A 32-CPU host with 40 CPUs of demand, an idle 4-CPU host, a 16-CPU host at a quarter."""
    busy = 10
    vm_host = np.array([0] * busy + [2])
    vcpus = np.array([4] * busy + [4])
    cap = np.full(vm_host.size, 4096.0)
    mhz = np.array([4 * MHZ] * busy + [4 * MHZ])  # every VM uses its 4 vCPUs
    setup = FleetSetup(host_cores=32, mhz_per_core=MHZ, host_mem_mib=256 * 1024.0, cpu_allocation_ratio=4.0)
    view = ClusterArrays(setup, vm_host, vcpus, cap, mhz, cap / 2, cap.copy(), cap / 2, 3, np.zeros(3, dtype=bool),
                         host_cpus=np.array([32.0, 4.0, 16.0]),
                         host_mem_mib=np.array([256 * 1024.0, 32 * 1024.0, 128 * 1024.0]))
    return view, ["sim-0", "sim-1", "sim-2"]


@pytest.mark.parametrize("name", ["llmvirt-rl", "llmvirt-rl-fallback:1.0", "baseline:tuned:cp-sat",
                                  "baseline:watcher-wb:100", "baseline:proxlb:80:cpu", "baseline:proxmox-crs:0.2",
                                  "baseline:none"])
def test_every_balance_strategy_plans_on_mixed_hosts_without_overfilling_the_small_one(name: str) -> None:
    view, hosts = _mixed_cluster()
    cluster = view.to_cluster()
    cpus = {h.name: h.cpus for h in cluster.hosts}
    use = {v.name: v.vcpus * (v.cpu_util or 0.0) for h in cluster.hosts for v in h.vms}
    where = {v.name: h.name for h in cluster.hosts for v in h.vms}
    ctx = decide.Context(Limits(cpu_allocation_ratio=4.0, ram_allocation_ratio=1.0, reserved_memory_mib=0),
                         max_migrations=10)
    plan = strategies.resolve(name, "balance").plan(cluster, "balance", ctx)
    for m in plan.moves:
        where[m.vm] = m.dst
    after = {h: sum(u for v, u in use.items() if where[v] == h) for h in hosts}
    assert after["sim-1"] <= cpus["sim-1"] + 1e-9, (name, after)
    assert after["sim-2"] <= cpus["sim-2"] + 1e-9, (name, after)
    if name != "baseline:none":
        assert plan.moves, name  # the big host is 8 CPUs over and the others have 16 free: every balancer acts


def test_the_learned_policy_reads_each_hosts_own_size() -> None:
    view, _ = _mixed_cluster()
    st = balance_policy.state_of(view)
    np.testing.assert_array_equal(st.cores[0], [32.0, 4.0, 16.0])
    np.testing.assert_array_equal(st.vcpu_limit[0], [128.0, 16.0, 64.0])
    cand = bf.candidates(st, None, "no-forecast")
    i = bf.CANDIDATE_FEATURES.index
    for n in np.flatnonzero(cand.mask[0]):
        dst = int(cand.dst[0, n])
        vm = int(cand.vm[0, n])
        # a 4-core VM makes the 4-core destination 100 % busy, the 16-core one 25 % busier
        load_after = st.demand[0][st.vm_host[0] == dst].sum() / st.cores[0, dst] + st.demand[0, vm] / st.cores[0, dst]
        assert cand.features[0, n, i("dst_excess_after_q90")] == pytest.approx(max(load_after - 1.0, 0.0), abs=1e-6)


@pytest.mark.parametrize("name", ["llmvirt-rl", "llmvirt-rl-fallback:1.0", "baseline:tuned:cp-sat",
                                  "baseline:watcher-wb", "baseline:proxlb", "baseline:proxmox-crs"])
def test_a_cluster_where_no_vm_runs_gets_an_empty_plan(name: str) -> None:
    from llmvirt.model.cluster import Cluster, Host

    cluster = Cluster(hosts=[Host(name="a", uri="test:///default", cpus=8, memory_mib=8192),
                             Host(name="b", uri="test:///default", cpus=16, memory_mib=16384)])
    plan = strategies.resolve(name, "balance").plan(cluster, "balance", decide.Context())
    assert plan.moves == []


def test_a_fleet_given_one_size_has_hosts_of_that_size() -> None:
    fleet = Fleet(np.arange(2), np.zeros(2, dtype=np.int64), 3, 16, np.zeros(2, dtype=np.int64))
    np.testing.assert_array_equal(fleet.cores, [16.0, 16.0, 16.0])
