"""Placement of every VM at time 0 in the cloudsim scenario: PABFD, first-fit and best-fit decreasing,
and first fit. Each returns a chooser ``(vm, available_mips, free_ram, free_bw) -> host`` for
:meth:`llmvirt.sim.engine.Simulation.place_initial`."""

from __future__ import annotations

import numpy as np

from llmvirt.sim.engine import Simulation
from llmvirt.sim.power import power


def initial_pabfd(sim: Simulation):  # noqa: ANN202 - a chooser closure
    """Initial placement with PABFD at time 0 (every host's stale utilisation is 0)."""
    dc = sim.dc
    p0 = power(dc.power_table, np.zeros(dc.n_hosts))
    diffs: dict[float, np.ndarray] = {}  # the power increase depends on the VM's MIPS alone: a few VM types

    def choose(vm: int, avail: np.ndarray, ram: np.ndarray, bw: np.ndarray) -> int:
        r = dc.vm_mips[vm]
        ok = (dc.pe_mips >= r) & (avail >= r) & (ram >= dc.vm_ram[vm]) & (bw >= dc.vm_bw[vm])
        if not ok.any():
            return -1
        diff = diffs.get(r)
        if diff is None:
            diff = diffs[r] = power(dc.power_table, np.minimum(1.0, r / dc.total_mips)) - p0
        return int(np.argmin(np.where(ok, diff, np.inf)))

    return choose


def initial_decreasing(sim: Simulation, best: bool):  # noqa: ANN202
    """First-fit or best-fit decreasing at time 0: VMs are offered largest MIPS first."""
    dc = sim.dc
    order = np.argsort(-dc.vm_mips, kind="stable")

    def choose(vm: int, avail: np.ndarray, ram: np.ndarray, bw: np.ndarray) -> int:
        r = dc.vm_mips[vm]
        ok = (dc.pe_mips >= r) & (avail >= r) & (ram >= dc.vm_ram[vm]) & (bw >= dc.vm_bw[vm])
        idx = np.flatnonzero(ok)
        if not idx.size:
            return -1
        return int(idx[np.argmin(avail[idx] - r)]) if best else int(idx[0])

    choose.order = [int(v) for v in order]  # type: ignore[attr-defined]
    return choose


def initial_first_fit(sim: Simulation):  # noqa: ANN202
    """First fit at time 0, in VM order (PowerVmAllocationPolicySimple)."""
    dc = sim.dc

    def choose(vm: int, avail: np.ndarray, ram: np.ndarray, bw: np.ndarray) -> int:
        r = dc.vm_mips[vm]
        ok = (dc.pe_mips >= r) & (avail >= r) & (ram >= dc.vm_ram[vm]) & (bw >= dc.vm_bw[vm])
        idx = np.flatnonzero(ok)
        return int(idx[0]) if idx.size else -1

    return choose


def initial_recorded(sim: Simulation):  # noqa: ANN202
    """Every VM on the host the data centre records for it (``DataCenter.initial_host``), whatever its size: a
    real cluster's placement, which may overcommit its CPUs."""
    hosts = sim.dc.initial_host

    def choose(vm: int, avail: np.ndarray, ram: np.ndarray, bw: np.ndarray) -> int:
        return int(hosts[vm])

    return choose
