"""An optimising balancer: each decision solved exactly with OR-Tools CP-SAT (as ProxLB 2.x uses a solver).

``cp-sat[:K[:PRICE[:TRIGGER]]]``: when some host's CPU demand is above ``TRIGGER`` x its cores
(default 1.0), choose the set of at most ``K`` migrations (default 2) that minimises

    sum over hosts of max(0, demand - TRIGGER x cores)  +  PRICE x migrations     (in CPUs)

under the allocation limits (vCPUs and memory per host), never into a host in maintenance, moving
only VMs that may live-migrate. ``PRICE`` (default 0.5 CPU) is what one migration must relieve to
be worth it. The candidates are the VMs of the hosts above the trigger (VMs elsewhere cannot
relieve an overload by moving). CP-SAT runs on one worker with a deterministic time limit, so a
decision is reproducible; on a 3-to-10-host fleet it proves optimality well within it.

On a fleet of more than :data:`WHOLE_FLEET_HOSTS` hosts the model is cut to what K moves can use: the
``HOSTS_PER_MOVE`` x K hosts furthest above the trigger give the candidates, and as many hosts with the most CPU
headroom below it (not in maintenance) are the destinations besides the sources themselves. K moves relieve at
most K sources and reach at most K destinations, so the cut loses only where allocation limits or VM sizes bar
every one of the hosts kept; without it the model of 800 hosts and 1,500 VMs finds no answer within the limit
(no move at all, after 9-12 s). Fleets up to that size get the whole model, unchanged.

This is the issue-14 "optimising baseline": the exact answer to the same one-step question
llmvirt's heuristic loop answers greedily (the move that relieves the most overload now).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmvirt.model.arrays import ClusterArrays

SCALE = 100  # CPUs in hundredths: CP-SAT works on integers
DETERMINISTIC_LIMIT_S = 2.0  # CP-SAT's deterministic time per decision (reproducible, unlike wall time)
WHOLE_FLEET_HOSTS = 32  #: up to this many hosts the model holds every host (every benchmark fleet: 3 to 10)
HOSTS_PER_MOVE = 4  #: on a larger fleet, sources and destinations each: this many hosts per allowed move


def solve(model: object, limit_s: float) -> tuple[object, int]:
    """Solve a CP-SAT model reproducibly: one worker, a fixed seed, a deterministic time limit (the same
    answer on any machine, unlike a wall-clock limit). Returns (solver, status)."""
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.max_deterministic_time = limit_s
    return solver, solver.Solve(model)


@dataclass
class CpSatBalance:
    """At most ``max_moves`` migrations per decision minimising overload plus a price per move, solved exactly."""

    max_moves: int = 2  #: migrations per decision
    move_price: float = 0.5  #: CPUs of overload one migration must relieve to be worth it
    trigger: float = 1.0  #: share of a host's cores it may use before it counts as overloaded
    name: str = "cp-sat"  #: display name

    def decide(self, view: ClusterArrays) -> list[tuple[int, int]]:
        """The optimal moves (VM index, destination host index); none when no host is above the trigger."""
        return [(v, h) for v, h, _ in self._solve(view)]

    def explain(self, view: ClusterArrays) -> list[tuple[int, int, str]]:
        """:meth:`decide`'s moves with the solver's reason."""
        return self._solve(view)

    def _solve(self, view: ClusterArrays) -> list[tuple[int, int, str]]:
        cores, mem = view.host_sizes()
        load = view.cpus_used()
        cap = self.trigger * cores
        before = np.maximum(view.host_sum(load) - cap, 0.0)
        hot = np.flatnonzero(before > 1e-9)
        hosts = considered_hosts(view, cap, load, HOSTS_PER_MOVE * self.max_moves)
        cand = [int(v) for v in np.flatnonzero(np.isin(view.vm_host, np.intersect1d(hot, hosts)))
                if view.movable[v]]
        if hot.size == 0 or not cand or self.max_moves <= 0:
            return []
        from ortools.sat.python import cp_model

        m = cp_model.CpModel()
        x = {(v, h): m.NewBoolVar(f"x{v}_{h}") for v in cand for h in hosts
             if h == view.vm_host[v] or not view.maintenance[h]}
        for v in cand:
            m.AddExactlyOne(x[v, h] for h in hosts if (v, h) in x)
        fixed = np.ones(view.vm_host.size, dtype=bool)
        fixed[cand] = False
        ints = np.rint  # integer coefficients
        vcpus, mcap, cpu = view.vm_vcpus, view.vm_mem_cap, ints(load * SCALE).astype(np.int64)
        s = view.setup
        over = []
        for h in hosts:
            here = fixed & (view.vm_host == h)
            inc = [(v, x[v, h]) for v in cand if (v, h) in x]
            # allocation: never beyond the limits (or beyond what the host already holds, if it is already there)
            vcpu_cap = max(s.cpu_allocation_ratio * cores[h], float(vcpus[view.vm_host == h].sum()))
            mem_cap = max(s.ram_allocation_ratio * mem[h], float(mcap[view.vm_host == h].sum()))
            m.Add(sum(int(vcpus[v]) * b for v, b in inc) <= int(np.floor(vcpu_cap - vcpus[here].sum() + 1e-9)))
            m.Add(sum(int(np.ceil(mcap[v])) * b for v, b in inc) <= int(np.floor(mem_cap - mcap[here].sum() + 1e-6)))
            o = m.NewIntVar(0, int(cpu.sum()) + 1, f"o{h}")
            m.Add(o >= int(cpu[here].sum()) + sum(int(cpu[v]) * b for v, b in inc) - int(ints(cap[h] * SCALE)))
            over.append(o)
        moved = [x[v, int(view.vm_host[v])].Not() for v in cand]
        m.Add(sum(moved) <= self.max_moves)
        m.Minimize(sum(over) + int(ints(self.move_price * SCALE)) * sum(moved))
        solver, status = solve(m, DETERMINISTIC_LIMIT_S)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return []
        how = "optimal" if status == cp_model.OPTIMAL else "best found within the time limit"
        after = sum(solver.Value(o) for o in over) / SCALE + float(np.delete(before, hosts).sum())
        chosen = [(v, h) for v in cand for h in hosts
                  if h != view.vm_host[v] and (v, h) in x and solver.Value(x[v, h])]
        return [(v, h, f"CP-SAT ({how}): overload avoided, the demand above {100 * self.trigger:.0f} % of the "
                       f"hosts' cores from {before.sum():.1f} to {after:.1f} CPUs (at most {self.max_moves} moves, "
                       f"{self.move_price:g} CPU a move)")
                for v, h in in_feasible_order(view, chosen)]


def considered_hosts(view: ClusterArrays, cap: np.ndarray, load: np.ndarray, keep: int) -> np.ndarray:
    """The hosts in the model, ascending: all of them on a fleet of at most :data:`WHOLE_FLEET_HOSTS`; else the
    ``keep`` hosts furthest above ``cap`` (CPUs per host) and the ``keep`` with the most room below it that are not
    in maintenance."""
    if view.n_hosts <= WHOLE_FLEET_HOSTS:
        return np.arange(view.n_hosts)
    slack = cap - view.host_sum(load)  # CPUs below the trigger; negative: above it
    order = np.argsort(slack, kind="stable")
    sources = order[:keep][slack[order[:keep]] < -1e-9]
    desc = order[::-1]
    roomy = desc[~view.maintenance[desc] & (slack[desc] > 0)][:keep]
    return np.union1d(sources, roomy)


def in_feasible_order(view: ClusterArrays, moves: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``moves`` (a set the solver chose together) in an order in which each one, applied after those before
    it, keeps its destination within the allocation limits: moves out of a host go before moves into it.
    Migrations run one after another, so a set that only fits all at once (two VMs swapping hosts at their
    limits) is cut where no next move fits (the rest would be refused)."""
    s = view.setup
    cores, mem = view.host_sizes()
    vcpus = view.host_sum(view.vm_vcpus.astype(np.float64))
    mcap = view.host_sum(view.vm_mem_cap.astype(np.float64))
    pending, out = list(moves), []
    while pending:
        fits = [(vcpus[h] + view.vm_vcpus[v] <= s.cpu_allocation_ratio * cores[h] + 1e-9
                 and mcap[h] + view.vm_mem_cap[v] <= s.ram_allocation_ratio * mem[h] + 1e-6) for v, h in pending]
        if not any(fits):
            return out
        i = fits.index(True)
        v, h = pending[i]
        src = int(view.vm_host[v])
        vcpus[src] -= view.vm_vcpus[v]
        mcap[src] -= view.vm_mem_cap[v]
        vcpus[h] += view.vm_vcpus[v]
        mcap[h] += view.vm_mem_cap[v]
        out.append(pending.pop(i))
    return out


def make_cpsat(name: str, args: list[str]) -> CpSatBalance:
    """``cp-sat[:K[:PRICE[:TRIGGER]]]``."""
    try:
        nums = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"balancer {name!r}: use cp-sat[:MOVES[:PRICE[:TRIGGER]]] with numbers") from None
    if len(nums) > 3 or (nums and (nums[0] < 1 or nums[0] != int(nums[0]))):
        raise ValueError(f"balancer {name!r}: use cp-sat[:MOVES[:PRICE[:TRIGGER]]], MOVES a whole number >= 1")
    defaults = CpSatBalance()
    return CpSatBalance(int(nums[0]) if nums else defaults.max_moves,
                        nums[1] if len(nums) > 1 else defaults.move_price,
                        nums[2] if len(nums) > 2 else defaults.trigger, name=name)
