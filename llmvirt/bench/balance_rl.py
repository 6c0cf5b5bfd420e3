"""The learned balance policy against the tuned baselines, on fixed fleets of held-back (or training) VMs.

Every policy runs on the same fleets in the same batched simulator (:mod:`llmvirt.sim.balance_env`)
and is judged on the same cost. Fleets are drawn from a seed: the spread over seeds is the spread
over fleet shapes, VMs and days.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.sim.balance_env import BalanceEnv, EnvConfig, Fleet, draw_fleet, trace_pool
from llmvirt.sim.scan_window import scan
from llmvirt.sim.traces import UsageTrace

BITBRAINS_FAMILIES = {"bitbrains-jul": "bitbrains-rnd/rnd_2013-7_week1.tar.gz",
                      "bitbrains-aug": "bitbrains-rnd/rnd_2013-8.tar.gz"}
"""The trace families the benchmarks judge on (Bitbrains Rnd: July week 1, the August month), under the traces
directory."""
TUNE_SEEDS = (1000, 1001)
"""Seeds of the fleets of *training* VMs every benchmark tunes its baselines on (held-back fleets use 0, 1, ...)."""


def trace_families(traces_dir: Path) -> dict[str, Path]:
    """Each trace family's file under ``traces_dir`` (``../shared/traces`` beside a checkout)."""
    return {name: traces_dir / rel for name, rel in BITBRAINS_FAMILIES.items()}


def fleets(trace: UsageTrace, vms: np.ndarray, n: int, seed: int, cfg: EnvConfig) -> list[Fleet]:
    """``n`` fleets drawn from ``vms`` of ``trace`` with ``seed``."""
    rng = np.random.default_rng(seed)
    pool_cpu, vcpus, mcap, _ = trace_pool(trace, cfg.mhz_per_core)
    return [draw_fleet(rng, pool_cpu, vcpus, mcap, cfg, vms) for _ in range(n)]


@dataclass
class EvalResult:
    """One policy on one set of fleets."""

    policy: str  #: name
    rows: list[dict[str, float]]  #: per fleet: cost, unmet_core_h, migrations, ...
    seconds: float  #: wall time

    def total(self, key: str = "cost") -> float:
        """Sum over the fleets."""
        return float(sum(r[key] for r in self.rows))


def run_actor(actor: Any, trace: UsageTrace, fl: list[Fleet], cfg: EnvConfig) -> EvalResult:
    """A batched actor (:class:`~llmvirt.policy.balance_policy.BalanceActor`) on every fleet at once."""
    env = BalanceEnv(trace, len(fl), cfg, fleets=fl)
    t0 = time.perf_counter()
    for _ in range(cfg.episode_steps):
        vm, dst, _, _ = actor.act(env.state())
        env.step(vm, dst)
    return EvalResult(actor.name, [env.metrics.row(e) for e in range(len(fl))], time.perf_counter() - t0)


def run_balancer(balancer: Any, trace: UsageTrace, fl: list[Fleet], cfg: EnvConfig, name: str = "",
                 demand: Any = None) -> EvalResult:
    """A balance-scenario baseline (``decide(ClusterArrays)``: Watcher, ProxLB) on every fleet; its moves of a
    step are applied one by one (refused ones counted), then time advances. ``demand``: a function of the
    environment giving the (E, V) CPU demand in cores the baseline decides on instead of the demand now (a
    forecast from ``env.state()``, or the next step itself for a look-ahead bound)."""
    env = BalanceEnv(trace, len(fl), cfg, fleets=fl)
    t0 = time.perf_counter()
    for _ in range(cfg.episode_steps):
        views = [env.fleet_view(e) for e in range(len(fl))]
        if demand is not None:
            seen = demand(env) * cfg.mhz_per_core
            views = [replace(v, vm_cpu_mhz=seen[e, : v.vm_host.size]) for e, v in enumerate(views)]
        plans = [balancer.decide(v) for v in views]
        for k in range(max((len(p) for p in plans), default=0)):
            vm = np.array([p[k][0] if k < len(p) else -1 for p in plans])
            dst = np.array([p[k][1] if k < len(p) else -1 for p in plans])
            env.move(vm, dst)
        env.advance()
    return EvalResult(name or balancer.name, [env.metrics.row(e) for e in range(len(fl))], time.perf_counter() - t0)


