"""The simulated data centre of CloudSim's PlanetLab examples (../shared/reference/README.md).

800 hosts alternating HP ML110 G4 / G5, four 1-vCPU VM types assigned in
contiguous blocks over the name-sorted trace files, 300 s scheduling interval. The same data centre can be
built from other host models (:data:`FLEETS`): the ``ibm`` fleet alternates two IBM servers of CloudSim's
power package, with more and faster cores, more memory per host and another power curve; the ``mixed`` fleet
has three host sizes in one fleet.
The simulator's time base follows CloudSim: decisions at 300.1, 600.1, ... s
(the broker's 0.1 s start offset), utilisation linearly interpolated between
samples exactly as ``UtilizationModelPlanetLabInMemory`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from llmvirt.sim.power import ML110_G4, ML110_G5, X3250_X3470, X3250_X3480, X3550_X5670, X3550_X5675
from llmvirt.sim.traces import CpuTrace, load_planetlab

HOST_PE_MIPS = (1860.0, 2660.0)  #: G4, G5 (host type = index % 2)
HOST_PES = 2
HOST_RAM_MB = 4096
HOST_BW = 1_000_000  #: kbit/s (1 Gbit/s)
VM_MIPS = (2500.0, 2000.0, 1000.0, 500.0)
VM_RAM_MB = (870, 1740, 1740, 613)
VM_BW = 100_000
INTERVAL_S = 300.0
START_OFFSET_S = 0.1  #: CloudSim's first event after the broker's submission delay


@dataclass(frozen=True)
class HostModel:
    """One server model: its cores, the MIPS of one core, its memory and its SPECpower table (0..100 %)."""

    name: str
    pes: int
    pe_mips: float
    ram_mb: int
    power: tuple[float, ...]

    @property
    def total_mips(self) -> float:
        """All cores' MIPS."""
        return self.pes * self.pe_mips


FLEETS: dict[str, tuple[HostModel, ...]] = {
    "cloudsim": (HostModel("HP ProLiant ML110 G4", HOST_PES, HOST_PE_MIPS[0], HOST_RAM_MB, ML110_G4),
                 HostModel("HP ProLiant ML110 G5", HOST_PES, HOST_PE_MIPS[1], HOST_RAM_MB, ML110_G5)),
    "ibm": (HostModel("IBM x3250 (Xeon X3470)", 4, 2933.0, 8192, X3250_X3470),
            HostModel("IBM x3550 (2 x Xeon X5670)", 12, 2933.0, 12288, X3550_X5670)),
    "mixed": (HostModel("HP ProLiant ML110 G5", HOST_PES, HOST_PE_MIPS[1], HOST_RAM_MB, ML110_G5),
              HostModel("IBM x3250 (Xeon X3480)", 4, 3067.0, 8192, X3250_X3480),
              HostModel("IBM x3550 (2 x Xeon X5675)", 12, 3067.0, 16384, X3550_X5675)),
}
"""Host models a fleet alternates (host ``i`` is model ``i % len``): CloudSim's PlanetLab examples' HP pair; the
older IBM pair of CloudSim's power package; and a three-model fleet of 2, 4 and 12 cores, two of them the
newer IBM models (cores, MHz and memory as CloudSim's power models document them)."""


def mean_host_mips(fleet: str) -> float:
    """A fleet's CPU capacity per host, averaged over its alternating models."""
    models = FLEETS[fleet]
    return sum(m.total_mips for m in models) / len(models)


@dataclass
class DataCenter:
    """Static description of hosts and VMs; the simulator keeps the dynamic state."""

    pe_mips: np.ndarray  #: per host, MIPS of one PE
    total_mips: np.ndarray  #: per host, PEs x PE MIPS
    power_table: np.ndarray  #: per host, watts at 0..100 %
    ram_mb: np.ndarray  #: per host
    bw: np.ndarray  #: per host
    vm_mips: np.ndarray  #: per VM
    vm_ram: np.ndarray  #: per VM
    vm_bw: np.ndarray  #: per VM
    util: np.ndarray  #: per VM, samples + 1 (CloudSim repeats the last sample)
    interval_s: float = INTERVAL_S  #: seconds between samples
    names: tuple[str, ...] = field(default_factory=tuple)  #: VM names
    #: per VM, the host it starts on (a real cluster's placement, :mod:`llmvirt.sim.own_fleet`); None: the policy
    #: places every VM at time 0 by its own rule, as CloudSim does
    initial_host: np.ndarray | None = None

    @property
    def n_hosts(self) -> int:
        """Number of hosts."""
        return int(self.pe_mips.size)

    @property
    def n_vms(self) -> int:
        """Number of VMs."""
        return int(self.vm_mips.size)

    @property
    def duration_s(self) -> float:
        """Seconds the trace covers, its samples x the interval: CloudSim's day is 288 x 300 s."""
        return float((self.util.shape[1] - 1) * self.interval_s)

    def utilization_at(self, t: float) -> np.ndarray:
        """Every VM's CPU utilisation at time ``t`` (UtilizationModelPlanetLabInMemory.getUtilization)."""
        iv = self.interval_s
        if t % iv == 0:
            return self.util[:, int(t // iv)]
        t1 = math.floor(t / iv)
        t2 = math.ceil(t / iv)
        u1, u2 = self.util[:, t1], self.util[:, t2]
        delta = (u2 - u1) / ((t2 - t1) * iv)
        return u1 + delta * (t - t1 * iv)


def cloudsim_datacenter(trace: CpuTrace, n_hosts: int = 800, fleet: str = "cloudsim") -> DataCenter:
    """CloudSim's PlanetLab data centre for a loaded trace, its hosts of ``fleet``'s models (:data:`FLEETS`)."""
    models = FLEETS[fleet]
    types = np.arange(n_hosts) % len(models)
    pe = np.array([m.pe_mips for m in models])[types]
    table = np.array([m.power for m in models])[types]
    n = trace.util.shape[0]
    block = math.ceil(n / len(VM_MIPS))
    vm_types = np.arange(n) // block
    util = np.hstack([trace.util, trace.util[:, -1:]])  # data[n-1] = data[n-2] in CloudSim
    return DataCenter(
        pe_mips=pe, total_mips=pe * np.array([m.pes for m in models])[types], power_table=table,
        ram_mb=np.array([m.ram_mb for m in models], dtype=np.float64)[types],
        bw=np.full(n_hosts, HOST_BW, dtype=np.float64),
        vm_mips=np.array(VM_MIPS)[vm_types], vm_ram=np.array(VM_RAM_MB, dtype=np.float64)[vm_types],
        vm_bw=np.full(n, VM_BW, dtype=np.float64), util=util, interval_s=trace.interval_s, names=trace.names,
    )


@cache
def planetlab_day(day: str) -> DataCenter:
    """CloudSim's data centre for the PlanetLab day directory ``day``, loaded once per process (the tuner's
    and the head's search workers run many policies on the same days)."""
    return cloudsim_datacenter(load_planetlab(Path(day)))
