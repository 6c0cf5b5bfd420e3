"""The simulated days the consolidation policy trains and is judged on, each as CloudSim's data centre.

An episode is either a PlanetLab day (its directory: CloudSim's 800 hosts, every VM of the day) or a
:class:`UsageDay`: one day of a usage trace (Bitbrains, the generic format, or a PlanetLab day directory), on
one side of the VM split (:mod:`llmvirt.sim.split`), in one fleet shape (hosts per VM) and one fleet of host
models (:data:`llmvirt.sim.datacenter.FLEETS`). VM sizes are CloudSim's in all; host models are CloudSim's
unless a usage day names another fleet, so a policy can be judged on servers it never saw. The third kind, an
:class:`~llmvirt.sim.own_fleet.OwnFleetDay`, is a day of llmvirt's own store history on the operator's own hosts
and VM sizes (``llmvirt tune --from-store``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmvirt.sim.datacenter import FLEETS, DataCenter, cloudsim_datacenter, mean_host_mips, planetlab_day
from llmvirt.sim.engine import Simulation
from llmvirt.sim.initial_placement import initial_pabfd
from llmvirt.sim.own_fleet import OwnFleetDay
from llmvirt.sim.own_fleet import datacenter as own_datacenter
from llmvirt.sim.split import split
from llmvirt.sim.traces import CpuTrace, load_planetlab, load_usage, once_per_file

CLOUDSIM_HOSTS_PER_VM = 800 / 1052  #: CloudSim's 800 hosts for the lightest PlanetLab day's 1,052 VMs
TIGHT_HOSTS_PER_VM = 0.5  #: a fleet with a third fewer hosts: overload is nearer
SHAPES = (CLOUDSIM_HOSTS_PER_VM, TIGHT_HOSTS_PER_VM)  #: the fleet shapes usage days come in
SIDES = ("train", "held", "all")  #: which VMs of a usage trace: the training side, the held-back side, or every VM


@dataclass(frozen=True)
class UsageDay:
    """Day ``day`` (0-based, 24 h of samples) of the trace at ``path`` (a usage trace file, or a PlanetLab day
    directory, whose one day is day 0): the VMs of ``side``, with ``round(VMs x hosts_per_vm)`` hosts of
    ``fleet``'s models, or the fewest hosts above that on which every VM can be created."""

    path: str
    day: int
    side: str
    hosts_per_vm: float
    fleet: str = "cloudsim"

    def __post_init__(self) -> None:
        """Refuse an unknown side or fleet."""
        if self.side not in SIDES:
            raise ValueError(f"unknown side {self.side!r}: use {', '.join(SIDES)}")
        if self.fleet not in FLEETS:
            raise ValueError(f"unknown fleet {self.fleet!r}: use {', '.join(FLEETS)}")

    @property
    def label(self) -> str:
        """A short name for reports: ``<file>:<side>:<day>:<hosts per VM>``, and ``:<fleet>`` unless CloudSim's."""
        fleet = "" if self.fleet == "cloudsim" else f":{self.fleet}"
        return f"{Path(self.path).name}:{self.side}:{self.day}:{self.hosts_per_vm:.2f}{fleet}"


Episode = str | UsageDay | OwnFleetDay  #: a PlanetLab day directory, a usage day, or a day on an operator's fleet


def equivalent_shape(hosts_per_vm: float, fleet: str) -> float:
    """Hosts per VM of ``fleet`` with the CPU capacity per VM that ``hosts_per_vm`` CloudSim hosts give."""
    return hosts_per_vm * mean_host_mips("cloudsim") / mean_host_mips(fleet)


def _usage(path: str) -> CpuTrace:
    """A usage trace's CPU use as a share of each VM's provisioned CPU (a PlanetLab day directory's as
    CloudSim reads it), loaded once per process."""
    if Path(path).is_dir():
        return _planetlab(path)
    return _cpu_share(Path(path))


def _load_cpu_share(path: Path) -> CpuTrace:
    """A usage trace file's CPU use as a share of each VM's provisioned CPU."""
    trace = load_usage(path)
    return CpuTrace(trace.names, trace.cpu_util, trace.interval_s)


