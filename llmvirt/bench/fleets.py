"""``llmvirt bench --scenario fleets``: the hard balance scenario on any trace, from the command line.

The batched balance scenario (:mod:`llmvirt.sim.balance_env`) is where the learned balance policy was
trained and where every balance claim in bench/RESULTS.md is judged: fleets drawn from the trace's VMs
at 45 % to 80 % mean CPU load, randomly placed within the allocation limits, one honest cost. This
module runs it on any trace an operator (or a reviewer) brings, with the same policy names as
``rebalance --policy`` (``tuned:FAMILY``, ``llmvirt-rl``, ``cp-sat:K:P``, ...), over several seeds of
fleets, with the fluid lower bound beside. ``mixed`` draws each host's size (8 to 32 cores, 20 GiB a
core: the mixed-size scenario of bench/balance_mixed.py). A trace shorter than a day plays episodes as
long as it allows (at least :data:`MIN_STEPS` steps after the hour of history the policies read).
Bitbrains' MHz count at 2,600 MHz a core (as in every recorded figure); the generic format, which has
percentages of vCPUs, counts a vCPU at full use as a core.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from llmvirt.bench.balance_rl import fleets, run_named, strategy_name
from llmvirt.errors import UsageError
from llmvirt.sim.balance_env import HISTORY, EnvConfig
from llmvirt.sim.fleet_shapes import MIXED  # noqa: F401 - re-exported for the benchmarks
from llmvirt.sim.traces import GENERIC_MHZ_PER_VCPU, UsageTrace

MIN_STEPS = 12  #: the shortest episode (one hour of 300 s steps)
KEYS = ("cost", "unmet_core_h", "migration_core_h", "migrations", "gib_migrated", "overload_host_h", "refused",
        "demand_core_h", "bound_core_h")  #: each row's totals over a seed's fleets


@dataclass
class FleetRow:
    """One policy on one seed's fleets of one trace."""

    trace: str  #: label
    policy: str  #: the name as given (``tuned:FAMILY`` keeps its resolved name beside)
    seed: int  #: fleet seed
    totals: dict[str, float]  #: cost, unmet_core_h, migration_core_h, migrations, demand_core_h, bound_core_h, ...
    seconds: float  #: wall time


def scenario_config(trace: UsageTrace, mixed: bool) -> EnvConfig:
    """The scenario for ``trace``: a day's episode, or as many steps as the trace allows after the history."""
    cfg = MIXED if mixed else EnvConfig()
    if np.allclose(trace.cpu_capacity_mhz, trace.vcpus * GENERIC_MHZ_PER_VCPU):  # the generic format: a vCPU a core
        cfg = replace(cfg, mhz_per_core=GENERIC_MHZ_PER_VCPU)
    steps = int(trace.cpu_mhz.shape[1]) - HISTORY - 1
    if steps < MIN_STEPS:
        raise UsageError(f"the trace has {trace.cpu_mhz.shape[1]} samples; the fleets scenario needs at least "
                         f"{MIN_STEPS + HISTORY + 1} (an hour of history, then an hour of steps)")
    return replace(cfg, episode_steps=min(cfg.episode_steps, steps))


def resolved(name: str) -> str:
    """The strategy ``name`` runs (``tuned:FAMILY``: the committed point); one clear line when there is none."""
    try:
        return strategy_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check(names: list[str]) -> None:
    """One clear line for a name the scenario cannot run."""
    from llmvirt.strategies.registry import balance_actor, make_balancer

    for name in names:
        base = resolved(name)
        try:
            if balance_actor(base) is None:
                make_balancer(base)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def run(label: str, trace: UsageTrace, names: list[str], n_fleets: int, seeds: list[int],
        mixed: bool = False) -> list[FleetRow]:
    """Every policy on the same ``n_fleets`` fleets of each seed (VMs of ``trace``)."""
    cfg = scenario_config(trace, mixed)
    vms = np.arange(len(trace.names))
    rows = []
    for seed in seeds:
        fl = fleets(trace, vms, n_fleets, seed, cfg)
        for name in names:
            res = run_named(name, trace, fl, cfg)
            rows.append(FleetRow(label, name, seed, {k: res.total(k) for k in KEYS}, res.seconds))
    return rows


def summary(rows: list[FleetRow]) -> list[dict[str, Any]]:
    """Per trace and policy: cost min / median / max over seeds, mean, unmet share, migrations, bound."""
    out = []
    for trace in dict.fromkeys(r.trace for r in rows):
        for policy in dict.fromkeys(r.policy for r in rows if r.trace == trace):
            mine = [r for r in rows if r.trace == trace and r.policy == policy]
            cost = [r.totals["cost"] for r in mine]
            demand = sum(r.totals["demand_core_h"] for r in mine)
            out.append({"trace": trace, "policy": policy, "runs": resolved(policy), "seeds": [r.seed for r in mine],
                        "cost": cost, "cost_mean": statistics.mean(cost), "cost_min": min(cost),
                        "cost_median": statistics.median(cost), "cost_max": max(cost),
                        "unmet_demand_pct": 100 * sum(r.totals["unmet_core_h"] for r in mine) / max(demand, 1e-9),
                        "migrations": sum(r.totals["migrations"] for r in mine),
                        "refused": sum(r.totals["refused"] for r in mine),
                        "bound_core_h": statistics.mean(r.totals["bound_core_h"] for r in mine),
                        "seconds": sum(r.seconds for r in mine)})
    return out
