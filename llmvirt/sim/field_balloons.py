"""Balloon baselines from the field, implemented from their published algorithms.

Balloon policies, each sets targets every step (run in 10 s rounds inside the 300 s step, as the
daemons do):

- ``mom``: oVirt MOM's default ``balloon.rules`` (pressure_threshold 0.20, pressure_critical 0.05,
  min_guest_free_percent 0.20, max_balloon_change_percent 0.05, min_balloon_change_percent 0.0025):
  shrink every guest when host free memory is under 20 %, else grow them back.
- ``proxmox``: Proxmox VE's pvestatd auto-ballooning (PVE::AutoBalloon compute_alg1): move the
  host toward 80 % memory use, sharing the change equally (default shares) among ballooned VMs,
  at most 100 MiB per VM per 10 s round, between each VM's minimum (here 25 % of its maximum, as
  in the Proxmox guide's 1 GiB-of-4 GiB example) and maximum.
- ``no-balloon``: targets stay at the maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmvirt.model.arrays import ClusterArrays

ROUNDS_PER_STEP = 30  # 10 s daemon rounds in one 300 s step


@dataclass
class NoBalloon:
    """Balloon targets stay at the VM's maximum."""

    name: str = "no-balloon"  #: display name

    def targets(self, view: ClusterArrays) -> np.ndarray:
        """The maximum of every VM."""
        return view.vm_mem_cap.astype(np.float64).copy()


@dataclass
class MomBalloon:
    """oVirt MOM's default balloon rules, applied in 10 s rounds."""

    pressure_threshold: float = 0.20  #: host free fraction under which guests shrink
    pressure_critical: float = 0.05  #: host free fraction under which guests are forced to swap
    min_guest_free_percent: float = 0.20  #: free memory an unconstrained guest keeps
    max_balloon_change_percent: float = 0.05  #: largest change per round
    min_balloon_change_percent: float = 0.0025  #: smaller changes are skipped
    rounds: int = ROUNDS_PER_STEP  #: 10 s rounds per step
    name: str = "mom"  #: display name

    def targets(self, view: ClusterArrays) -> np.ndarray:
        """Targets after one step of MOM rounds."""
        cur = view.vm_balloon.astype(np.float64).copy()
        cap = view.vm_mem_cap.astype(np.float64)
        host_mem = np.full(view.n_hosts, view.setup.host_mem_mib)
        for _ in range(self.rounds):
            cur = self.round(cur, cap, view.vm_mem_mib, view.vm_host, host_mem)
        return cur

    def round(self, cur: np.ndarray, cap: np.ndarray, demand: np.ndarray, host_of: np.ndarray,
              host_mem: np.ndarray) -> np.ndarray:
        """One MOM cycle: every VM's new balloon size (MiB) from its size ``cur``, maximum ``cap`` and memory
        ``demand``, on hosts of memory ``host_mem`` (``host_of``: each VM's host). The one MOM: the
        simulator runs it in 10 s rounds, real hosts once per ``rebalance --only balloon``."""
        used = np.minimum(demand, cur)  # balloon_cur - mem_unused
        free = (host_mem - np.bincount(host_of, cur, minlength=host_mem.size)) / host_mem
        hf = free[host_of]
        shrink = hf < self.pressure_threshold
        gfp = np.where(hf <= self.pressure_critical, -0.05 + hf,
                       self.min_guest_free_percent * (hf / self.pressure_threshold))
        s_size = np.maximum(cur * (1 - self.max_balloon_change_percent), used + gfp * cur)
        s_ok = (s_size <= cur) & (np.abs(s_size - cur) > self.min_balloon_change_percent * cur)
        g_size = np.maximum(np.minimum(cur * (1 + self.max_balloon_change_percent), cap),
                            used + self.min_guest_free_percent * cap)
        g_ok = (cur < cap) & (np.abs(g_size - cur) > self.min_balloon_change_percent * cur)
        cur = np.where(shrink, np.where(s_ok, s_size, cur), np.where(g_ok, g_size, cur))
        return np.clip(cur, 0.0, cap)


