"""The scheduler entries of a placement: what the engine's update needs besides the VMs' requests.

Every VM is an entry on the host it runs on; a VM migrating in is a second entry on its destination
(VmSchedulerTimeSharedOverSubscription reserves 10 % of its capped request there and gives it 90 % on
the source). The entries change only when a VM moves, leaves or starts to move, far less often than the
requests, so the engine keeps them between updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Entries:
    """The entries of one placement, placed VMs first (ascending ids), then the VMs migrating in."""

    vms: np.ndarray  #: VM of each entry
    hosts: np.ndarray  #: host of each entry
    pe: np.ndarray  #: that host's MIPS per core (a request is capped at one core)
    factor: np.ndarray  #: share of the capped request allocated: 1, 0.9 migrating out, 0.1 migrating in
    incoming: np.ndarray  #: the entry is a VM migrating in
    any_incoming: bool  #: some entry is
    leaving: np.ndarray  #: a VM migrating out (counted at full demand in its host's utilisation)
    own: np.ndarray  #: not incoming
    own_vms: np.ndarray  #: vms[own]
    own_hosts: np.ndarray  #: hosts[own]


def entries_of(vm_host: np.ndarray, alive: np.ndarray, in_migration: np.ndarray, in_flight: list[tuple[int, int]],
               migrating_in: dict[int, list[int]], pe_mips: np.ndarray) -> Entries:
    """The entries of the VMs placed and alive, then of each migration in flight, as (VM, destination) in the
    order they started, whose VM the destination counts as migrating in."""
    placed = ((vm_host >= 0) & alive).nonzero()[0]
    hosts = vm_host[placed]
    factor = np.where(in_migration[placed], 0.9, 1.0)
    extra = [(vm, dst) for vm, dst in in_flight if vm in migrating_in.get(dst, ())]
    if extra:
        vms = np.concatenate([placed, [vm for vm, _ in extra]])
        hosts = np.concatenate([hosts, [dst for _, dst in extra]])
        factor = np.concatenate([factor, np.full(len(extra), 0.1)])
        incoming = np.concatenate([np.zeros(placed.size, dtype=bool), np.ones(len(extra), dtype=bool)])
    else:
        vms, incoming = placed, np.zeros(placed.size, dtype=bool)
    own = ~incoming
    return Entries(vms=vms, hosts=hosts, pe=pe_mips[hosts], factor=factor, incoming=incoming,
                   any_incoming=bool(extra), leaving=own & (factor == 0.9), own=own, own_vms=vms[own],
                   own_hosts=hosts[own])
