"""Baselines from the field, implemented from their published algorithms.

Balancers (migration), each decides on a :class:`~llmvirt.model.arrays.ClusterArrays` every step:

- ``watcher-wb[:THRESHOLD]``: OpenStack Watcher ``workload_balance``
  (watcher/decision_engine/strategy/strategies/workload_balance.py): hosts at or above the
  CPU threshold (default 25 %) are sources; from the busiest, the VM whose load best fills the
  host's excess over the cluster average (without exceeding it) moves to the least-loaded host
  that has allocation room and stays under the threshold. One migration per audit.
- ``watcher-vwc``: Watcher ``vm_workload_consolidation`` (…/vm_workload_consolidation.py):
  offload phase (overloaded hosts shed their least-CPU VMs first-fit onto the most loaded hosts
  that fit), consolidation phase (least-loaded hosts emptied first-fit onto the most loaded ones),
  then chains of moves of one VM collapsed into one. Capacity coefficients 1.0.
- ``proxlb[:BALANCINESS][:cpu]``: ProxLB (gyptazy/ProxLB, models/calculations.py relocate_guests;
  docs/03_FAQ.md "How does it work?"): when the spread of node usage (memory by default, "used"
  mode) exceeds the balanciness (10 points), guests, smallest first, leave the most-used node for
  the node with the most free resources until the spread is within the balanciness.
- ``proxmox-crs[:static|dynamic][:THRESHOLD[:MARGIN]][:topsis]``: Proxmox VE's CRS automatic
  rebalancing (PVE 9.2, :mod:`llmvirt.peers.pve_crs`, checked against Proxmox's own CRS test cases):
  when the coefficient of variation of the nodes' CPU+memory shares exceeds the threshold (0.3), the
  single migration with the lowest imbalance after it (or the best TOPSIS score), if it lowers the
  imbalance by the margin (10 %, relative); repeated within the step (Proxmox's rounds are 10 s, its
  hold 3 rounds), at most 5 moves. ``dynamic`` (default) counts what guests use, ``static`` what they
  are configured with. Guests on hosts in maintenance go to the best-scored node first.
- ``cp-sat[:K[:PRICE[:TRIGGER]]]``: the optimising baseline, each decision solved exactly by OR-Tools
  CP-SAT (:mod:`llmvirt.sim.cpsat_balancer`).
- ``none``: never migrate.

Balloon policies are in :mod:`llmvirt.sim.field_balloons`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmvirt.model.arrays import ClusterArrays
from llmvirt.peers import pve_crs
from llmvirt.sim.cpsat_balancer import CpSatBalance, make_cpsat
from llmvirt.sim.fleet import allocation_ok


def _cores_used(view: ClusterArrays) -> np.ndarray:
    return view.vm_cpu_mhz / view.setup.mhz_per_core


@dataclass
class NoMigration:
    """Never migrates."""

    name: str = "none"  #: display name

    def decide(self, view: ClusterArrays) -> list[tuple[int, int]]:
        """Nothing to do."""
        return []


@dataclass
class WatcherWorkloadBalance:
    """OpenStack Watcher's workload_balance strategy on CPU."""

    threshold: float = 25.0  #: percent of host cores
    name: str = "watcher-wb"  #: display name

    def decide(self, view: ClusterArrays) -> list[tuple[int, int]]:
        """At most one migration, as one Watcher audit produces."""
        cores = view.host_sizes()[0]  # each host's own
        load = _cores_used(view)
        host_load = view.host_sum(load)
        util = host_load / cores * 100
        over = [h for h in np.argsort(-util, kind="stable") if util[h] >= self.threshold]
        under = [h for h in range(view.n_hosts) if util[h] < self.threshold and not view.maintenance[h]]
        if not over or not under:
            return []
        avg = host_load.sum() / view.n_hosts
        for src in over:
            vms = np.flatnonzero(view.vm_host == src)
            if vms.size == 0:
                continue
            delta = host_load[src] - avg - load[vms]
            ok = delta >= 0
            if not ok.any():
                continue
            vm = int(vms[ok][np.argmin(delta[ok])])
            dests = [h for h in under if allocation_ok(view, vm, h, view.vm_host)
                     and load[vm] + host_load[h] < self.threshold / 100 * cores[h]]
            if not dests:
                return []
            return [(vm, min(dests, key=lambda h: util[h]))]
        return []

    def explain(self, view: ClusterArrays) -> list[tuple[int, int, str]]:
        """:meth:`decide`'s migration with Watcher's reason for it."""
        util = view.host_sum(_cores_used(view)) / view.host_sizes()[0] * 100
        return [(vm, dst, f"source at {util[view.vm_host[vm]]:.0f} % of its cores, over the {self.threshold:g} % "
                          f"threshold; the VM that brings it closest to the average, to the least used host "
                          f"under the threshold ({util[dst]:.0f} %)") for vm, dst in self.decide(view)]


