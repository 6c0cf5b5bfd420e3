"""``llmvirt-scan[:DIR]``: tuned CP-SAT deciding on a learned estimate of what saturated hosts hide from scans.

The balance default's CP-SAT decides on what a scan shows, and a saturated host reads just under its cores however
far above them its demand is. This strategy gives CP-SAT each VM's estimated next-step demand instead
(:mod:`llmvirt.policy.scan_recovery`, from the store's last hour of scans: each VM's CPU use and its host's share
then), at the trigger and gain its checkpoint chose. A configured ``[rebalance] hot`` is CP-SAT's trigger, as it
is the balance default's (one knob), and each VM's demand is then at least its reading: the operator set ``hot`` on
what scans read (the hysteresis checks readings against it), and a host reading above it for three scans is
relieved even where the estimate expects its load to fall. Without a store (a plan from a file) the hour is the
scan now repeated. Each move's reason names the estimate that drove it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from llmvirt.model.arrays import ClusterArrays
from llmvirt.model.cluster import Cluster
from llmvirt.policy import decide, scan_recovery
from llmvirt.policy.proposals import plan_from_proposals
from llmvirt.policy.scan_recovery import ScanRecovery
from llmvirt.sim import cluster_arrays
from llmvirt.sim.cpsat_balancer import CpSatBalance
from llmvirt.sim.scan_window import HISTORY, SATURATED, ScanWindow

PREFIX = "llmvirt-scan"  #: the strategy's name: ``llmvirt-scan[:DIR]`` (DIR default: the active policy's directory)


def scan_window(view: ClusterArrays, scans: dict[str, list[tuple[float, float]]]) -> ScanWindow:
    """The (1, V, HISTORY) hour of scans of ``view``'s VMs: the store's samples before now (``scans``: uuid ->
    (CPUs, host share) oldest first, its last one being the scan now), then the scan now; a short hour repeats its
    oldest sample."""
    now = view.cpus_used()
    cores, _ = view.host_sizes()
    reading = np.minimum(view.host_sum(now) / np.maximum(cores, 1e-9), 1.0 - 1e-9)[view.vm_host]
    n = now.size
    seen, sat = np.empty((1, n, HISTORY)), np.empty((1, n, HISTORY), dtype=bool)
    for i in range(n):
        uuid = view.vm_uuids[i] if view.vm_uuids else ""
        past = scans.get(uuid, [])[:-1][-(HISTORY - 1):] or [(float(now[i]), float(reading[i]))]
        past = [past[0]] * (HISTORY - 1 - len(past)) + past
        seen[0, i, :-1] = [c for c, _ in past]
        sat[0, i, :-1] = [share >= SATURATED for _, share in past]
    seen[0, :, -1], sat[0, :, -1] = now, reading >= SATURATED
    return ScanWindow(seen, sat, reading[None], view.vm_vcpus.astype(np.float64)[None], view.vm_host[None].copy())


def on_demand(view: ClusterArrays, demand: np.ndarray) -> ClusterArrays:
    """``view`` with each VM's CPU use replaced by ``demand`` (cores): what CP-SAT decides on."""
    return replace(view, vm_cpu_mhz=demand * view.setup.mhz_per_core, vm_cpus_used=demand)


