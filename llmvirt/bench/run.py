"""Side-by-side comparison of policies on identical input, with the scenario's lower bound.

Used by ``llmvirt bench``; plain functions so the benchmark scripts and tests call them too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.bench import (  # noqa: F401 - re-exported for the benchmark scripts
    DEFAULT_BALANCE_POLICIES,
    DEFAULT_CLOUDSIM_POLICIES,
    DEFAULT_MEMORY_POLICIES,
    DEFAULT_PINNING_POLICIES,
)
from llmvirt.errors import UsageError
from llmvirt.model.score import COST_WEIGHTS, consolidation_cost
from llmvirt.sim import episodes
from llmvirt.sim.cloudsim_policies import run_policy
from llmvirt.sim.datacenter import DataCenter, cloudsim_datacenter
from llmvirt.sim.engine import Metrics, Simulation
from llmvirt.sim.fleet import BALANCE_SETUP, MEMORY_SETUP, FleetMetrics, FleetSim
from llmvirt.sim.pinning import PIN_SETUP, PinMetrics
from llmvirt.sim.pinning import run as run_pinning
from llmvirt.sim.split import HELD_DAYS
from llmvirt.sim.traces import TraceError, UsageTrace, load_planetlab
from llmvirt.strategies.registry import make_balancer, make_balloon, make_pin_policy, make_policy

__all__ = ["make_policy", "make_balancer", "make_balloon", "make_pin_policy", "cloudsim_days", "run_cloudsim",
           "run_fleet", "results_json", "plot", "energy_lower_bound_kwh"]


@dataclass
class FleetResult:
    """One balancer or balloon policy on one Bitbrains (or generic) trace."""

    trace: str  #: trace name
    policy: str  #: policy name
    summary: dict[str, float]  #: headline figures
    metrics: FleetMetrics | PinMetrics  #: per-step series
    seconds: float  #: wall time of the run


def balance_lower_bound(trace: UsageTrace, n_hosts: int) -> float:
    """Host-hours of overload no placement can avoid: a VM alone above a host's capacity, or the
    whole fleet's demand above the fleet's capacity (then at least one host is overloaded)."""
    s = BALANCE_SETUP
    cpu_total = trace.cpu_mhz.sum(axis=0)
    mem_total = trace.mem_mib.sum(axis=0)
    single = ((trace.cpu_mhz > s.host_mhz) | (trace.mem_mib > s.host_mem_mib)).sum(axis=0)
    fleet = (cpu_total > n_hosts * s.host_mhz) | (mem_total > n_hosts * s.host_mem_mib)
    return float(np.maximum(single, fleet.astype(int)).sum()) * trace.interval_s / 3600


def memory_bound(trace: UsageTrace) -> float:
    """Average GiB an oracle could reclaim with no guest pressure: every target at the demand."""
    return float((trace.mem_capacity_mib[:, None] - trace.mem_mib).sum(axis=0).mean()) / 1024


def memory_cost_bound(trace: UsageTrace, vm_host: np.ndarray, host_mem_mib: float) -> float | None:
    """The lowest ``memory_cost`` any balloon policy could reach on this placement, knowing the future: each
    step, every balloon at its VM's use (no pressure; the most taken), so a host is overloaded only where its
    VMs' use alone exceeds its memory, and it gains the reclaimed memory it needed, up to what its VMs leave
    unused. Squeezing a VM below its use never pays while no VM holds 100 GiB (a VM-hour of pressure costs
    what 100 GiB-hours reclaimed are worth): checked, and None where a VM does, as the bound does not hold."""
    from llmvirt.model.score import memory_cost

    if float(trace.mem_capacity_mib.max()) >= 100 * 1024:
        return None
    n_hosts, dt_h = int(vm_host.max()) + 1, trace.interval_s / 3600
    use = np.zeros((n_hosts, trace.mem_mib.shape[1]))
    np.add.at(use, vm_host, trace.mem_mib)
    cap = np.bincount(vm_host, trace.mem_capacity_mib.astype(np.float64), minlength=n_hosts)[:, None]
    short = np.maximum(cap - host_mem_mib, 0.0)
    gained = np.minimum(short, cap - use)
    return memory_cost({"guest_pressure_h": 0.0, "mem_overload_h": float((use > host_mem_mib).sum()) * dt_h,
                        "needed_reclaimed_gib_h": float(gained.sum()) / 1024 * dt_h})


def run_fleet(scenario: str, trace: UsageTrace, label: str, policies: list[str]) -> tuple[list[FleetResult], dict]:
    """Every policy on the trace in the balance or memory scenario, with the scenario's bound."""
    results: list[FleetResult] = []
    if scenario == "pinning":
        for name in policies:
            t0 = time.perf_counter()
            pm = run_pinning(trace, PIN_SETUP, make_pin_policy(name))
            results.append(FleetResult(label, name, pm.summary(), pm, time.perf_counter() - t0))
        return results, {label: {"weighted_slowdown": 1.0}}
    for name in policies:
        if scenario == "balance":
            sim = FleetSim(trace, BALANCE_SETUP, extra_hosts=1)
            t0 = time.perf_counter()
            m = sim.run(balance=make_balancer(name))
        else:
            sim = FleetSim(trace, MEMORY_SETUP)
            t0 = time.perf_counter()
            m = sim.run(balloon=make_balloon(name))
        results.append(FleetResult(label, name, m.summary(), m, time.perf_counter() - t0))
    n_hosts = FleetSim(trace, BALANCE_SETUP, extra_hosts=1).n_hosts
    if scenario == "balance":
        return results, {label: {"host_overload_h": balance_lower_bound(trace, n_hosts)}}
    return results, {label: {"reclaimed_gib_avg_max": memory_bound(trace), "guest_pressure_h": 0.0,
                             "memory_cost": memory_cost_bound(trace, FleetSim(trace, MEMORY_SETUP).vm_host,
                                                              MEMORY_SETUP.host_mem_mib)}}


