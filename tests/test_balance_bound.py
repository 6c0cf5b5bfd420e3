"""The whole-VM hindsight bound of the balance scenario (issue 14), checked against brute force."""

from __future__ import annotations

import itertools

import numpy as np
from test_balance_rl import synthetic_trace

from llmvirt.sim import balance_bound as bb
from llmvirt.sim.balance_env import BalanceEnv, EnvConfig


def _brute(sizes: np.ndarray, n_hosts: int, cores: float) -> float:
    """The exact least overflow of whole VMs: every assignment tried."""
    best = np.inf
    for hosts in itertools.product(range(n_hosts), repeat=sizes.size):
        load = np.bincount(np.array(hosts), sizes, minlength=n_hosts)
        best = min(best, float(np.maximum(load - cores, 0).sum()))
    return best


def _instances(n: int) -> list[tuple[np.ndarray, int, float]]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        hosts = int(rng.integers(2, 4))
        vms = int(rng.integers(2, 8))
        cores = float(rng.choice([2, 4]))
        sizes = np.round(rng.uniform(0.0, cores * 1.2, vms), 2)  # hundredths of a core: exact in the solver
        out.append((sizes, hosts, cores))
    return out


def test_all_whole_is_the_exact_optimum_and_never_below_the_fluid_bound() -> None:
    """With every VM kept whole the bound is the brute-force optimum; with fewer whole it stays between
    the fluid bound and that optimum. Some instances must need the solver (positive overflow)."""
    positive = 0
    for sizes, hosts, cores in _instances(60):
        exact = _brute(sizes, hosts, cores)
        fluid = max(0.0, sizes.sum() - hosts * cores)
        assert abs(bb.step_bound(sizes, hosts, cores, whole=sizes.size) - exact) < 1e-6, (sizes, hosts, cores)
        partial = bb.step_bound(sizes, hosts, cores, whole=hosts)
        assert fluid - 1e-9 <= partial <= exact + 1e-9
        positive += exact > fluid + 1e-6
    assert positive >= 5  # whole VMs do cost more than fluid ones on these instances


def test_the_screen_only_clears_steps_that_pack_with_nothing_unmet() -> None:
    """Where the screen says a step packs with nothing unmet, brute force agrees; it clears some steps."""
    cleared = 0
    for sizes, hosts, cores in _instances(80):
        ok = bb.screen_zero(sizes[None, :], np.ones((1, sizes.size), dtype=bool), np.array([cores]),
                            np.array([hosts]))[0]
        if ok:
            cleared += 1
            assert _brute(sizes, hosts, cores) == 0.0
    assert cleared >= 5


def test_fleet_bound_lies_between_the_fluid_bound_and_every_policy() -> None:
    """On tight fleets the whole-VM bound is at least the fluid one and at most any policy's cost."""
    from llmvirt.bench.balance_rl import fleets, run_named

    trace = synthetic_trace(60, 120, seed=4)
    cfg = EnvConfig(hosts=(2, 3), host_cores=(4,), episode_steps=20, load=(0.85, 1.0), max_vms=60)
    fl = fleets(trace, np.arange(len(trace.names)), 4, 0, cfg)
    env = BalanceEnv(trace, len(fl), cfg, fleets=fl)
    whole = bb.fleet_bounds(env, cfg.episode_steps)
    fluid = env.metrics.bound_core_h
    assert (whole >= fluid - 1e-9).all() and whole.sum() > 0
    for name in ("none", "watcher-wb:100", "baseline:cp-sat:2:0.1"):
        res = run_named(name, trace, fl, cfg)
        assert all(r["cost"] >= w - 1e-9 for r, w in zip(res.rows, whole, strict=True)), name
