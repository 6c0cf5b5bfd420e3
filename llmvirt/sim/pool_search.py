"""PABFD's host search under THR on arrays of one phase's pool only (the simulator's hottest loop).

The consolidation phase searches the same few dozen active hosts tens of thousands of times a day, each
time for the host with the least power increase among those that pass the CPU checks. Picking those hosts
out of the whole fleet's arrays costs more than the arithmetic itself, so :class:`PoolSearch` keeps each
quantity the search reads (allocation, capacity, power step and stale power, the checks' bounds) as
contiguous arrays of the pool's hosts, in ascending ids, and edits them in place as the tentative
allocation and the pool change. The arithmetic is the search's own, element for element, so the answers
are bit for bit those of the search over the whole fleet.
"""

from __future__ import annotations

import math

import numpy as np

from llmvirt.sim.pabfd_state import Tentative
from llmvirt.sim.power import FastPower


class PoolSearch:
    """The least power increase among the hosts of a pool that pass the checks, for one phase whose pool only
    loses hosts (:meth:`drop`); the tentative allocation's changes arrive through :class:`Headroom`."""

    def __init__(self, pool: np.ndarray, s: Tentative, total: np.ndarray, power: FastPower,
                 p_stale: np.ndarray) -> None:
        room = s.room
        assert room is not None
        room.refresh()
        self.hosts = pool.nonzero()[0]
        self._room, self._s, self._power = room, s, power
        self._at = np.full(pool.size, -1, dtype=np.int64)  # host -> its position, -1 once out of the pool
        self._at[self.hosts] = np.arange(self.hosts.size)
        self._alloc = s.allocated[self.hosts]
        self._total = total[self.hosts]
        self._base = power.base[self.hosts]
        self._p_stale = p_stale[self.hosts]
        self._hi = room.hi[self.hosts]
        self._lo = room.lo[self.hosts]
        self._changed: dict[int, None] = {}
        room.follower = self

    def drop(self, host: int) -> None:
        """``host`` leaves the pool for the rest of the phase."""
        i = self._at.item(host)
        if i >= 0:
            self._lo[i] = self._hi[i] = -math.inf
            self._at[host] = -1

    def best(self, r: float) -> int:
        """The host for a request of ``r`` MIPS, or -1 (:meth:`ahead` and :meth:`next_best` for one request)."""
        self.ahead([r])
        return self.next_best()

    def ahead(self, requests: list[float]) -> None:
        """Evaluate ``requests`` (one host's VMs, in the order they will be placed) on every host of the pool at
        once; :meth:`next_best` then answers them in turn."""
        self._room.refresh()
        req = np.array(requests)[:, None]
        ok = self._hi >= req
        u = self._alloc + req
        u /= self._total
        np.minimum(u, 1.0, out=u)
        diff = self._power.watts_from(self._base, u)
        diff -= self._p_stale
        self._rows, self._requests, self._next = np.where(ok, diff, math.inf), requests, 0
        self._changed: dict[int, None] = {}  # positions whose allocation changed since (in order, once each)

    def refreshed(self, host: int, lo: float, hi: float) -> None:
        """Headroom recomputed ``host``'s bounds after the tentative allocation changed there."""
        i = self._at.item(host)
        if i >= 0:
            self._alloc[i] = self._s.allocated.item(host)
            self._lo[i], self._hi[i] = lo, hi
            self._changed[i] = None

    def next_best(self) -> int:
        """The host for the next request given to :meth:`ahead`, or -1: the search's arithmetic on the pool's
        arrays, the hosts changed since evaluated again one by one (argmin keeps the first of equals, as
        CloudSim's strict <, and the arrays follow ascending ids)."""
        room = self._room
        room.refresh()
        r = self._requests[self._next]
        row = self._rows[self._next]
        self._next += 1
        for i in self._changed:
            row[i] = self._diff_at(i, r)
        if row.size == 0:  # an empty pool (a learned gate may close every host)
            return -1
        while True:
            i = int(row.argmin())
            if row.item(i) == math.inf:
                return -1
            host = int(self.hosts[i])
            if self._lo.item(i) >= r or room.passes(host, r):  # only a host at its limit can fail
                return host
            row[i] = math.inf

    def _diff_at(self, i: int, r: float) -> float:
        """:meth:`ahead`'s arithmetic for the host at position ``i``, in Python floats (the same IEEE operations
        in the same order)."""
        if self._hi.item(i) < r:
            return math.inf
        u = (self._alloc.item(i) + r) / self._total.item(i)
        return self._power.watts_at(self._base.item(i), min(u, 1.0)) - self._p_stale.item(i)