@dataclass
class RunResult:
    """One policy on one trace."""

    trace: str  #: trace directory name
    policy: str  #: policy name
    summary: dict[str, float]  #: CloudSim's figures
    metrics: Metrics  #: per-step series
    seconds: float  #: wall time of the run


def min_watts_per_mips(dc: DataCenter) -> float:
    """The least power any host can spend per MIPS delivered (at a table breakpoint, since power is
    piecewise linear): no placement can carry demand D on less than D times this."""
    u = np.arange(1, 11) / 10
    per = dc.power_table[:, 1:] / (u[None, :] * dc.total_mips[:, None])
    return float(per.min())


def energy_lower_bound_kwh(dc: DataCenter, demand_mips: list[float]) -> float:
    """Energy lower bound: each interval's demand carried at the best watts-per-MIPS of any host."""
    return float(np.sum(demand_mips)) * min_watts_per_mips(dc) * dc.interval_s / 3.6e6


def cloudsim_days(path: Path, side: str = "all") -> Iterator[tuple[str, DataCenter]]:
    """The consolidation days of ``path``, each with its label. A PlanetLab day directory is one day on CloudSim's
    800 hosts, as CloudSim runs it. A usage trace (a Bitbrains directory or ``.tar.gz``, a generic ``.csv`` or
    ``.parquet``) gives each of its whole days: ``side``'s VMs (``all``, or ``held``: the VMs the learned policies
    never trained on) at CloudSim's VM sizes, on CloudSim's hosts in its shape (hosts per VM), as tuning runs them."""
    usage = path.suffix in (".csv", ".parquet", ".gz") or path.is_file() or (path.is_dir() and any(path.glob("*.csv")))
    if not usage:
        if side != "all":
            raise UsageError(f"{path}: --held-out splits a usage trace's VMs; PlanetLab is split by day (held back: "
                             f"{', '.join(HELD_DAYS)}), so name a held-back day instead")
        yield path.name, cloudsim_datacenter(load_planetlab(path))
        return
    days = episodes.usage_days(path, side, 1 << 30, (episodes.CLOUDSIM_HOSTS_PER_VM,))
    if not days:
        raise TraceError(f"{path}: less than a day of samples; the cloudsim scenario simulates whole days")
    for day in days:
        yield day.label, episodes.datacenter(day)


