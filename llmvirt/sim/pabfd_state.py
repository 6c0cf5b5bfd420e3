"""The state one PABFD optimisation edits, kept cheap to build and to search (the simulator's hot path).

CloudSim edits a tentative allocation while it looks for hosts, then restores it: :class:`Tentative`
holds that copy and :class:`HostVms` copies a host's VM list only when the optimisation changes it;
:class:`Headroom` and :class:`IdleTwins` narrow each search to the hosts that can win it
(:class:`llmvirt.sim.power.FastPower` evaluates their power).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


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
    hist: np.ndarray  # host utilisation history (H x 30), most recent first
    count: np.ndarray  # VMs per host
    allocated: np.ndarray  # MIPS allocated: capped requests, or the whole host when over-subscribed
    room: Headroom | None = None  # which hosts a request fits, kept as the allocation is edited


class Follower(Protocol):
    """What keeps its own copy of Headroom's bounds (:class:`llmvirt.sim.pool_search.PoolSearch`)."""

    def refreshed(self, host: int, lo: float, hi: float) -> None:
        """``host``'s bounds are now ``lo`` and ``hi``: its tentative allocation changed."""


#: relative slack of :class:`Headroom`'s bounds: far above the few ulps by which rounding can move a limit
#: from its formula, so the bounds always bracket it; the checks run only for a host whose lower bound is
#: below the request (no host on 20110303 under THR-MMT-0.8)
SLACK = 1e-9


class Headroom:
    """Which hosts pass PABFD's CPU checks for a request of ``r`` MIPS, without evaluating them on every host.

    The checks (``pe >= r``, ``allocated <= total - r`` and, under THR, ``(requested + r) / total <= threshold``
    unless nothing is allocated) each hold for every ``r`` up to a limit, because floating-point addition and
    division are monotone. Each host keeps a bound a little below and a little above its limit, refreshed
    when the tentative allocation changes it; a search compares ``r`` with the upper bounds and evaluates the
    checks themselves only on the rare host whose lower bound is below ``r``, so the candidates are exactly
    those the checks pass.
    """

    def __init__(self, s: Tentative, pe: np.ndarray, total: np.ndarray, threshold: float | None) -> None:
        self._s, self._pe, self._total, self._thr = s, pe, total, threshold
        self.lo, self.hi = self._bounds(s.req_sum, s.allocated, pe, total)
        self._dirty: set[int] = set()
        self.follower: Follower | None = None  #: told of every host refreshed

    def _bounds(self, req_sum: np.ndarray, allocated: np.ndarray, pe: np.ndarray,
                total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        room = np.minimum(pe, total - allocated)
        if self._thr is not None:
            room = np.where(allocated == 0, room, np.minimum(room, self._thr * total - req_sum))
        slack = SLACK * (total + np.abs(req_sum))
        return room - slack, room + slack

    def changed(self, host: int) -> None:
        """``host``'s tentative allocation changed: refresh its bounds before the next search."""
        self._dirty.add(host)

    def refresh(self) -> None:
        """Bring the bounds of the hosts changed since the last search up to date (a search does this first)."""
        if not self._dirty:
            return
        s, thr, follower = self._s, self._thr, self.follower
        for host in self._dirty:
            total, allocated, req_sum = self._total.item(host), s.allocated.item(host), s.req_sum.item(host)
            room = min(self._pe.item(host), total - allocated)
            if thr is not None and allocated != 0:
                room = min(room, thr * total - req_sum)
            slack = SLACK * (total + abs(req_sum))
            lo = self.lo[host] = room - slack
            hi = self.hi[host] = room + slack
            if follower is not None:
                follower.refreshed(host, lo, hi)
        self._dirty.clear()

    def candidates(self, r: float, pool: np.ndarray) -> np.ndarray:
        """Ids, ascending, of the hosts in ``pool`` whose checks pass for a request of ``r``."""
        cand = self.maybe(r, pool)
        if cand.size and np.minimum.reduce(self.lo[cand]) < r:  # a host at its limit: the checks decide
            cand = cand[self._passes(cand, r)]
        return cand

    def maybe(self, r: float, pool: np.ndarray) -> np.ndarray:
        """Ids, ascending, of the hosts in ``pool`` whose upper bound admits ``r``: every host the checks pass,
        and perhaps one at its limit that :meth:`passes` refuses (a search that wants one host checks only
        the one it would take)."""
        self.refresh()
        ok = self.hi >= r
        ok &= pool
        return ok.nonzero()[0]

    def passes(self, host: int, r: float) -> bool:
        """Whether ``host``'s checks pass for ``r`` (right after :meth:`maybe`: the bounds are fresh)."""
        return self.lo.item(host) >= r or bool(self._passes(np.array([host]), r)[0])

    def _passes(self, cand: np.ndarray, r: float) -> np.ndarray:
        """The checks themselves, with the search's arithmetic, on ``cand``."""
        s, total = self._s, self._total[cand]
        allocated = s.allocated[cand]
        ok = self._pe[cand] >= r
        ok &= allocated <= total - r
        if self._thr is not None:
            fits = s.req_sum[cand] + r
            fits /= total
            under = fits <= self._thr
            under |= allocated == 0
            ok &= under
        return ok


def host_kinds(pe: np.ndarray, total: np.ndarray, table: np.ndarray) -> np.ndarray:
    """A number per host, equal for hosts with the same MIPS per core, capacity and power curve."""
    return np.unique(np.column_stack([pe, total, table]), axis=0, return_inverse=True)[1].reshape(-1)


class IdleTwins:
    """A pool with each kind of idle host represented by its lowest id, for a phase whose hosts only receive VMs.

    Two hosts with nothing allocated, of the same kind and drawing the same power at the last tick, pass the
    same checks and cost the same for every VM, so a search always takes the lower id of the two (CloudSim
    keeps the first of equals). Searching only the first idle host of each kind gives the same answers over
    tens of hosts instead of hundreds; when that host receives a VM the next of its kind joins :attr:`pool`.
    """

    def __init__(self, pool: np.ndarray, allocated: np.ndarray, kinds: np.ndarray, p_stale: np.ndarray) -> None:
        self.pool = pool.copy()
        idle = (pool & (allocated == 0)).nonzero()[0]
        kind, watts = kinds[idle], p_stale[idle]
        order = np.lexsort((idle, watts, kind))
        hosts, kind, watts = idle[order], kind[order], watts[order]
        starts = np.ones(hosts.size, dtype=bool)
        starts[1:] = (kind[1:] != kind[:-1]) | (watts[1:] != watts[:-1])
        self._waiting: dict[int, Iterator[int]] = {}
        for group in np.split(hosts, starts.nonzero()[0][1:]):
            if group.size > 1:
                self.pool[group[1:]] = False
                self._waiting[int(group[0])] = iter(group[1:].tolist())

    def received(self, host: int) -> None:
        """``host`` received a VM: the next idle host of its kind, if it represented one, joins the pool."""
        rest = self._waiting.pop(host, None)
        if rest is not None:
            nxt = next(rest, None)
            if nxt is not None:
                self.pool[nxt] = True
                self._waiting[nxt] = rest
