"""The PABFD search's shortcuts give exactly the answers of the checks they stand for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmvirt.sim.pabfd_state import Headroom, HostVms, IdleTwins, Tentative


def _tentative(rng: np.random.Generator, total: np.ndarray) -> Tentative:
    """Hosts a third idle, the others allocated up to 110 % of capacity, requesting up to 30 % more."""
    n = total.size
    cap_sum = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0, 1.1, n) * total)
    req_sum = cap_sum * rng.uniform(1.0, 1.3, n)
    return Tentative(vms=HostVms([[] for _ in range(n)]), req_sum=req_sum, cap_sum=cap_sum,
                     hist=np.zeros((n, 1)), count=np.zeros(n, dtype=np.int64),
                     allocated=np.minimum(cap_sum, total))


def _checks(s: Tentative, pe: np.ndarray, total: np.ndarray, threshold: float | None, r: float,
            pool: np.ndarray) -> np.ndarray:
    """The checks as the search wrote them before Headroom, over every host."""
    ok = pe >= r
    ok &= pool
    ok &= s.allocated <= total - r
    if threshold is not None:
        fits = s.req_sum + r
        fits /= total
        under = fits <= threshold
        under |= s.allocated == 0
        ok &= under
    return ok.nonzero()[0]


def _requests(s: Tentative, pe: np.ndarray, total: np.ndarray, threshold: float | None,
              rng: np.random.Generator) -> list[float]:
    """Random requests and, for a few hosts, requests exactly at and one ulp around each limit."""
    out = list(rng.uniform(0, 2000, 20))
    for h in rng.choice(total.size, 8, replace=False):
        limits = [float(pe[h]), float(total[h] - s.allocated[h])]
        if threshold is not None:
            limits.append(float(threshold * total[h] - s.req_sum[h]))
        for x in limits:
            out += [x, math.nextafter(x, math.inf), math.nextafter(x, -math.inf)]
    return [r for r in out if r >= 0]


@pytest.mark.parametrize("threshold", [0.8, 0.7, None])
def test_headroom_candidates_are_exactly_the_hosts_the_checks_pass(threshold: float | None) -> None:
    rng = np.random.default_rng(7)
    n = 300
    total = rng.choice([3720.0, 5320.0, 2000.0], n)
    pe = total / 2
    s = _tentative(rng, total)
    s.room = Headroom(s, pe, total, threshold)
    pool = rng.random(n) < 0.9
    checked = 0
    for step in range(6):
        for r in _requests(s, pe, total, threshold, rng):
            expected = _checks(s, pe, total, threshold, r, pool)
            assert s.room.candidates(r, pool).tolist() == expected.tolist(), (step, r)
            checked += 1
        # the tentative allocation changes on a few hosts, as _add changes it
        for h in rng.choice(n, 5, replace=False):
            delta = float(rng.uniform(-300, 300))
            s.req_sum[h] = max(0.0, s.req_sum[h] + delta)
            s.cap_sum[h] = max(0.0, s.cap_sum[h] + delta)
            s.allocated[h] = min(s.cap_sum[h], total[h])
            s.room.changed(int(h))
    assert checked > 300


def test_idle_twins_search_finds_the_same_host_as_the_whole_pool() -> None:
    rng = np.random.default_rng(3)
    n = 400
    kinds = np.arange(n) % 2
    allocated = np.where(rng.random(n) < 0.2, rng.uniform(100, 3000, n), 0.0)
    p_stale = np.where(allocated > 0, rng.uniform(90, 130, n), np.where(rng.random(n) < 0.9, 86.0, 90.0))
    pool = rng.random(n) < 0.95
    slope = np.array([0.01, 0.012])

    def best(mask: np.ndarray, r: float) -> int:
        cand = mask.nonzero()[0]
        cost = slope[kinds[cand]] * np.round(allocated[cand] + r) - p_stale[cand]
        return int(cand[cost.argmin()])  # the first of equals, as CloudSim

    twins = IdleTwins(pool, allocated, kinds, p_stale)
    searched = int(twins.pool.sum())
    assert searched < pool.sum() / 4  # most idle hosts stand behind a twin
    idle_taken = 0
    for r in rng.uniform(200, 2500, 300):
        host = best(pool, float(r))
        assert best(twins.pool, float(r)) == host
        idle_taken += allocated[host] == 0
        allocated[host] += r
        twins.received(host)
    assert idle_taken > 20  # the walk went deep into the idle hosts' queues
    assert twins.pool.sum() > searched
