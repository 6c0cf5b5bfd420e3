"""The state one PABFD optimisation edits, kept cheap to build and to search (the simulator's hot path).

CloudSim edits a tentative allocation while it looks for hosts, then restores it: :class:`Tentative`
holds that copy, :class:`HostVms` copies a host's VM list only when the optimisation changes it, and
:class:`FastPower` evaluates the SPECpower tables for a few candidate hosts with power()'s arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class FastPower:
    """power() for a subset of hosts without per-call set-up (the placement hot path)."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table
        self.flat = table.reshape(-1)
        self.base = np.arange(table.shape[0]) * table.shape[1]
        # power()'s (p2 - p1) / 10 for each host and tenth, computed once: p2 is the next breakpoint
        # (the last tenth has none: u = 1 always lands on it, where power() takes p2 = p1).
        step = np.zeros_like(table)
        step[:, :-1] = (table[:, 1:] - table[:, :-1]) / 10
        self.step = step.reshape(-1)

    def at(self, hosts: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Watts of ``hosts`` at utilisations ``u`` (already within [0, 1]); same arithmetic as power(),
        bit for bit: on a breakpoint power() takes p2 = p1, a zero step, which the mask reproduces."""
        tenths = u * 10
        i1 = tenths.astype(np.int64)
        at = self.base[hosts]
        at += i1
        delta = self.step[at]
        delta *= tenths > i1
        w = i1 / 10
        np.subtract(u, w, out=w)
        delta *= w
        delta *= 100
        delta += self.flat[at]
        return delta


class HostVms:
    """Each host's VMs during one optimisation: the simulation's lists, a host's copied on its first
    change (an optimisation touches a few dozen of hundreds of hosts)."""

    def __init__(self, source: list[list[int]]) -> None:
        self._source = source
        self._own: dict[int, list[int]] = {}

    def __getitem__(self, host: int) -> list[int]:
        """``host``'s VMs (not to be changed through this list: use :meth:`edit`)."""
        own = self._own.get(host)
        return self._source[host] if own is None else own

    def edit(self, host: int) -> list[int]:
        """``host``'s VMs, as this optimisation's own list."""
        own = self._own.get(host)
        if own is None:
            own = self._own[host] = list(self._source[host])
        return own


@dataclass
class Tentative:
    """The allocation being edited during one optimisation (restored afterwards, as CloudSim does)."""

    vms: HostVms
    req_sum: np.ndarray
    cap_sum: np.ndarray
    ram: np.ndarray
    bw: np.ndarray
    hist: np.ndarray  # host utilisation history (H x 30), most recent first
    count: np.ndarray  # VMs per host
    allocated: np.ndarray  # MIPS allocated: capped requests, or the whole host when over-subscribed