@dataclass
class ProxmoxAutoBalloon:
    """Proxmox VE auto-ballooning toward 80 % host memory use."""

    target: float = 0.80  #: host memory use aimed at
    min_fraction: float = 0.25  #: each VM's configured minimum, as a fraction of its maximum
    max_change_mib: float = 100.0  #: per VM per 10 s round
    rounds: int = ROUNDS_PER_STEP  #: 10 s rounds per step
    name: str = "proxmox"  #: display name

    def targets(self, view: ClusterArrays) -> np.ndarray:
        """Targets after one step of pvestatd rounds."""
        cur = view.vm_balloon.astype(np.float64).copy()
        cap = view.vm_mem_cap.astype(np.float64)
        host_mem = np.full(view.n_hosts, float(view.setup.host_mem_mib))
        for _ in range(self.rounds):
            cur = self.round(cur, cap, view.vm_mem_mib, view.vm_host, host_mem)
        return cur

    def round(self, cur: np.ndarray, cap: np.ndarray, demand: np.ndarray, host_of: np.ndarray,
              host_mem: np.ndarray) -> np.ndarray:
        """One pvestatd cycle: each host's balloons move toward ``target`` of its memory, in equal shares
        of at most ``max_change_mib`` per VM, never under ``min_fraction`` of a VM's maximum. Proxmox does
        not read guest use (``demand`` is unused; the signature is MOM's). The simulator runs it in 10 s
        rounds, real hosts once per ``rebalance --only balloon --policy baseline:proxmox``."""
        low = cap * self.min_fraction
        goal = self.target * host_mem - np.bincount(host_of, cur, minlength=host_mem.size)  # + grow, - shrink
        g = goal[host_of]
        room = np.where(g > 0, cap - cur, cur - low)
        can = room > 0
        n = np.bincount(host_of, can.astype(np.float64), minlength=host_mem.size)
        share = np.abs(g) / np.maximum(n[host_of], 1)  # equal shares
        change = np.where(can, np.minimum(np.minimum(share, self.max_change_mib), room), 0.0)
        return cur + np.sign(g) * change


#: the parameters a name may set, in order: ``mom:PRESSURE_THRESHOLD:MIN_GUEST_FREE``,
#: ``proxmox:TARGET:MIN_FRACTION`` (the tuned points of bench/memory_tuned.py)
NAME_PARAMS = {"mom": ("pressure_threshold", "min_guest_free_percent"), "proxmox": ("target", "min_fraction")}


def make_balloon(name: str) -> NoBalloon | MomBalloon | ProxmoxAutoBalloon:
    """A baseline balloon policy by name: ``no-balloon``, ``mom[:PRESSURE_THRESHOLD[:MIN_GUEST_FREE]]``,
    ``proxmox[:TARGET[:MIN_FRACTION]]`` (fractions; defaults as the daemons ship). ``llmvirt[:POLICY]``
    resolves in :mod:`llmvirt.strategies.registry`."""
    table = {"no-balloon": NoBalloon, "mom": MomBalloon, "proxmox": ProxmoxAutoBalloon}
    family, *params = name.split(":")
    if family not in table or len(params) > len(NAME_PARAMS.get(family, ())):
        raise ValueError(f"unknown balloon policy {name!r}: use no-balloon, mom[:PRESSURE:GUEST_FREE], "
                         "proxmox[:TARGET:MIN_FRACTION], llmvirt[:POLICY]")
    try:
        values = [float(v) for v in params]
    except ValueError:
        raise ValueError(f"balloon policy {name!r}: parameters are fractions, e.g. mom:0.2:0.2") from None
    if any(not 0 < v < 1 for v in values):
        raise ValueError(f"balloon policy {name!r}: every parameter must be a fraction between 0 and 1")
    kwargs = dict(zip(NAME_PARAMS.get(family, ()), values, strict=False))
    return table[family](name=name, **kwargs)  # type: ignore[abstract]