_cpu_share = once_per_file(_load_cpu_share)


@functools.cache
def _planetlab(path: str) -> CpuTrace:
    """A PlanetLab day directory as CloudSim reads it, loaded once per process."""
    return load_planetlab(Path(path))


def days_in(path: Path) -> int:
    """How many whole days the usage trace at ``path`` covers."""
    trace = _usage(str(path))
    return trace.util.shape[1] // (86_400 // trace.interval_s)


def usage_days(path: Path, side: str, days: int, shapes: tuple[float, ...] = SHAPES) -> list[UsageDay]:
    """The first ``days`` days of ``path`` (at most as many as it covers), day ``d`` in shape
    ``shapes[d % len(shapes)]``: every shape, each on other days."""
    UsageDay(str(path), 0, side, shapes[0])  # refuses an unknown side before the trace is read
    return [UsageDay(str(path), d, side, shapes[d % len(shapes)]) for d in range(min(days, days_in(path)))]


def on_fleet(day: Episode | Path, fleet: str) -> Episode:
    """``day`` on ``fleet``'s hosts with the CPU capacity per VM it has on CloudSim's: a PlanetLab day directory
    with that of CloudSim's 800 hosts for the lightest day (the directory itself, bit for bit CloudSim's, on the
    ``cloudsim`` fleet); a usage day on CloudSim's hosts with its shape converted (:func:`equivalent_shape`)."""
    if isinstance(day, OwnFleetDay):
        return day  # the operator's own hosts, whatever fleet is named
    if fleet == "cloudsim":
        return day if isinstance(day, UsageDay) else str(day)
    if isinstance(day, UsageDay):
        return dataclasses.replace(day, hosts_per_vm=equivalent_shape(day.hosts_per_vm, fleet), fleet=fleet)
    return UsageDay(str(day), 0, "all", equivalent_shape(CLOUDSIM_HOSTS_PER_VM, fleet), fleet)


def datacenter(episode: Episode) -> DataCenter:
    """A fresh data centre for ``episode`` (its own arrays: the caller may change them)."""
    if isinstance(episode, str):
        return dataclasses.replace(planetlab_day(episode))  # cached per process: the caller may rebind fields
    if isinstance(episode, OwnFleetDay):
        return own_datacenter(episode)
    return cloudsim_datacenter(_day_trace(episode), _hosts(episode), episode.fleet)


def _day_trace(episode: UsageDay) -> CpuTrace:
    """The usage day's VMs (its side of the split) over its 24 hours."""
    trace = _usage(episode.path)
    train, held = split(trace.names)
    vms = {"train": train, "held": held, "all": np.arange(len(trace.names))}[episode.side]
    per_day = 86_400 // trace.interval_s
    util = trace.util[vms, episode.day * per_day:(episode.day + 1) * per_day]
    return CpuTrace(tuple(trace.names[i] for i in vms), util, trace.interval_s)


@functools.cache
def _hosts(episode: UsageDay) -> int:
    """``round(VMs x hosts_per_vm)``, or (a tight shape) the fewest hosts above it that hold every VM at its full
    size; found once per process, as a trainer builds the same day many times."""
    trace = _day_trace(episode)
    hosts = round(len(trace.names) * episode.hosts_per_vm)
    while not _holds_every_vm(cloudsim_datacenter(trace, hosts, episode.fleet)):
        hosts += 1
    return hosts


def _holds_every_vm(dc: DataCenter) -> bool:
    """Whether the consolidation policies' initial placement (PABFD, every VM at its full size, as CloudSim
    creates them) finds a host for every VM."""
    sim = Simulation(dc)
    try:
        sim.place_initial(initial_pabfd(sim))
    except RuntimeError:
        return False
    return True


def label(episode: Episode) -> str:
    """A PlanetLab day's directory name, or a usage or own-fleet day's ``label``."""
    return Path(episode).name if isinstance(episode, str) else episode.label


def family(episode: Episode) -> str:
    """The trace family an episode belongs to: ``planetlab``, or the usage trace's file name."""
    return "planetlab" if isinstance(episode, str) or Path(episode.path).is_dir() else Path(episode.path).name
