"""A whole-VM hindsight bound for the balance scenario: tighter than the fluid one, still a bound.

The fluid bound lets VMs split over every host. Real VMs are whole: at every step the least any
policy can leave unserved is the minimum, over every placement of whole VMs on the fleet's hosts,
of the demand above each host's cores — knowing the future, moving for free, ignoring memory and
allocation limits. That per-step minimum is a bin-packing problem; this module bounds it from
below without solving it exactly for hundreds of VMs:

- **Screen.** Greedy list scheduling (each VM to the least-loaded host) never loads a host above
  ``total / m + largest x (1 - 1/m)``; where that is within the cores, a placement with nothing
  unmet exists and the step's minimum is 0 (exact).
- **Relax the small VMs.** Keep the ``K`` largest VMs whole and let the others split freely
  ("sand"). For identical hosts the relaxed minimum is ``max(fluid, O)``, where ``O`` is the least
  overflow of the ``K`` whole VMs alone (sand fills free cores first; what it cannot fill is the
  fluid excess). ``O`` is solved with OR-Tools CP-SAT on integer hundredths of a core rounded
  *down* (a size within 1e-8 of a core of the next hundredth counts as it: float noise); the
  solver's proven bound is used, so a time limit never yields more than the optimum.

So the bound is at least the fluid one, at most the true per-step optimum, and equal to it when
every VM is kept whole and the solver proves optimality (tests/test_balance_bound.py checks both
against brute force). It ignores what migrations cost and that the future is unknown, so the gap
between a policy and this bound is the price of moving and of not knowing what comes next.
"""

from __future__ import annotations

import numpy as np

from llmvirt.sim.balance_env import BalanceEnv
from llmvirt.sim.cpsat_balancer import solve

SCALE = 100  #: demand in hundredths of a core for the solver
WHOLE_PER_HOST = 4  #: the relaxation keeps this many of the largest VMs whole per host
DETERMINISTIC_LIMIT_S = 0.5  #: CP-SAT's deterministic time per step (reproducible on any machine)


def screen_zero(demand: np.ndarray, valid: np.ndarray, cores: np.ndarray, n_hosts: np.ndarray) -> np.ndarray:
    """Per environment, True where greedy list scheduling provably leaves nothing unmet.

    ``demand`` and ``valid`` are (E, V); ``cores`` and ``n_hosts`` are (E,)."""
    d = np.where(valid, demand, 0.0)
    m = np.maximum(n_hosts, 1)
    worst = d.sum(axis=1) / m + d.max(axis=1) * (1 - 1 / m)
    return worst <= cores + 1e-12


def min_overflow_whole(sizes: np.ndarray, n_hosts: int, cores: float) -> float:
    """A lower bound (the optimum when the solver proves it) of the least total demand above
    ``cores`` when the VMs of ``sizes`` (cores) are placed whole on ``n_hosts`` identical hosts."""
    units = np.floor(np.sort(np.asarray(sizes, dtype=np.float64))[::-1] * SCALE + 1e-6).astype(np.int64)
    cap = int(round(cores * SCALE))
    units = units[units > 0]
    if units.size == 0 or units.sum() <= cap * n_hosts and units[0] <= cap and units.size <= n_hosts:
        return 0.0
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    k, h = units.size, n_hosts
    # symmetry: VM i (largest first) may only go to hosts 0..i (identical hosts are interchangeable)
    x = {(i, j): m.NewBoolVar(f"x{i}_{j}") for i in range(k) for j in range(min(i + 1, h))}
    for i in range(k):
        m.AddExactlyOne(x[i, j] for j in range(min(i + 1, h)))
    over = []
    for j in range(h):
        load = sum(int(units[i]) * x[i, j] for i in range(j, k))
        o = m.NewIntVar(0, int(units.sum()), f"o{j}")
        m.Add(o >= load - cap)
        over.append(o)
    m.Minimize(sum(over))
    solver, status = solve(m, DETERMINISTIC_LIMIT_S)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return 0.0
    return max(0.0, float(solver.BestObjectiveBound())) / SCALE


def step_bound(sizes: np.ndarray, n_hosts: int, cores: float, whole: int | None = None) -> float:
    """The whole-VM bound of one step: ``max(fluid, least overflow of the largest VMs kept whole)``.

    ``whole`` VMs are kept whole (default ``WHOLE_PER_HOST x n_hosts``); the rest split freely."""
    sizes = np.asarray(sizes, dtype=np.float64)
    fluid = max(0.0, float(sizes.sum()) - n_hosts * cores)
    keep = whole if whole is not None else WHOLE_PER_HOST * n_hosts
    largest = np.sort(sizes)[::-1][:keep]
    return max(fluid, min_overflow_whole(largest, n_hosts, cores))


def fleet_bounds(env: BalanceEnv, steps: int) -> np.ndarray:
    """Per environment of a balance scenario on fixed fleets, the whole-VM bound in core-hours over
    ``steps`` steps (the env is advanced; no policy acts)."""
    dt_h = env.cfg.interval_s / 3600
    n_hosts = env.host_valid.sum(axis=1)
    total = np.zeros(env.n_envs)
    for _ in range(steps):
        env.advance()
        demand = env.demand_now()
        zero = screen_zero(demand, env.vm_valid, env.cores, n_hosts)
        for e in np.flatnonzero(~zero):
            sizes = demand[e][env.vm_valid[e]]
            total[e] += step_bound(sizes, int(n_hosts[e]), float(env.cores[e])) * dt_h
    return total