def run_cloudsim(traces: list[Path], policies: list[str], seed: int = 0,
                 side: str = "all") -> tuple[list[RunResult], dict[str, float]]:
    """Every policy on every day of every trace (:func:`cloudsim_days`); the results and each day's energy lower
    bound."""
    results: list[RunResult] = []
    bounds: dict[str, float] = {}
    for path in traces:
        for label, dc in cloudsim_days(path, side):
            for name in policies:
                policy = make_policy(name, seed=seed)
                sim = Simulation(dc)
                t0 = time.perf_counter()
                summary = run_policy(sim, policy)
                results.append(RunResult(label, name, summary, sim.metrics, time.perf_counter() - t0))
                bounds.setdefault(label, energy_lower_bound_kwh(dc, sim.metrics.per_step_demand_mips))
    return results, bounds


def results_json(results: list[RunResult], bounds: dict[str, float]) -> dict[str, Any]:
    """The ``bench --json`` document."""
    return {
        "scenario": "cloudsim",
        "cost_weights": COST_WEIGHTS,
        "runs": [{"trace": r.trace, "policy": r.policy, **r.summary, "cost": round(consolidation_cost(r.summary), 6),
                  "seconds": round(r.seconds, 3)} for r in results],
        "lower_bound": {t: {"energy_kwh": e} for t, e in bounds.items()},
    }


def plot(results: list[RunResult], bounds: dict[str, float], path: Path) -> None:
    """Per-step curves (first trace) and a summary chart (means over traces), as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = results[0].trace
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    hours = None
    for r in (r for r in results if r.trace == first):
        hours = np.arange(len(r.metrics.per_step_active_hosts)) * 300 / 3600
        axes[0, 0].plot(hours, r.metrics.per_step_active_hosts, label=r.policy, lw=1)
        axes[0, 1].plot(hours, np.array(r.metrics.per_step_energy_ws) / 3.6e3, label=r.policy, lw=1)
    axes[0, 0].set(title=f"active hosts ({first})", xlabel="hour")
    axes[0, 1].set(title=f"energy per interval, Wh ({first})", xlabel="hour")
    axes[0, 0].legend(fontsize=7)
    names = list(dict.fromkeys(r.policy for r in results))
    means = {k: [np.mean([r.summary[k] for r in results if r.policy == n]) for n in names]
             for k in ("energy_kwh", "slav_pct")}
    axes[1, 0].bar(names, means["energy_kwh"], color="tab:blue")
    axes[1, 0].axhline(np.mean(list(bounds.values())), color="k", ls="--", label="lower bound")
    axes[1, 0].set(title="energy kWh (mean over traces)")
    axes[1, 0].legend(fontsize=7)
    axes[1, 1].bar(names, means["slav_pct"], color="tab:red")
    axes[1, 1].set(title="SLAV % (mean over traces)")
    for ax in axes[1]:
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fleet(results: list[FleetResult], scenario: str, path: Path) -> None:
    """Per-step overloaded hosts (first trace) and a summary chart, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = results[0].trace
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for r in (r for r in results if r.trace == first):
        m = r.metrics
        if isinstance(m, PinMetrics):
            axes[0].plot(np.arange(len(m.per_step)) * 300 / 3600, m.per_step, label=r.policy, lw=0.8)
        else:
            hours = np.arange(len(m.per_step_overloaded)) * 300 / 3600
            axes[0].plot(hours, np.cumsum(m.per_step_overloaded) * 300 / 3600, label=r.policy, lw=1)
    axes[0].set(title=(f"weighted slowdown per step ({first})" if scenario == "pinning"
                       else f"cumulative host overload, host-hours ({first})"), xlabel="hour")
    axes[0].legend(fontsize=7)
    key = {"balance": "host_overload_h", "memory": "guest_pressure_h"}.get(scenario, "weighted_slowdown")
    names = list(dict.fromkeys(r.policy for r in results))
    axes[1].bar(names, [np.mean([r.summary[key] for r in results if r.policy == n]) for n in names])
    axes[1].set(title=f"{key} (mean over traces)")
    axes[1].tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
