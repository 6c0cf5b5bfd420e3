"""The simulation engine: CloudSim's PowerDatacenter time line, vectorised over hosts and VMs.

At every decision time the engine updates all hosts (``HostDynamicWorkload.
updateVmsProcessing``), accounts energy, SLA and migration degradation from the
previous processing point, asks the policy for migrations, and plays those
migrations out at their real completion times inside the interval, where
CloudSim also processes the data centre. Hosts with a VM migrating in or out
are updated with the time-shared scheduler's migration rules (10 % of the
VM's MIPS reserved on the destination, 90 % given on the source); all other
hosts are updated in bulk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from llmvirt.sim.datacenter import START_OFFSET_S, DataCenter
from llmvirt.sim.power import FastPower, trapezoid_ws
from llmvirt.sim.sched_entries import Entries, entries_of

HISTORY_LENGTH = 30  # PowerVm.HISTORY_LENGTH
CORE_MIPS = 1000.0  #: one core-hour of unmet demand = 1,000 MIPS for an hour (the honest metrics' unit)


@dataclass
class Metrics:
    """Accumulated results, in CloudSim's units."""

    energy_ws: float = 0.0  #: watt-seconds
    migrations: int = 0  #: migrations started
    host_active_s: float = 0.0  #: pooled active host time
    host_sla_s: float = 0.0  #: pooled time with allocated < requested
    vm_requested: float = 0.0  #: MIPS x s requested by VMs
    vm_underallocated_migration: float = 0.0  #: MIPS x s lost to migration
    vm_unmet: float = 0.0  #: MIPS x s requested by VMs and not given them on the host they run on (honest metric)
    host_overload_s: float = 0.0  #: host time with its own VMs' demand above capacity (incoming VMs not counted)
    migration_vm_s: float = 0.0  #: VM-seconds spent migrating
    gib_migrated: float = 0.0  #: memory moved by migrations (the VMs' RAM), GiB
    steps: int = 0  #: decision steps
    per_step_energy_ws: list[float] = field(default_factory=list)  #: energy per decision interval
    per_step_migrations: list[int] = field(default_factory=list)  #: migrations per decision step
    per_step_active_hosts: list[int] = field(default_factory=list)  #: active hosts at each step
    per_step_demand_mips: list[float] = field(default_factory=list)  #: total requested MIPS at each step

    @property
    def energy_kwh(self) -> float:
        """Energy in kWh."""
        return self.energy_ws / 3.6e6

    @property
    def slatah(self) -> float:
        """SLA time per active host (fraction)."""
        return self.host_sla_s / self.host_active_s if self.host_active_s else 0.0

    @property
    def pdm(self) -> float:
        """Performance degradation due to migration (fraction)."""
        return self.vm_underallocated_migration / self.vm_requested if self.vm_requested else 0.0

    @property
    def slav(self) -> float:
        """SLATAH x PDM."""
        return self.slatah * self.pdm

    @property
    def esv(self) -> float:
        """Energy (kWh) x SLAV."""
        return self.energy_kwh * self.slav

    @property
    def unmet_demand_pct(self) -> float:
        """CPU demand not served, as a share of demand (%): a migrating VM counts as served by its source
        (less the migration degradation); the destination's reservation is not a violation."""
        return 100 * self.vm_unmet / self.vm_requested if self.vm_requested else 0.0

    def summary(self) -> dict[str, float]:
        """The figures CloudSim prints (percentages as CloudSim shows them), then the honest ones that do
        not share CloudSim's migration artefact (docs/metrics.md)."""
        return {"energy_kwh": self.energy_kwh, "migrations": self.migrations, "slatah_pct": 100 * self.slatah,
                "pdm_pct": 100 * self.pdm, "slav_pct": 100 * self.slav, "esv": self.esv,
                "unmet_demand_pct": self.unmet_demand_pct, "overload_host_h": self.host_overload_s / 3600,
                "migration_vm_s": self.migration_vm_s, "unmet_core_h": self.vm_unmet / 3600 / CORE_MIPS,
                "gib_migrated": self.gib_migrated}


@dataclass(slots=True)
class Migration:
    """A live migration in flight."""

    vm: int  #: VM index
    src: int  #: source host
    dst: int  #: destination host
    done_at: float  #: completion time


