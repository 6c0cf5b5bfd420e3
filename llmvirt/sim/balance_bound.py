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


def _caps(cores: float | np.ndarray, n_hosts: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(cores, dtype=np.float64), (n_hosts,)).copy()


def min_overflow_whole(sizes: np.ndarray, n_hosts: int, cores: float | np.ndarray) -> float:
    """A lower bound (the optimum when the solver proves it) of the least total demand above the
    hosts' cores when the VMs of ``sizes`` (cores) are placed whole on ``n_hosts`` hosts of ``cores``
    each (one number: identical hosts; an array: each host's own)."""
    units = np.floor(np.sort(np.asarray(sizes, dtype=np.float64))[::-1] * SCALE + 1e-6).astype(np.int64)
    caps = np.rint(_caps(cores, n_hosts) * SCALE).astype(np.int64)
    identical = bool((caps == caps[0]).all())
    units = units[units > 0]
    if units.size == 0 or units.size <= n_hosts and (units <= np.sort(caps)[::-1][:units.size]).all():
        return 0.0  # one VM per host, the largest on the largest: nothing above any host
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    k, h = units.size, n_hosts
    # symmetry: on identical hosts VM i (largest first) may only go to hosts 0..i (they are interchangeable)
    reach = [min(i + 1, h) if identical else h for i in range(k)]
    x = {(i, j): m.NewBoolVar(f"x{i}_{j}") for i in range(k) for j in range(reach[i])}
    for i in range(k):
        m.AddExactlyOne(x[i, j] for j in range(reach[i]))
    over = []
    for j in range(h):
        load = sum(int(units[i]) * x[i, j] for i in range(k) if (i, j) in x)
        o = m.NewIntVar(0, int(units.sum()), f"o{j}")
        m.Add(o >= load - int(caps[j]))
        over.append(o)
    m.Minimize(sum(over))
    solver, status = solve(m, DETERMINISTIC_LIMIT_S)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return 0.0
    return max(0.0, float(solver.BestObjectiveBound())) / SCALE


def step_bound(sizes: np.ndarray, n_hosts: int, cores: float | np.ndarray, whole: int | None = None) -> float:
    """The whole-VM bound of one step: ``max(fluid, least overflow of the largest VMs kept whole)``; ``cores``
    as in :func:`min_overflow_whole`. ``whole`` VMs are kept whole (default ``WHOLE_PER_HOST x n_hosts``); the
    rest split freely (on hosts of any sizes, sand fills free cores anywhere, so the relaxation is still
    ``max(fluid, O)``)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    total_cores = n_hosts * cores if np.ndim(cores) == 0 else float(np.sum(cores))
    fluid = max(0.0, float(sizes.sum()) - total_cores)
    keep = whole if whole is not None else WHOLE_PER_HOST * n_hosts
    largest = np.sort(sizes)[::-1][:keep]
    return max(fluid, min_overflow_whole(largest, n_hosts, cores))


def greedy_fits(sizes: np.ndarray, cores: np.ndarray) -> bool:
    """True when placing the VMs largest first, each on the host with the most free cores, leaves
    nothing above any host: a placement with nothing unmet exists (the screen for hosts of mixed sizes)."""
    free = np.asarray(cores, dtype=np.float64).copy()
    for size in np.sort(np.asarray(sizes, dtype=np.float64))[::-1]:
        j = int(np.argmax(free))
        free[j] -= size
        if free[j] < -1e-12:
            return False
    return True


def fleet_bounds(env: BalanceEnv, steps: int) -> np.ndarray:
    """Per environment of a balance scenario on fixed fleets, the whole-VM bound in core-hours over
    ``steps`` steps (the env is advanced; no policy acts)."""
    dt_h = env.cfg.interval_s / 3600
    n_hosts = env.host_valid.sum(axis=1)
    caps = [env.cores[e, : n_hosts[e]] for e in range(env.n_envs)]
    identical = np.array([bool((c == c[0]).all()) for c in caps])
    total = np.zeros(env.n_envs)
    for _ in range(steps):
        env.advance()
        demand = env.demand_now()
        zero = screen_zero(demand, env.vm_valid, env.cores[:, 0], n_hosts) & identical
        for e in np.flatnonzero(~zero):
            sizes = demand[e][env.vm_valid[e]]
            if identical[e]:
                total[e] += step_bound(sizes, int(n_hosts[e]), float(caps[e][0])) * dt_h
            elif not greedy_fits(sizes, caps[e]):
                total[e] += step_bound(sizes, int(n_hosts[e]), caps[e]) * dt_h
    return total