@dataclass
class WatcherVmWorkloadConsolidation:
    """OpenStack Watcher's vm_workload_consolidation strategy (Sercon-style)."""

    cc: float = 1.0  #: capacity coefficient for CPU and RAM
    name: str = "watcher-vwc"  #: display name

    def decide(self, view: ClusterArrays) -> list[tuple[int, int]]:
        """Offload, consolidate, then collapse repeated moves of a VM."""
        cores, host_mem = view.host_sizes()
        load, mem = _cores_used(view), view.vm_mem_mib
        where = view.vm_host.copy()
        moves: list[tuple[int, int, int]] = []

        def host_load(h: int) -> tuple[float, float]:
            on = where == h
            return float(load[on].sum()), float(mem[on].sum())

        def fits(vm: int, h: int) -> bool:
            c, m = host_load(h)
            return c + load[vm] <= cores[h] * self.cc and m + mem[vm] <= host_mem[h] * self.cc

        def move(vm: int, dst: int) -> None:
            moves.append((vm, int(where[vm]), dst))
            where[vm] = dst

        nodes = sorted(range(view.n_hosts), key=lambda h: host_load(h)[0])
        for node in reversed(nodes):  # offload
            if host_load(node)[0] <= cores[node] * self.cc:
                continue
            for vm in sorted(np.flatnonzero(where == node), key=lambda v: load[v]):
                for dst in reversed(nodes):
                    if dst != node and fits(int(vm), dst):
                        move(int(vm), dst)
                        break
                if host_load(node)[0] <= cores[node] * self.cc:
                    break
        nodes = sorted(range(view.n_hosts), key=lambda h: host_load(h)[0])
        for asc, node in enumerate(nodes):  # consolidation
            for vm in sorted(np.flatnonzero(where == node), key=lambda v: load[v], reverse=True):
                dsc = len(nodes) - 1
                for dst in reversed(nodes):
                    if asc >= dsc:
                        break
                    if dst != node and fits(int(vm), dst):
                        move(int(vm), dst)
                        break
                    dsc -= 1
        final = {vm: dst for vm, _src, dst in moves}  # optimize_solution: one move per VM, none if back home
        return [(vm, dst) for vm, dst in final.items() if dst != view.vm_host[vm]]