def scan_view(env: BalanceEnv) -> np.ndarray:
    """(E, V) what a scan shows of every VM's CPU, cores: its demand, scaled down on a host whose demand exceeds
    its cores so that the host's use is just under its cores (a fair share of what the host has; a saturated host
    never reads as above 100 %, so a trigger at 1.0 cannot fire on it, as on a real scan)."""
    return scan(env, env.demand_now())[0]


BASELINE_GRID: dict[str, tuple[str, ...]] = {
    "watcher-wb": tuple(f"watcher-wb:{t}" for t in (50, 60, 70, 80, 85, 90, 95, 100, 105, 110, 120)),
    "proxlb": ("proxlb:5", "proxlb:10", "proxlb:20", "proxlb:40", "proxlb:5:cpu", "proxlb:10:cpu", "proxlb:20:cpu",
               "proxlb:40:cpu", "proxlb:60:cpu", "proxlb:80:cpu"),
    "llmvirt-rl-fallback": tuple(f"llmvirt-rl-fallback:{t}" for t in (0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2)),
}
"""Each tuned baseline family's grid (Watcher's CPU threshold in %, ProxLB's balanciness on memory or CPU, the
fallback's trigger as a share of the host's cores)."""

PROXMOX_CRS_GRID: tuple[str, ...] = ("proxmox-crs:0.1", "proxmox-crs:0.2", "proxmox-crs", "proxmox-crs:0.5",
                                     "proxmox-crs:0.2:0.05", "proxmox-crs:0.2:0.2", "proxmox-crs:static")
"""Proxmox CRS's grid: the imbalance threshold (default 0.3), the margin (default 0.1), static mode."""

CPSAT_GRID: tuple[str, ...] = tuple(f"cp-sat:{k}:{p}" for k in (1, 2, 4) for p in (0.1, 0.5))
"""CP-SAT's grid: moves per decision K and price per move P (trigger 1.0)."""


def strategy_name(name: str) -> str:
    """The strategy ``name`` runs: ``[baseline:]tuned:FAMILY`` is the point committed in
    policies/tuned_balance.json (ValueError when there is none), any other name itself, less ``baseline:``."""
    from llmvirt.strategies.tuned import TUNED_BALANCE_FILE, tuned_name

    base = name.removeprefix("baseline:")
    return tuned_name(base.removeprefix("tuned:"), TUNED_BALANCE_FILE) if base.startswith("tuned:") else base


def run_named(name: str, trace: UsageTrace, fl: list[Fleet], cfg: EnvConfig) -> EvalResult:
    """Any balance strategy name of the registry on the fleets (a tuned actor, e.g. ``tuned:llmvirt-rl-fallback``,
    runs batched like any actor)."""
    from llmvirt.strategies.registry import balance_actor, make_balancer

    base = strategy_name(name)
    actor = balance_actor(base)
    if actor is not None:
        result = run_actor(actor, trace, fl, cfg)
        result.policy = name
        return result
    return run_balancer(make_balancer(base), trace, fl, cfg, name)


def tune(trace: UsageTrace, vms: np.ndarray, cfg: EnvConfig, n_fleets: int, seeds: tuple[int, ...],
         grids: dict[str, tuple[str, ...]] | None = None) -> dict[str, dict[str, Any]]:
    """Each family's best grid point (``grids``, default :data:`BASELINE_GRID`) by total cost on fleets
    of the training VMs ``vms``; each family's grid is printed."""
    fl = [f for s in seeds for f in fleets(trace, vms, n_fleets, s, cfg)]
    best: dict[str, dict[str, Any]] = {}
    for family, grid in (grids or BASELINE_GRID).items():
        costs = {name: run_named(name, trace, fl, cfg).total() for name in grid}
        pick = min(costs, key=lambda k: costs[k])
        best[family] = {"strategy": pick, "cost": costs[pick], "grid": costs}
        grid_text = ", ".join(f"{k}={v:.0f}" for k, v in costs.items())
        print(f"  tuned {family}: {pick} (cost {costs[pick]:.1f}; grid {grid_text})")
    return best