@dataclass
class ScanRecoveryStrategy:
    """CP-SAT (``balancer``) on the estimate of ``recovery``; ``balancer`` is replaceable as DrainFirst's is."""

    balancer: CpSatBalance  #: the optimiser, at the checkpoint's trigger
    recovery: ScanRecovery  #: the learned estimate
    name: str  #: display name
    needs_scan_history: ClassVar[bool] = True  #: reads the store's last hour of scans

    def plan(self, cluster: Cluster, goal: str, ctx: decide.Context) -> decide.Plan:
        """CP-SAT's moves on the estimated demand, through the hard rules, each with what drove it."""
        if not cluster.hosts:
            return plan_from_proposals(cluster, goal, self.name, [], ctx)
        view = cluster_arrays.fleet_view(cluster, ctx.limits.cpu_allocation_ratio, ctx.limits.ram_allocation_ratio)
        w = scan_window(view, ctx.scan_history)
        est = self.recovery.demand(w)[0]
        hot = ctx.thresholds
        balancer, demand, floor = self.balancer, est, ""
        if hot.hot_configured:  # the operator's threshold is on what scans read: the estimate may add, not talk away
            balancer, demand = replace(self.balancer, trigger=hot.hot), np.maximum(est, view.cpus_used())
            floor = "; decided on at least the reading, as [rebalance] hot is set"
        said = balancer.explain(on_demand(view, demand))
        cores, _ = view.host_sizes()
        reasons = {view.vm_name(v): f"{why}; {self.driver(view, est, cores, v)}{floor}" for v, _, why in said}
        return plan_from_proposals(cluster, goal, self.name, view.named([(v, h) for v, h, _ in said]), ctx, reasons)

    @staticmethod
    def driver(view: ClusterArrays, est: np.ndarray, cores: np.ndarray, vm: int) -> str:
        """What the estimate said of ``vm``'s host: its scan against the estimated demand, and the VM's own."""
        src = int(view.vm_host[vm])
        on = view.vm_host == src
        read = view.cpus_used()[on].sum() / cores[src]
        vcpus = int(view.vm_vcpus[vm])
        most = ("" if est[vm] < vcpus - 1e-9 else f" (the most its {vcpus} vCPUs can run)" if est[vm] <= vcpus + 1e-9
                else f" (more than its {vcpus} vCPUs can run)")
        return (f"learned estimate: the source reads {read:.0%} of its cores, its demand is estimated at "
                f"{est[on].sum() / cores[src]:.0%}; this VM {view.cpus_used()[vm]:.2f} CPUs read, "
                f"{est[vm]:.2f} estimated{most}")


def load(spec: str | None, name: str) -> ScanRecoveryStrategy:
    """``llmvirt-scan[:DIR]``: the verified checkpoint of DIR (default: the active policy's directory) with CP-SAT at
    the balance default's moves and price and the checkpoint's trigger; one clear line if DIR has none."""
    rec = scan_recovery.load(decide.policy_dir(spec))
    point = f"cp-sat:{scan_recovery.CPSAT_MOVES}:{scan_recovery.CPSAT_PRICE:g}:{rec.trigger:g}"
    return ScanRecoveryStrategy(CpSatBalance(scan_recovery.CPSAT_MOVES, scan_recovery.CPSAT_PRICE, rec.trigger,
                                             name=f"baseline:{point}"), rec, name)


@dataclass
class ScanRecoveryBalancer:
    """The simulator's form (``decide(ClusterArrays)``, as :mod:`llmvirt.sim.field_policies`' balancers): the same
    estimate and CP-SAT on a fleet view with no store, so the hour is the scan now repeated (the held-back
    table's ablation (c)); bench/balance_scan_recovery.py runs it with the simulated hour."""

    balancer: CpSatBalance  #: the optimiser, at the checkpoint's trigger
    recovery: ScanRecovery  #: the learned estimate
    name: str  #: display name

    def decide(self, view: ClusterArrays) -> list[tuple[int, int]]:
        """CP-SAT's (vm, host) moves on the estimated demand of ``view``'s VMs."""
        if view.vm_host.size == 0:
            return []
        return self.balancer.decide(on_demand(view, self.recovery.demand(scan_window(view, {}))[0]))


def balancer(spec: str | None, name: str) -> ScanRecoveryBalancer:
    """``llmvirt-scan[:DIR]`` in the simulator: :func:`load`'s estimate and CP-SAT as a fleet balancer."""
    strategy = load(spec, name)
    return ScanRecoveryBalancer(strategy.balancer, strategy.recovery, name)
