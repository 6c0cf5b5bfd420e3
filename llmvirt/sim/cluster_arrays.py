"""The simulator's arrays built from a scanned (or stored) :class:`~llmvirt.model.cluster.Cluster`.

The strategies the simulator benchmarks decide on arrays: the balance scenario's
:class:`~llmvirt.model.arrays.ClusterArrays` (Watcher, ProxLB) and the cloudsim scenario's
simulation state (CloudSim's PABFD and the learned consolidation head). Building those arrays
from a real cluster lets ``llmvirt rebalance --policy NAME`` run the very code that
``llmvirt bench --policies NAME`` measures. VMs and hosts are identified by their index in the
arrays and by the names kept beside them (``vm_names``, ``host_names``), never by parsing names.

Only running VMs are in the arrays. Mapping to the simulator's units:

- CPU: a host's capacity is its CPUs x its MHz; a VM's demand is its expected CPU use (measured,
  else 50 %) x its vCPUs x its host's MHz.
- Memory: a VM uses what its guest reports (balloon minus unused), else its balloon size.
- CloudSim's VMs have one PE; a real VM's vCPUs spread over the host's cores, so a real host's
  PE is the whole host (no per-core fit check).
- Power: the generic linear model that ``rebalance`` predicts energy with (:func:`llmvirt.sim.power.generic_table`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmvirt.errors import UsageError
from llmvirt.model.arrays import DEFAULT_MHZ, ClusterArrays, FleetSetup, expected_util
from llmvirt.model.cluster import Cluster
from llmvirt.sim.engine import HISTORY_LENGTH
from llmvirt.sim.power import generic_table


def fleet_view(cluster: Cluster, cpu_allocation_ratio: float, ram_allocation_ratio: float) -> ClusterArrays:
    """The balance scenario's view of a real cluster, hosts of any sizes: every baseline and the learned
    policy read each host's own CPUs and memory (:meth:`ClusterArrays.host_sizes`). CPU demand is counted
    in CPUs (a VM's expected use x its vCPUs) at the first host's clock, so hosts of different MHz compare
    by CPUs, as the hard rules do."""
    if not cluster.hosts:
        raise UsageError("no scanned hosts")
    view = ClusterArrays.from_cluster(cluster, FleetSetup(cpu_allocation_ratio=cpu_allocation_ratio,
                                                          ram_allocation_ratio=ram_allocation_ratio))
    if len({h.cpu_mhz or DEFAULT_MHZ for h in cluster.hosts}) > 1:
        view.vm_cpu_mhz = view.cpus_used() * view.setup.mhz_per_core
    return view


def real_host_units(cpus: np.ndarray, mhz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real hosts in the simulator's units, per host: (PE MIPS, total MIPS, power table). Capacity is the CPUs
    (at least one) x the MHz, the PE is the whole host, and power is the generic linear model (the module
    docstring). ``rebalance``'s scanned clusters and ``tune --from-store``'s own fleet both map hosts here."""
    total = np.maximum(1, np.asarray(cpus)) * np.asarray(mhz, dtype=np.float64)
    return total.copy(), total, generic_table(int(total.size))


@dataclass
class HostArrays:
    """The data-centre arrays CloudSim's policies read (the fields of :class:`~llmvirt.sim.datacenter.DataCenter`
    they use), for a real cluster."""

    pe_mips: np.ndarray  #: per host, MIPS one VM can get (the whole host: see the module docstring)
    total_mips: np.ndarray  #: per host, CPUs x MHz
    power_table: np.ndarray  #: per host, watts at 0..100 %
    bw: np.ndarray  #: per host, kbit/s (sets migration time for the adaptive detectors)
    vm_mips: np.ndarray  #: per VM, vCPUs x host MHz
    vm_ram: np.ndarray  #: per VM, MiB
    vm_bw: np.ndarray  #: per VM

    @property
    def n_hosts(self) -> int:
        """Number of hosts."""
        return int(self.total_mips.size)


@dataclass
class ClusterState:
    """One decision step of the cloudsim scenario's state (what :class:`~llmvirt.sim.engine.Simulation`
    offers a policy's ``decide``), built from a real cluster. ``placeable`` and ``movable`` carry the
    hard rules the simulator has no need for: maintenance hosts take nothing, and a VM that cannot
    live-migrate is never selected."""

    dc: HostArrays  #: hosts
    vm_host: np.ndarray  #: host of each VM
    req: np.ndarray  #: VM demand now, MIPS
    history: np.ndarray  #: VM utilisation history (fraction of its MIPS), most recent first
    history_len: np.ndarray  #: samples in each VM's history
    host_vms: list[list[int]]  #: VMs of each host
    util_mips: np.ndarray  #: host demand now, MIPS (capped at capacity)
    placeable: np.ndarray  #: per host: may receive VMs
    movable: np.ndarray  #: per VM: may live-migrate


def cloudsim_state(cluster: Cluster, history: dict[str, list[float]] | None = None,
                   bw_kbit_s: float = 1_000_000.0) -> tuple[ClusterState, ClusterArrays]:
    """The cloudsim scenario's state for a real cluster. ``history`` maps a VM's uuid to its past CPU use
    (fraction of its vCPUs), oldest first; the adaptive detectors (IQR, MAD, LR) read it. The state's VM
    and host indices are those of the cluster's :class:`ClusterArrays`, returned beside it for the names."""
    if not cluster.hosts:
        raise UsageError("no scanned hosts")
    vms = [(h, v) for h, host in enumerate(cluster.hosts) for v in host.vms if v.running]
    n_h, n_v = len(cluster.hosts), len(vms)
    mhz = np.array([float(h.cpu_mhz or DEFAULT_MHZ) for h in cluster.hosts])
    pe, total, power = real_host_units(np.array([h.cpus for h in cluster.hosts]), mhz)
    vm_host = np.array([h for h, _ in vms], dtype=np.int64)
    vm_mips = np.array([v.vcpus * mhz[h] for h, v in vms])
    util = np.array([expected_util(v.cpu_util) for _, v in vms])
    hist = np.zeros((n_v, HISTORY_LENGTH))
    hlen = np.zeros(n_v, dtype=np.int64)
    for i, (_, v) in enumerate(vms):
        past = [*(history or {}).get(v.uuid, []), float(util[i])][-HISTORY_LENGTH:]
        hist[i, : len(past)] = past[::-1]
        hlen[i] = len(past)
    req = util * vm_mips
    host_vms: list[list[int]] = [[] for _ in range(n_h)]
    for i, h in enumerate(vm_host):
        host_vms[int(h)].append(i)
    dc = HostArrays(pe_mips=pe, total_mips=total, power_table=power,
                    bw=np.full(n_h, bw_kbit_s), vm_mips=vm_mips,
                    vm_ram=np.array([float(v.memory_mib) for _, v in vms]), vm_bw=np.zeros(n_v))
    arrays = ClusterArrays.from_cluster(cluster)
    state = ClusterState(dc=dc, vm_host=vm_host, req=req, history=hist, history_len=hlen, host_vms=host_vms,
                         util_mips=np.minimum(np.bincount(vm_host, req, minlength=n_h), total),
                         placeable=np.array([not h.maintenance for h in cluster.hosts], dtype=bool),
                         movable=arrays.movable)
    return state, arrays
