"""Host power models: SPECpower tables at 0, 10, ..., 100 % load, linearly interpolated.

The arithmetic follows CloudSim's ``PowerModelSpecPower.getPower`` operation by
operation, so results match it to the last bit; a host at 0 % over an interval
counts as switched off (``PowerHost.getEnergyLinearInterpolation``).
"""

from __future__ import annotations

import numpy as np

#: the generic host power model for real hosts, whose power curve llmvirt does not know (W at 0 % and 100 %):
#: rebalance's predicted energy and the arrays built from a scanned cluster both use it
GENERIC_IDLE_W, GENERIC_PEAK_W = 100.0, 250.0
#: HP ProLiant ML110 G4 (Xeon 3040), watts at 0..100 % in 10 % steps (CloudSim)
ML110_G4 = (86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0)
#: HP ProLiant ML110 G5 (Xeon 3075)
ML110_G5 = (93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0)
#: IBM System x3250 (1 x Xeon X3470, 4 cores), SPECpower_ssj2008 2009q4 (CloudSim's PowerModelSpecPower table)
X3250_X3470 = (41.6, 46.7, 52.3, 57.9, 65.4, 73.0, 80.7, 89.5, 99.6, 105.0, 113.0)
#: IBM System x3550 (2 x Xeon X5670, 12 cores), SPECpower_ssj2008 2010q2 (CloudSim's PowerModelSpecPower table)
X3550_X5670 = (66.0, 107.0, 120.0, 131.0, 143.0, 156.0, 173.0, 191.0, 211.0, 229.0, 247.0)
#: IBM System x3250 (1 x Xeon X3480, 4 cores), SPECpower_ssj2008 2010q4 (CloudSim's PowerModelSpecPower table)
X3250_X3480 = (42.3, 46.7, 49.7, 55.4, 61.8, 69.3, 76.1, 87.0, 96.1, 106.0, 113.0)
#: IBM System x3550 (2 x Xeon X5675, 12 cores), SPECpower_ssj2008 2011q2 (CloudSim's PowerModelSpecPower table)
X3550_X5675 = (58.4, 98.0, 109.0, 118.0, 128.0, 140.0, 153.0, 170.0, 189.0, 205.0, 222.0)


def power(table: np.ndarray, util: np.ndarray) -> np.ndarray:
    """Watts of hosts (rows of ``table``, shape (hosts, 11)) at utilisations ``util`` in [0, 1]."""
    u = np.clip(util, 0.0, 1.0)
    tenths = u * 10
    i1 = tenths.astype(np.int64)  # floor, as u >= 0
    i2 = i1 + (tenths > i1)  # ceil
    flat = table.reshape(-1)
    base = np.arange(table.shape[0]) * table.shape[1] if table.ndim == 2 else 0
    p1, p2 = flat[base + i1], flat[base + i2]
    delta = (p2 - p1) / 10
    return p1 + delta * (u - i1 / 10) * 100


def energy_ws(table: np.ndarray, u_from: np.ndarray, u_to: np.ndarray, seconds: float) -> np.ndarray:
    """Watt-seconds per host over an interval, trapezoid between the end points; 0 if it started off."""
    return trapezoid_ws(power(table, u_from), power(table, u_to), u_from == 0, seconds)


def trapezoid_ws(p_from: np.ndarray, p_to: np.ndarray, off: np.ndarray, seconds: float) -> np.ndarray:
    """Watt-seconds per host between powers ``p_from`` and ``p_to``; 0 where the host was ``off``."""
    return np.where(off, 0.0, (p_from + (p_to - p_from) / 2) * seconds)


def generic_table(n_hosts: int) -> np.ndarray:
    """The generic linear model as SPECpower-style tables (watts at 0, 10, ..., 100 %), one row per host."""
    return np.tile(GENERIC_IDLE_W + (GENERIC_PEAK_W - GENERIC_IDLE_W) * np.linspace(0.0, 1.0, 11), (n_hosts, 1))


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
        self._step_list, self._flat_list = self.step.tolist(), self.flat.tolist()

    def at_all(self, u: np.ndarray) -> np.ndarray:
        """power() of every host at utilisations ``u`` (already within [0, 1]), bit for bit."""
        return self.watts_from(self.base, u)

    def at(self, hosts: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Watts of ``hosts`` at utilisations ``u`` (already within [0, 1]), bit for bit."""
        return self.watts_from(self.base[hosts], u)

    def watts_at(self, base: int, u: float) -> float:
        """:meth:`watts_from` for one host, in Python floats: the same IEEE operations in the same order."""
        tenths = u * 10
        i1 = int(tenths)
        at = base + i1
        delta = self._step_list[at] if tenths > i1 else 0.0
        return delta * (u - i1 / 10) * 100 + self._flat_list[at]

    def watts_from(self, base: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Watts at utilisations ``u`` (within [0, 1]) of the hosts whose first table entry is at ``base``
        (:attr:`base` of their ids), bit for bit power()'s: on a breakpoint power() takes p2 = p1, a zero
        step, which the mask reproduces."""
        tenths = u * 10
        i1 = tenths.astype(np.int64)
        at = base + i1
        delta = self.step[at]
        delta *= tenths > i1
        w = i1 / 10
        np.subtract(u, w, out=w)
        delta *= w
        delta *= 100
        delta += self.flat[at]
        return delta
