"""CloudSim's consolidation baselines: overload detection x VM selection with PABFD placement, and DVFS.

Follows ``PowerVmAllocationPolicyMigrationAbstract`` (CloudSim 5.0) step by
step, including behaviour that looks accidental but shapes the published
numbers:

- placement predicts a host's utilisation from the MIPS currently allocated
  to its VMs, tentative placements of this optimisation included (the
  policy's ``getUtilizationOfCpuMips(host)``), but subtracts the power at the
  utilisation of the last processing tick (``host.getPower()``), so a host
  woken in this round looks dearer for the next VM and VMs spread over
  several idle hosts; hosts with nothing allocated skip the "over-utilised
  after allocation" check;
- in the under-utilised phase, hosts that received VMs in the over-utilised
  phase are *not* excluded (CloudSim builds that exclusion set from a new,
  empty list), and switched-off hosts are never woken;
- VMs are sorted by current MIPS, descending, with a stable sort (Java's);
- RAM and bandwidth limit only the initial placement: afterwards the VMs'
  RAM and bandwidth requests come from ``UtilizationModelNull`` (0), so
  migrations are constrained by CPU alone (VM RAM still sets migration time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from llmvirt.sim.engine import Simulation
from llmvirt.sim.initial_placement import initial_decreasing, initial_first_fit, initial_pabfd, initial_recorded
from llmvirt.sim.overload import Detector, Thr, make_detector
from llmvirt.sim.pabfd_state import Headroom, HostVms, IdleTwins, Tentative, host_kinds
from llmvirt.sim.pool_search import PoolSearch
from llmvirt.sim.power import FastPower, power

SELECTIONS = ("mmt", "mu", "rs", "mc")  #: min migration time, min utilisation, random, max correlation


@dataclass
class Dvfs:
    """DVFS: first-fit placement at start, never migrates (energy follows load)."""

    name: str = "dvfs"  #: display name

    def initial_chooser(self, sim: Simulation):  # noqa: ANN201
        """First fit, as PowerVmAllocationPolicySimple."""
        return initial_first_fit(sim)

    def decide(self, sim: Simulation, t: float) -> list[tuple[int, int]]:
        """No migrations."""
        return []


@dataclass
class StaticDecreasing:
    """First-fit (``ffd``) or best-fit (``bfd``) decreasing placement at start, then no migration."""

    best: bool = False  #: best fit (least MIPS left over) instead of first fit
    name: str = "ffd"  #: display name

    def initial_chooser(self, sim: Simulation):  # noqa: ANN201
        """The decreasing-size chooser; its ``order`` tells place_initial which VM goes first."""
        return initial_decreasing(sim, self.best)

    def decide(self, sim: Simulation, t: float) -> list[tuple[int, int]]:
        """No migrations."""
        return []


@dataclass
class PabfdPolicy:
    """Overload detection + VM selection + power-aware best-fit decreasing placement."""

    detector: Detector  #: THR, IQR, MAD or LR
    selection: str = "mmt"  #: mmt, mu or rs
    seed: int = 0  #: for rs
    name: str = ""  #: display name, e.g. thr-mmt-0.8
    #: charge an empty host its idle power when choosing where a VM goes: CloudSim's PABFD counts only the
    #: increase over the host's power at 0 %, so waking a switched-off host looks as cheap as filling a running one.
    #: "Empty" is no CPU allocated, the simulator's switched-off host; on a real cluster a host whose VMs use no CPU
    #: at all counts as empty too, although it is on
    wake_cost: bool = False
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Check the selection and seed the random one."""
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown VM selection {self.selection!r}: use one of {', '.join(SELECTIONS)}")
        self._rng = np.random.default_rng(self.seed)
        if not self.name:
            param = getattr(self.detector, "threshold", getattr(self.detector, "safety", ""))
            self.name = f"{self.detector.name}-{self.selection}-{param}"

    def initial_chooser(self, sim: Simulation):  # noqa: ANN201
        """PABFD with every host idle."""
        return initial_pabfd(sim)

    # ---- helpers ------------------------------------------------------------------------------
    def _snapshot(self, sim: Simulation) -> Tentative:
        s = self._snapshot_raw(sim)
        s.allocated = np.minimum(s.cap_sum, sim.dc.total_mips)
        threshold = self.detector.threshold if isinstance(self.detector, Thr) else None
        s.room = Headroom(s, sim.dc.pe_mips, sim.dc.total_mips, threshold)
        return s

    def _snapshot_raw(self, sim: Simulation) -> Tentative:
        dc = sim.dc
        placed = np.flatnonzero(sim.vm_host >= 0)
        hosts = sim.vm_host[placed]
        req = sim.req[placed]
        capped = np.minimum(req, dc.pe_mips[hosts])
        hist = np.zeros((dc.n_hosts, sim.history.shape[1]))
        if not isinstance(self.detector, Thr):
            contrib = sim.history[placed] * (dc.vm_mips[placed] / dc.total_mips[hosts])[:, None]
            np.add.at(hist, hosts, contrib)
        return Tentative(
            vms=HostVms(sim.host_vms),
            req_sum=np.bincount(hosts, req, minlength=dc.n_hosts),
            cap_sum=np.bincount(hosts, capped, minlength=dc.n_hosts),
            hist=hist,
            count=np.fromiter(map(len, sim.host_vms), dtype=np.int64, count=dc.n_hosts),
            allocated=np.zeros(dc.n_hosts),
        )

    def _add(self, sim: Simulation, s: Tentative, host: int, vm: int, sign: int) -> None:
        dc = sim.dc
        r = sim.req.item(vm)  # Python floats: the same IEEE arithmetic as NumPy's scalars, with less overhead
        s.req_sum[host] = s.req_sum.item(host) + sign * r
        cap = s.cap_sum[host] = s.cap_sum.item(host) + sign * min(r, dc.pe_mips.item(host))
        s.allocated[host] = min(cap, dc.total_mips.item(host))
        if not isinstance(self.detector, Thr):
            s.hist[host] += sign * sim.history[vm] * (dc.vm_mips[vm] / dc.total_mips[host])
        s.count[host] += sign
        s.room.changed(host)
        if sign > 0:
            s.vms.edit(host).append(vm)
        else:
            s.vms.edit(host).remove(vm)

    def _overloaded(self, sim: Simulation, s: Tentative, host: int) -> bool:
        dc = sim.dc
        req_util = s.req_sum[host] / dc.total_mips[host]
        if isinstance(self.detector, Thr):
            return bool(req_util > self.detector.threshold)
        hist = s.hist[host]
        nz = np.flatnonzero(hist)
        hist = hist[: nz[-1] + 1] if nz.size else hist[:0]
        max_mig = max((dc.vm_ram[v] / (dc.bw[host] / 8000) for v in s.vms[host]), default=0.0)
        return self.detector.is_overloaded(float(req_util), hist, max_mig)

    def _find_host(self, sim: Simulation, s: Tentative, vm: int, pool: np.ndarray,
                   p_stale: np.ndarray) -> int:
        """PowerVmAllocationPolicyMigrationAbstract.findHostForVm over the hosts in ``pool`` (a mask over hosts;
        candidates are taken in ascending ids): the hosts whose checks pass, then the least power increase."""
        dc = sim.dc
        r = sim.req.item(vm)
        # RAM and bandwidth never bind here: after creation a PlanetLab VM requests them through
        # UtilizationModelNull, i.e. 0 (Vm.getCurrentRequestedRam), so only CPU constrains migrations:
        # pe >= r, allocated <= capacity - r and, under THR, (requested + r) / capacity <= threshold
        # unless nothing is allocated (Headroom keeps which hosts pass them).
        thr = isinstance(self.detector, Thr)
        cand = s.room.maybe(r, pool) if thr else s.room.candidates(r, pool)
        if cand.size == 0:
            return -1
        allocated = s.allocated
        if self.wake_cost:  # an empty host was drawing nothing: placing on it costs its whole power
            p_stale = np.where(allocated == 0, 0.0, p_stale)
        total = dc.total_mips
        u = allocated[cand]
        u += r
        u /= total[cand]
        np.minimum(u, 1.0, out=u)
        diff = self._fast.at(cand, u)
        diff -= p_stale[cand]
        if thr:  # the least increase among the hosts that pass (argmin keeps the first of equals, as CloudSim)
            while True:
                best = int(diff.argmin())
                if diff.item(best) == math.inf:
                    return -1
                host = int(cand[best])
                if s.room.passes(host, r):  # only a host at its limit can fail: then the next best
                    return host
                diff[best] = math.inf
        for host in cand[np.argsort(diff, kind="stable")]:
            if s.allocated[host] != 0:
                self._add(sim, s, int(host), vm, +1)
                over = self._overloaded(sim, s, int(host))
                self._add(sim, s, int(host), vm, -1)
                if over:
                    continue
            return int(host)
        return -1

    def _select(self, sim: Simulation, s: Tentative, host: int) -> int:
        vms = s.vms[host]
        movable = getattr(sim, "movable", None)  # real clusters: a VM that cannot live-migrate is never chosen
        if movable is not None:
            vms = [v for v in vms if movable[v]]
        if not vms:
            return -1
        if self.selection == "mmt":  # the first of the least RAM (argmin's rule), on a list of a few VMs
            return min(vms, key=self._ram_of(sim).__getitem__)
        if self.selection == "mu":
            util = sim.req[vms] / sim.dc.vm_mips[vms]
            return vms[int(util.argmin())]
        if self.selection == "rs":
            return vms[int(self._rng.integers(len(vms)))]
        if self.selection == "mc":
            return self._max_correlation(sim, vms)
        raise ValueError(f"unknown VM selection {self.selection!r}")

    @staticmethod
    def _max_correlation(sim: Simulation, vms: list[int]) -> int:
        """PowerVmSelectionPolicyMaximumCorrelation: the VM whose history is best explained (R^2 of a
        least-squares fit) by the other VMs' histories; MMT when there is too little history."""
        n = len(vms)
        m = int(sim.history_len[vms].min())
        if n < 2 or m <= n:  # OLS needs more observations than regressors + intercept
            return vms[int(np.argmin(sim.dc.vm_ram[vms]))]
        data = sim.history[vms, :m]
        best, best_r2 = 0, np.finfo(float).tiny  # Java's Double.MIN_VALUE start, strict >
        for i in range(n):
            y = data[i]
            x = np.column_stack([np.ones(m), np.delete(data, i, axis=0).T])
            coef, *_ = np.linalg.lstsq(x, y, rcond=None)
            ss_tot = float(((y - y.mean()) ** 2).sum())
            r2 = 1 - float(((y - x @ coef) ** 2).sum()) / ss_tot if ss_tot > 0 else 0.0
            if r2 > best_r2:
                best, best_r2 = i, r2
        return vms[best]

    def _ram_of(self, sim: Simulation) -> list[float]:
        """Each VM's RAM as a Python list (MMT compares a few VMs at a time: no array calls)."""
        ram = sim.dc.vm_ram
        if getattr(self, "_ram_src", None) is not ram:
            self._ram_src, self._ram_list = ram, ram.tolist()
        return self._ram_list

    def _sorted_by_mips(self, sim: Simulation, vms: list[int]) -> list[int]:
        return sorted(vms, key=lambda v: -sim.req[v])  # Python's sort is stable, like Java's

    # ---- the optimisation -------------------------------------------------------------------
    def decide(self, sim: Simulation, t: float) -> list[tuple[int, int]]:
        """optimizeAllocation: migrations off over-utilised hosts, then consolidation of under-utilised ones."""
        dc = sim.dc
        if getattr(self, "_fast", None) is None or self._fast.table is not dc.power_table:
            self._fast = FastPower(dc.power_table)
            self._kinds = host_kinds(dc.pe_mips, dc.total_mips, dc.power_table)
        s = self._snapshot(sim)
        p_stale = power(dc.power_table, np.minimum(1.0, sim.util_mips / dc.total_mips))
        active = np.flatnonzero(s.count > 0)  # hosts with VMs: nothing is edited yet
        if isinstance(self.detector, Thr):  # _overloaded's test on every active host at once
            over = active[s.req_sum[active] / dc.total_mips[active] > self.detector.threshold].tolist()
        else:
            over = [h for h in active.tolist() if self._overloaded(sim, s, h)]
        over_mask = np.zeros(dc.n_hosts, dtype=bool)
        over_mask[over] = True
        to_move: list[int] = []
        for host in over:
            while True:
                vm = self._select(sim, s, host)
                if vm < 0:
                    break
                to_move.append(vm)
                self._add(sim, s, host, vm, -1)
                if not self._overloaded(sim, s, host):
                    break
        plan: list[tuple[int, int]] = []
        if to_move:  # this phase's hosts only receive VMs: search one idle host of each kind
            twins = IdleTwins(~over_mask & _placeable(sim), s.allocated, self._kinds, p_stale)
            for vm in self._sorted_by_mips(sim, to_move):
                host = self._find_host(sim, s, vm, twins.pool, p_stale)
                if host >= 0:
                    self._add(sim, s, host, vm, +1)
                    twins.received(host)
                    plan.append((vm, host))
        plan += self._consolidate(sim, s, over_mask, p_stale)
        return plan

    def _gates(self, sim: Simulation) -> tuple[np.ndarray | bool, np.ndarray | bool]:
        """(hosts not to empty, hosts not to receive) in this step's consolidation, beyond CloudSim's own rules:
        none for CloudSim's policies; a gated or learned consolidation closes some."""
        return False, False

    def _empty_order(self, eligible: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The order in which consolidation tries to empty ``eligible`` hosts: CloudSim's, ascending use (ties
        by id)."""
        return eligible[np.argsort(u[eligible], kind="stable")]

    def _consolidate(self, sim: Simulation, s: Tentative, over_mask: np.ndarray,
                     p_stale: np.ndarray) -> list[tuple[int, int]]:
        """getMigrationMapFromUnderUtilizedHosts."""
        dc = sim.dc
        keep, closed = self._gates(sim)
        u = sim.util_mips / dc.total_mips
        u = np.where((u > 1) & (u < 1.01), 1.0, u)
        off = u == 0
        excl_under = over_mask | off | _holds_unmovable(sim) | keep
        pool = ~(over_mask | off | closed) & _placeable(sim)
        plan: list[tuple[int, int]] = []
        # Under THR, feasibility only shrinks during consolidation (the pool loses hosts, allocations
        # only grow, failed attempts are rolled back), so a VM at least as large as one that found no
        # host cannot find one either: skip the search. Exact, not a heuristic.
        monotone = isinstance(self.detector, Thr)
        smallest_failure = np.inf
        # CloudSim takes the least-utilised host left, again and again. u stays as it is during the
        # loop and hosts only ever leave (a host that receives a VM counted VMs already, or gives it
        # back on a rollback), so that is the hosts in ascending u (ties by id, as argmin) less those
        # excluded by the time they come up: one sort instead of a search per host.
        eligible = np.flatnonzero(~excl_under & (u > 0) & (u < 1) & (s.count > 0))
        search = PoolSearch(pool, s, dc.total_mips, self._fast, p_stale) if monotone else None
        for host in self._empty_order(eligible, u).tolist():
            if excl_under[host]:
                continue
            pool[host] = False
            if search is not None:
                search.drop(host)
            vms = self._sorted_by_mips(sim, s.vms[host])
            if search is not None:  # the host's VMs evaluated together, then placed one by one
                search.ahead([sim.req.item(vm) for vm in vms])
            placed: list[tuple[int, int]] = []
            for vm in vms:
                if monotone and sim.req[vm] >= smallest_failure:
                    dst = -1
                elif search is not None:
                    dst = search.next_best()
                else:
                    dst = self._find_host(sim, s, vm, pool, p_stale)
                    if dst < 0 and monotone:
                        smallest_failure = sim.req[vm]
                if dst < 0:
                    for pvm, phost in placed:
                        self._add(sim, s, phost, pvm, -1)
                    placed = []
                    break
                self._add(sim, s, dst, vm, +1)
                placed.append((vm, dst))
            for _vm, dst in placed:
                excl_under[dst] = True
            plan += placed
        return plan


def _placeable(sim: Simulation) -> np.ndarray:
    """Hosts that may receive VMs: all in the simulator; not those in maintenance on a real cluster."""
    mask = getattr(sim, "placeable", None)
    return np.ones(sim.dc.n_hosts, dtype=bool) if mask is None else mask


def _holds_unmovable(sim: Simulation) -> np.ndarray:
    """Hosts that cannot be emptied because a VM on them cannot live-migrate (none in the simulator)."""
    movable = getattr(sim, "movable", None)
    out = np.zeros(sim.dc.n_hosts, dtype=bool)
    if movable is not None and (~movable).any():
        out[sim.vm_host[~movable]] = True
    return out


def run_policy(sim: Simulation, policy: PabfdPolicy | Dvfs | StaticDecreasing, migration_slowdown: float = 1.0
               ) -> dict[str, float]:
    """Place at time 0 with the policy's rule (or where a real cluster had each VM), run the day, return
    CloudSim's summary figures; with ``migration_slowdown`` X, every live migration after the initial placement
    takes X times as long (a 1/X share of the hosts' bandwidth, as on a production network slower than the
    simulator's)."""
    sim.place_initial(policy.initial_chooser(sim) if sim.dc.initial_host is None else initial_recorded(sim))
    if migration_slowdown != 1.0:
        sim.dc.bw = sim.dc.bw / migration_slowdown
    return sim.run(policy.decide).summary()


def make_policy(name: str, seed: int = 0) -> PabfdPolicy | Dvfs | StaticDecreasing:
    """A baseline by name: ``dvfs``, ``ffd``, ``bfd``, ``DETECTOR-SELECTION-PARAM`` (e.g. ``thr-mmt-0.8``).
    ``llmvirt[:POLICY]`` (the learned consolidation head) resolves in :mod:`llmvirt.strategies.registry`."""
    if name == "dvfs":
        return Dvfs()
    if name in ("ffd", "bfd"):
        return StaticDecreasing(best=name == "bfd", name=name)
    parts = name.split("-")
    if len(parts) != 3:
        raise ValueError(f"unknown policy {name!r}: use dvfs, ffd, bfd, DETECTOR-SELECTION-PARAM (e.g. "
                         "thr-mmt-0.8) or llmvirt[:POLICY]")
    det, sel, param = parts
    try:
        value = float(param)
    except ValueError:
        raise ValueError(f"policy {name!r}: parameter {param!r} is not a number") from None
    return PabfdPolicy(make_detector(det, value), sel, seed=seed, name=name)