@dataclass
class ProxLB:
    """ProxLB's rebalancing in "used" mode."""

    balanciness: float = 10.0  #: allowed spread of node usage, percentage points
    method: str = "memory"  #: memory (ProxLB's default) or cpu
    name: str = "proxlb"  #: display name

    def _usage(self, view: ClusterArrays) -> tuple[np.ndarray, np.ndarray]:
        """Per VM, what it uses; per host, its total (CPU in MHz, or memory in MiB), each host its own."""
        cores, mem = view.host_sizes()
        if self.method == "cpu":
            return view.vm_cpu_mhz, cores * view.setup.mhz_per_core
        return view.vm_mem_mib, np.asarray(mem, dtype=np.float64)

    def decide(self, view: ClusterArrays) -> list[tuple[int, int]]:
        """Move guests off the most-used node, smallest first, until the spread is small enough."""
        per_vm, total = self._usage(view)
        where = view.vm_host.copy()
        used = view.host_sum(per_vm).astype(np.float64)
        ok_nodes = ~view.maintenance
        moves: list[tuple[int, int]] = []
        for vm in np.argsort(view.vm_mem_mib, kind="stable"):  # one-guest groups, RAM ascending
            pct = used / total * 100
            if pct[ok_nodes].max() - pct[ok_nodes].min() <= self.balanciness:
                break
            src = int(where[vm])
            if src != int(np.argmax(np.where(ok_nodes, pct, -np.inf))):
                continue
            dst = int(np.argmax(np.where(ok_nodes, total - used, -np.inf)))
            if dst == src or total[dst] - used[dst] < per_vm[vm] or not allocation_ok(view, int(vm), dst, where):
                continue
            used[src] -= per_vm[vm]
            used[dst] += per_vm[vm]
            where[vm] = dst
            moves.append((int(vm), dst))
        return moves

    def explain(self, view: ClusterArrays) -> list[tuple[int, int, str]]:
        """:meth:`decide`'s migrations with ProxLB's reason: the usage spread before the plan."""
        per_vm, total = self._usage(view)
        pct = view.host_sum(per_vm) / total * 100
        ok = ~view.maintenance
        spread = float(pct[ok].max() - pct[ok].min()) if ok.any() else 0.0
        return [(vm, dst, f"{self.method} usage spread {spread:.0f} points > balanciness {self.balanciness:g}; "
                          "smallest guest of the most used node, to the node with the most free")
                for vm, dst in self.decide(view)]


@dataclass
class ProxmoxCrs:
    """Proxmox VE's CRS automatic rebalancing on the fleet's arrays."""

    threshold: float = pve_crs.DEFAULT_THRESHOLD  #: imbalance (CV of CPU+memory shares) that triggers it
    margin: float = pve_crs.DEFAULT_MARGIN  #: least relative improvement a migration must bring
    method: str = "bruteforce"  #: bruteforce (lowest imbalance after the move) or topsis
    mode: str = "dynamic"  #: dynamic (used CPU and memory) or static (configured)
    max_moves: int = 5  #: migrations per step (Proxmox issues one per settled round)
    name: str = "proxmox-crs"  #: display name

    def _usage(self, view: ClusterArrays, vm: int) -> pve_crs.Usage:
        if self.mode == "static":
            return pve_crs.Usage(float(view.vm_vcpus[vm]), float(view.vm_mem_cap[vm]))
        return pve_crs.Usage(float(view.vm_cpu_mhz[vm] / view.setup.mhz_per_core), float(view.vm_mem_mib[vm]))

    def decide(self, view: ClusterArrays) -> list[tuple[int, int]]:
        """Evacuate hosts in maintenance, then migrate while the imbalance stays above the threshold."""
        return [(v, h) for v, h, _ in self.explain(view)]

    def explain(self, view: ClusterArrays) -> list[tuple[int, int, str]]:
        """:meth:`decide` with the reason for each move: the imbalance it changes, or the evacuation."""
        s = view.setup
        cores, mem = view.host_sizes()
        maint = view.maintenance if view.maintenance.size else np.zeros(view.n_hosts, dtype=bool)
        usable = [h for h in range(view.n_hosts) if not maint[h]]
        if len(usable) < 2 and not maint.any():
            return []
        load = pve_crs.Load([pve_crs.Node(str(h), float(cores[h]), float(mem[h])) for h in usable],
                            unlimited_cpu=False)
        usages = {str(v): self._usage(view, v) for v in range(len(view.vm_host))}
        where = view.vm_host.copy()
        for v in range(len(where)):
            if not maint[where[v]]:
                load.add(str(int(where[v])), usages[str(v)])
        moves: list[tuple[int, int, str]] = []
        for v in np.flatnonzero(maint[where]):  # Proxmox moves guests off a node in maintenance first
            fits = [str(h) for h in usable if allocation_ok(view, int(v), h, where)]
            dst = pve_crs.best_node(load, usages[str(v)], fits)
            if dst is not None:
                load.add(dst, usages[str(v)])
                where[v] = int(dst)
                moves.append((int(v), int(dst), "evacuate a host in maintenance to the best-scored node"))
        ok_host = ~maint
        while len(moves) < self.max_moves and len(usable) > 1 and pve_crs.imbalance(load) > self.threshold:
            cpu_alloc = np.bincount(where, view.vm_vcpus, minlength=view.n_hosts)
            mem_alloc = np.bincount(where, view.vm_mem_cap, minlength=view.n_hosts)
            fits = ((cpu_alloc[None, :] + view.vm_vcpus[:, None] <= s.cpu_allocation_ratio * cores[None, :])
                    & (mem_alloc[None, :] + view.vm_mem_cap[:, None] <= s.ram_allocation_ratio * mem[None, :])
                    & ok_host[None, :] & ok_host[where][:, None]
                    & (np.arange(view.n_hosts)[None, :] != where[:, None]))
            cands = [pve_crs.Candidate((str(v),), str(int(where[v])), str(h)) for v, h in np.argwhere(fits)]
            choice = pve_crs.choose_rebalance(load, usages, cands, self.method, self.margin)
            if choice is None or not choice.accepted:
                break
            v, dst = int(choice.candidate.sids[0]), int(choice.candidate.target)
            load.add(choice.candidate.source, usages[str(v)], -1.0)
            load.add(choice.candidate.target, usages[str(v)])
            where[v] = dst
            moves.append((v, dst, f"imbalance (CV of CPU+memory shares) {choice.before:.2f} -> {choice.after:.2f}, "
                                  f"above the threshold {self.threshold:g}"))
        return moves