class Simulation:
    """Dynamic state of a data centre under a placement policy."""

    def __init__(self, dc: DataCenter) -> None:
        """Start with every VM unplaced; call :meth:`place_initial` next."""
        self.dc = dc
        h, v = dc.n_hosts, dc.n_vms
        self.vm_host = np.full(v, -1, dtype=np.int64)
        self.alive = np.ones(v, dtype=bool)
        self.host_vms: list[list[int]] = [[] for _ in range(h)]
        self.util_mips = np.zeros(h)  # HostDynamicWorkload.utilizationMips (stale between updates)
        self.prev_util_mips = np.zeros(h)
        self.req = np.zeros(v)  # VM requested MIPS at the last update
        self._req_at: float | None = None  # the time of self.req's trace sample (None: set by placement)
        self.history = np.zeros((v, HISTORY_LENGTH))  # PowerVm utilisation history, most recent first
        self.history_len = np.zeros(v, dtype=np.int64)
        self._spare_history = np.zeros((v, HISTORY_LENGTH))  # the next tick's history is written here
        self.in_flight: list[Migration] = []
        self.migrating_in: dict[int, list[int]] = {}  # host -> VMs migrating in
        self.in_migration = np.zeros(v, dtype=bool)
        self._flying: dict[int, int] = {}  # VM -> migrations in flight
        self.metrics = Metrics()
        self._layout: Entries | None = None  # the placement's scheduler entries; None when it changed
        self._curves = FastPower(dc.power_table)
        self.remove_idle = True  # HostDynamicWorkload.getCompletedVms: VMs requesting 0 MIPS are removed
        self.last_time = 0.0
        self._step_energy = 0.0  # energy of the decision interval being simulated
        self._last_history_tick = -1.0
        # SLA history "last entry" per host and per VM
        self._h_t = np.full(h, -1.0)
        self._h_alloc = np.zeros(h)
        self._h_req = np.zeros(h)
        self._h_active = np.zeros(h, dtype=bool)
        self._h_own = np.zeros(h)  # demand of the VMs running on each host (not those migrating in)
        self._own_demand = np.zeros(h)
        self._v_t = np.full(v, -1.0)
        self._v_alloc = np.zeros(v)
        self._v_req = np.zeros(v)
        self._v_mig = np.zeros(v, dtype=bool)

    # --- placement bookkeeping -------------------------------------------------------------------
    def ram_used(self) -> np.ndarray:
        """RAM allocated per host, migrating-in VMs included."""
        placed = self.vm_host >= 0
        used = np.bincount(self.vm_host[placed], self.dc.vm_ram[placed], minlength=self.dc.n_hosts)
        for host, vms in self.migrating_in.items():
            used[host] += self.dc.vm_ram[vms].sum()
        return used

    def place_initial(self, choose: Callable[[int, np.ndarray, np.ndarray, np.ndarray], int]) -> None:
        """Create every VM at time 0 with its full MIPS requested (CloudSim's ``isBeingInstantiated``).

        ``choose(vm, available_mips, free_ram, free_bw)`` returns a host index or -1.
        """
        dc = self.dc
        avail = dc.total_mips.copy()
        ram = dc.ram_mb.copy()
        bw = dc.bw.copy()
        for vm in getattr(choose, "order", range(dc.n_vms)):  # a decreasing-size chooser sets its own order
            vm = int(vm)
            host = choose(vm, avail, ram, bw)
            if host < 0:
                raise RuntimeError(f"VM {vm} fits nowhere at time 0")
            avail[host] -= dc.vm_mips[vm]
            ram[host] -= dc.vm_ram[vm]
            bw[host] -= dc.vm_bw[vm]
            self.vm_host[vm] = host
            self.host_vms[host].append(vm)
            self.req[vm] = dc.vm_mips[vm]
        self._layout = None

    # --- the CloudSim update ----------------------------------------------------------------------
    def _allocate(self, req: np.ndarray, entries: bool = True) -> tuple[np.ndarray | None, np.ndarray,
                                                                         np.ndarray | None]:
        """All hosts' schedulers at once: (per-VM allocated on its source, host utilisation, host requested);
        without ``entries``, only the utilisation (None for the others).

        Every VM is an entry on the host it runs on; a VM migrating in is a second entry on its
        destination. VmSchedulerTimeSharedOverSubscription gives a migrating-out VM 90 % of its
        capped request and reserves 10 % on the destination; an over-subscribed host scales every
        allocation by capacity / demand and floors it. The host's utilisation counts a migrating-out
        VM's allocation / 0.9 (HostDynamicWorkload), i.e. at full demand.
        """
        dc = self.dc
        lay = self._layout
        if lay is None:
            lay = self._layout = entries_of(self.vm_host, self.alive, self.in_migration,
                                            [(m.vm, m.dst) for m in self.in_flight], self.migrating_in, dc.pe_mips)
        r = req[lay.vms]
        capped = np.minimum(r, lay.pe)
        demand = np.where(lay.incoming, capped * 0.1, capped) if lay.any_incoming else capped
        n = dc.n_hosts
        host_demand = np.bincount(lay.hosts, demand, minlength=n)
        over = host_demand > dc.total_mips
        alloc = capped * lay.factor
        if over.any():
            scale = dc.total_mips / np.maximum(host_demand, 1e-300)
            alloc = np.where(over[lay.hosts], np.floor(alloc * scale[lay.hosts]), alloc)
        counted = np.where(lay.leaving, alloc / 0.9, alloc)
        util = np.bincount(lay.hosts, counted, minlength=n)
        if not entries:
            return None, util, None
        vm_alloc = np.zeros(dc.n_vms)
        if lay.any_incoming:
            vm_alloc[lay.own_vms] = alloc[lay.own]
            self._own_demand = np.bincount(lay.own_hosts, r[lay.own], minlength=n)
        else:
            vm_alloc[lay.vms] = alloc
            self._own_demand = np.bincount(lay.hosts, r, minlength=n)
        return vm_alloc, util, np.bincount(lay.hosts, r, minlength=n)

    def update(self, t: float, remove_idle: bool | None = None, moves_next: bool = False) -> None:
        """Process the data centre at time ``t`` (PowerDatacenter.updateCloudetProcessing...Force);
        ``moves_next``: migrations complete at ``t`` right after, and another update follows them."""
        dc = self.dc
        if t != self._req_at:  # at the same time again (after migrations): the same requests
            self.req = np.where(self.alive, dc.utilization_at(t) * dc.vm_mips, 0.0)
            self._req_at = t
        req = self.req
        vm_alloc, util, requested = self._allocate(req, entries=not moves_next)
        self.prev_util_mips, self.util_mips = self.util_mips, util
        dt = t - self.last_time
        if dt > 0:
            p_prev, p_now = self._watts(self.prev_util_mips), self._watts(util)
            e = float(trapezoid_ws(p_prev, p_now, self.prev_util_mips == 0, dt).sum())
            self.metrics.energy_ws += e
            self._step_energy += e
        # an update at the same time (after migrations start or complete) closes no entry: only the state
        # changes; one right before migrations complete only closes them (the update after sets them anew)
        has = self.alive & (self.vm_host >= 0)  # only ever loses VMs during a run: no entry is older than dt
        if dt > 0:
            self._close_host_entries(t)
            self._close_vm_entries(t, has)
        if vm_alloc is not None and requested is not None:
            self._set_host_entries(t, util, requested)
            self._set_vm_entries(t, vm_alloc, req, has)
        self._record_history(t, req)
        if self.remove_idle if remove_idle is None else remove_idle:
            idle = has & (req == 0) & ~self.in_migration
            for vm in np.flatnonzero(idle):
                self.host_vms[self.vm_host[vm]].remove(int(vm))
                self.vm_host[vm] = -1
                self.alive[vm] = False
                self._layout = None
        self.last_time = t

    def _watts(self, mips: np.ndarray) -> np.ndarray:
        """Each host's power at ``mips`` in use (CloudSim reads a utilisation just above 1 as 1; power() caps
        it at 1 in any case)."""
        return self._curves.at_all(np.minimum(mips / self.dc.total_mips, 1.0))

    def _close_host_entries(self, t: float) -> None:
        m = self.metrics
        closes = (self._h_t >= 0) & (self._h_t < t) & self._h_active
        dt = np.where(closes, t - self._h_t, 0.0)
        m.host_active_s += float(dt.sum())
        m.host_sla_s += float(dt[self._h_alloc < self._h_req].sum())
        m.host_overload_s += float(dt[self._h_own > self.dc.total_mips].sum())

    def _set_host_entries(self, t: float, alloc: np.ndarray, req: np.ndarray) -> None:
        self._h_t[:] = t
        self._h_alloc, self._h_req, self._h_active = alloc, req, alloc > 0
        self._h_own = self._own_demand

    def _close_vm_entries(self, t: float, has: np.ndarray) -> None:
        m = self.metrics
        closes = has & (self._v_t >= 0) & (self._v_t < t)
        dt = np.where(closes, t - self._v_t, 0.0)
        m.vm_requested += float((self._v_req * dt).sum())
        short = closes & (self._v_alloc < self._v_req)
        gap = (self._v_req - self._v_alloc) * dt
        m.vm_unmet += float(gap[short].sum())
        m.vm_underallocated_migration += float(gap[short & self._v_mig].sum())

    def _set_vm_entries(self, t: float, alloc: np.ndarray, req: np.ndarray, has: np.ndarray) -> None:
        self._v_t = np.where(has, t, self._v_t)
        self._v_alloc = np.where(has, alloc, self._v_alloc)
        self._v_req = np.where(has, req, self._v_req)
        self._v_mig = np.where(has, self.in_migration, self._v_mig)

    def _record_history(self, t: float, req: np.ndarray) -> None:
        """PowerVm.updateVmProcessing: once per scheduling tick, non-zero utilisation only."""
        if (t - START_OFFSET_S) % self.dc.interval_s != 0 or t == self._last_history_tick:
            return
        self._last_history_tick = t
        util = req / self.dc.vm_mips
        add = self.alive & (self.vm_host >= 0) & (util != 0)
        # every row shifted into the spare array, then the few that record nothing copied back: cheaper than
        # shifting the many by mask, and no buffer for overlapping copies
        old, new = self.history, self._spare_history
        new[:, 1:] = old[:, :-1]
        new[:, 0] = util
        keep = (~add).nonzero()[0]
        new[keep] = old[keep]
        self.history, self._spare_history = new, old
        self.history_len += add
        np.minimum(self.history_len, HISTORY_LENGTH, out=self.history_len)

    # --- migrations ------------------------------------------------------------------------------
    def start_migrations(self, plan: list[tuple[int, int]], t: float) -> None:
        """Start the planned migrations at ``t`` (PowerDatacenter + Host.addMigratingInVm)."""
        if not plan:
            return
        dc, metrics = self.dc, self.metrics
        vms, dsts = [vm for vm, _ in plan], [dst for _, dst in plan]
        ram = dc.vm_ram[vms]
        seconds = (ram / (dc.bw[dsts] / (2 * 8000))).tolist()
        gib = (ram / 1024).tolist()
        self.in_migration[vms] = True
        self._layout = None
        metrics.migrations += len(plan)
        vm_s, moved_gib = metrics.migration_vm_s, metrics.gib_migrated  # summed in plan order, as one by one
        migrating_in, host_vms, flying, in_flight = self.migrating_in, self.host_vms, self._flying, self.in_flight
        for vm, dst, src, sec, moved in zip(vms, dsts, self.vm_host[vms].tolist(), seconds, gib, strict=True):
            incoming = migrating_in.setdefault(dst, [])
            if vm not in incoming:
                incoming.append(vm)
                host_vms[dst].append(vm)
            flying[vm] = flying.get(vm, 0) + 1
            vm_s += sec
            moved_gib += moved
            in_flight.append(Migration(vm, src, dst, t + sec))
        metrics.migration_vm_s, metrics.gib_migrated = vm_s, moved_gib
        self.update(t, remove_idle=False)  # the hosts re-run their schedulers at once

    def finish_migrations_until(self, end: float) -> None:
        """Play out completions before ``end``: update, move, update again, at each completion time."""
        while self.in_flight:
            when = min(m.done_at for m in self.in_flight)
            if when >= end:
                return
            self.update(when, moves_next=True)
            done = [m for m in self.in_flight if m.done_at == when]
            self.in_flight = [m for m in self.in_flight if m.done_at != when]
            for m in done:
                self._flying[m.vm] -= 1
                self._complete(m)
            self.update(when)

    def _complete(self, m: Migration) -> None:
        vm = m.vm
        src = self.vm_host.item(vm)
        if src >= 0 and vm in self.host_vms[src]:
            self.host_vms[src].remove(vm)
        incoming = self.migrating_in.get(m.dst, [])
        if vm in incoming:
            incoming.remove(vm)
            if not incoming:
                del self.migrating_in[m.dst]
        if vm in self.host_vms[m.dst]:
            self.host_vms[m.dst].remove(vm)
        self.host_vms[m.dst].append(vm)
        self.vm_host[vm] = m.dst
        self.in_migration[vm] = self._flying.get(vm, 0) > 0
        self._layout = None

    # --- the run loop ----------------------------------------------------------------------------
    def run(self, decide: Callable[[Simulation, float], list[tuple[int, int]]] | None,
            end: float | None = None) -> Metrics:
        """Run the trace's period (``end`` seconds if given): a decision at every tick, migrations played out
        between ticks."""
        end = self.dc.duration_s if end is None else end
        t = START_OFFSET_S + self.dc.interval_s
        while t < end:
            self._step_energy = 0.0
            self.finish_migrations_until(t)
            self.update(t)
            plan = decide(self, t) if decide is not None else []
            self.start_migrations(plan, t)
            m = self.metrics
            m.steps += 1
            m.per_step_energy_ws.append(self._step_energy)
            m.per_step_migrations.append(len(plan))
            m.per_step_active_hosts.append(int((self.util_mips > 0).sum()))
            m.per_step_demand_mips.append(float(self.req.sum()))
            t += self.dc.interval_s
        self._step_energy = 0.0
        self.finish_migrations_until(end)
        return self.metrics