def _proxmox_crs(name: str, args: list[str]) -> ProxmoxCrs:
    words = {"static", "dynamic", "topsis", "bruteforce"}
    try:
        nums = [float(a) for a in args if a not in words]
    except ValueError:
        raise ValueError(f"balancer {name!r}: use proxmox-crs[:static|dynamic][:THRESHOLD[:MARGIN]][:topsis]") from None
    if len(nums) > 2:
        raise ValueError(f"balancer {name!r}: at most a threshold and a margin")
    mode = "static" if "static" in args else "dynamic"
    method = "topsis" if "topsis" in args else "bruteforce"
    threshold = nums[0] if nums else pve_crs.DEFAULT_THRESHOLD
    margin = nums[1] if len(nums) > 1 else pve_crs.DEFAULT_MARGIN
    return ProxmoxCrs(threshold, margin, method, mode, name=name)


def make_balancer(
    name: str,
) -> NoMigration | WatcherWorkloadBalance | WatcherVmWorkloadConsolidation | ProxLB | ProxmoxCrs | CpSatBalance:
    """A baseline balancer by name: none, watcher-wb[:T], watcher-vwc, proxlb[:B][:cpu],
    proxmox-crs[:static|dynamic][:T[:M]][:topsis], cp-sat[:K[:PRICE[:TRIGGER]]] (``llmvirt[:POLICY]``
    resolves in :mod:`llmvirt.strategies.registry`)."""
    base, *args = name.split(":")
    if base == "proxmox-crs":
        return _proxmox_crs(name, args)
    if base == "cp-sat":
        return make_cpsat(name, args)
    try:
        if base == "none":
            return NoMigration()
        if base == "watcher-wb":
            return WatcherWorkloadBalance(float(args[0]) if args else 25.0, name=name)
        if base == "watcher-vwc":
            return WatcherVmWorkloadConsolidation(name=name)
        if base == "proxlb":
            method = "cpu" if "cpu" in args else "memory"
            nums = [a for a in args if a != "cpu"]
            return ProxLB(float(nums[0]) if nums else 10.0, method, name=name)
    except ValueError:
        raise ValueError(f"balancer {name!r}: parameter is not a number") from None
    raise ValueError(f"unknown balancer {name!r}: use none, watcher-wb[:T], watcher-vwc, proxlb[:B][:cpu], "
                     "proxmox-crs[:static|dynamic][:T[:M]][:topsis], cp-sat[:K[:PRICE[:TRIGGER]]], llmvirt[:POLICY]")
