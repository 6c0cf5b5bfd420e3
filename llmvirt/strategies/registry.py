"""One registry: a strategy name becomes a Strategy that plans on a real cluster.

``llmvirt rebalance --policy NAME`` and ``llmvirt bench --policies NAME`` take the same names, and
both run the same decision code: ``bench`` on the simulator's arrays, ``rebalance`` on arrays
built from the scanned cluster (:mod:`llmvirt.sim.cluster_arrays`).

=====================================  ===========================================================
name                                   strategy
=====================================  ===========================================================
``baseline:watcher-wb[:T]``            OpenStack Watcher workload_balance (balance scenario)
``baseline:watcher-vwc``               OpenStack Watcher vm_workload_consolidation
``baseline:proxlb[:B][:cpu]``          ProxLB rebalancing
``baseline:proxmox-crs[:OPTS]``        Proxmox VE CRS auto-rebalancing (``static``/``dynamic``, threshold,
                                       margin, ``topsis``); reproduces Proxmox's own CRS test cases
``baseline:cp-sat[:K[:P[:T]]]``       each decision solved exactly by OR-Tools CP-SAT: at most K moves
                                       minimising overload above T x cores plus P CPUs per move
``baseline:none``, ``baseline:dvfs``   never migrate
``baseline:DET-SEL-P``                 CloudSim PABFD, e.g. ``thr-mmt-0.8``, ``lr-mmt-1.2`` (cloudsim scenario)
``baseline:gated:T:E:B[:wake]``        THR-MMT with a consolidation gate (the learned head's structure);
                                       ``:wake`` charges an empty host its idle power when placing a VM
``baseline:tuned:FAMILY``              a family's best parameters from ``policies/tuned.json`` (``llmvirt tune``)
``baseline:tail-tuned:FAMILY``         the same from ``policies/tuned_tail.json`` (tuned by the tail objective)
``baseline:relative-tuned:FAMILY``     the same from ``policies/tuned_relative_tail.json`` (the scale-free tail)
``baseline:best-fit|least-loaded|``    llmvirt's own rule scorers in its rebalance loop
``first-fit``
``llmvirt[:POLICY]``, a policy path,   the policy's default per goal: its ``strategies.json`` choice (a
a name under policies/, or nothing     tuned baseline where no learned part beats it; for balance after a
                                       drain of hosts in maintenance), else the placement scorer (balance)
                                       or the consolidation head (consolidate)
``llmvirt-scorer[:POLICY]``            the policy's placement scorer in llmvirt's rebalance loop (goal balance's
                                       default before CP-SAT replaced it)
``llmvirt-head[:POLICY]``              the learned consolidation head itself (gated PABFD)
``llmvirt-net[:POLICY]``               the neural consolidation policy (host tokens, evolution strategies on
                                       the consolidation cost; ``consolidate_net.safetensors``)
``llmvirt-net-fallback``               its fallback: the network's output at zero (= ``gated:0.95:1:0.5``)
``llmvirt-rl[:POLICY]``                the learned balance policy (PPO on the balance cost)
``llmvirt-rl-fallback[:T]``            its heuristic fallback in the same loop (trigger T, default 1.0)
``llmvirt-forecast[:POLICY]``          that fallback deciding on a learned forecast of each VM's next-step
                                       change (``balance_forecast.safetensors``)
``llmvirt-scan[:POLICY]``              tuned CP-SAT deciding on a learned estimate of what saturated hosts hide
                                       from scans (``scan_recovery.safetensors``; goal balance's default)
=====================================  ===========================================================

The ``baseline:`` prefix is optional for the simulator's names (``watcher-wb`` = ``baseline:watcher-wb``).
The layers: this module (the cli/bench layer) imports the simulator and the policy package; the
simulator never imports strategies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from llmvirt.errors import UsageError
from llmvirt.model.cluster import Cluster
from llmvirt.policy import decide
from llmvirt.policy.consolidate_head import GatedConsolidation
from llmvirt.policy.proposals import plan_from_proposals
from llmvirt.sim import cloudsim_policies, cluster_arrays, field_balloons, field_policies, pinning
from llmvirt.sim.cloudsim_policies import Dvfs, PabfdPolicy, StaticDecreasing
from llmvirt.strategies import scan_recovery
from llmvirt.strategies.goal_defaults import GOAL_DEFAULTS, goal_default, goal_strategy, has_head  # noqa: F401
from llmvirt.strategies.tuned import (
    TUNED_BALANCE_FILE,
    TUNED_MEMORY_FILE,
    TUNED_SOURCES,
    tuned_families,
    tuned_name,
)

SCORER_RULES = ("best-fit", "least-loaded", "first-fit")
GOALS = ("balance", "consolidate")


def _named(name: str, prefix: str) -> tuple[bool, str | None]:
    """(is ``name`` ``PREFIX`` or ``PREFIX:POLICY``, the checkpoint spec after the colon)."""
    if name == prefix or name.startswith(prefix + ":"):
        return True, name.split(":", 1)[1] if ":" in name else None
    return False, None


def _learned_spec(name: str) -> tuple[bool, str | None]:
    """(is it ``llmvirt[:POLICY]``, llmvirt's learned policy, its checkpoint spec)."""
    return _named(name, "llmvirt")


def _rl_spec(name: str) -> tuple[bool, str | None]:
    """(is it ``llmvirt-rl[:POLICY]``, the learned balance policy, its checkpoint spec)."""
    return _named(name, "llmvirt-rl")


def _fallback_spec(name: str) -> tuple[bool, float]:
    """(is it ``llmvirt-rl-fallback[:T]``, the learned balance policy's heuristic fallback, its trigger)."""
    hit, arg = _named(name, "llmvirt-rl-fallback")
    if not hit:
        return False, 1.0
    try:
        return True, float(arg) if arg else 1.0
    except ValueError:
        raise UsageError(f"{name!r}: use llmvirt-rl-fallback[:TRIGGER], e.g. llmvirt-rl-fallback:0.9") from None


def balance_actor(name: str) -> Any:
    """The learned balance policy (``llmvirt-rl[:POLICY]``), its fallback (``llmvirt-rl-fallback[:T]``) or the
    fallback on a learned forecast (``llmvirt-forecast[:POLICY]``), or None."""
    from llmvirt.policy import balance_policy

    fb, trigger = _fallback_spec(name)
    if fb:
        return balance_policy.BalanceActor(name=name, fallback=True, threshold=trigger)
    rl, spec = _rl_spec(name)
    if rl:
        return balance_policy.load(decide.policy_dir(spec), name=name)
    hit, spec = _named(name, "llmvirt-forecast")
    if hit:
        from llmvirt.policy import balance_forecast

        return balance_forecast.load(decide.policy_dir(spec), name=name)
    return None


def _net(name: str) -> Any:
    """``llmvirt-net[:POLICY]`` (the neural consolidation policy) or ``llmvirt-net-fallback``, or None."""
    from llmvirt.policy import consolidate_net

    if name == "llmvirt-net-fallback":
        return consolidate_net.policy(None, name)
    hit, spec = _named(name, "llmvirt-net")
    return consolidate_net.load(decide.policy_dir(spec), name)[0] if hit else None


def _head_spec(name: str) -> tuple[bool, str | None]:
    """(is it ``llmvirt-head[:POLICY]``, the consolidation head itself, its checkpoint spec)."""
    return _named(name, "llmvirt-head")


def _gated(name: str) -> Any:
    """``gated:THRESHOLD:EVERY:BELOW[:wake]``: THR-MMT with a consolidation gate, the learned head's structure as
    a baseline with hand-set (or grid-tuned) numbers; ``:wake`` charges an empty host its idle power when a VM is
    placed (``PabfdPolicy.wake_cost``)."""
    from llmvirt.policy.consolidate_head import gated_point
    from llmvirt.sim.overload import Thr

    thr, every, below, wake = gated_point(name)
    return GatedConsolidation(Thr(thr), "mmt", name=name, every=every, below=below, wake_cost=wake)


# ---- the simulator's scenarios: one maker per scenario, the same names as rebalance ----------------
def make_policy(name: str, seed: int = 0) -> Any:
    """A cloudsim-scenario policy: a CloudSim baseline (``baseline:`` optional), ``gated:T:E:B``,
    ``tuned:FAMILY`` (policies/tuned.json), ``tail-tuned:FAMILY`` (policies/tuned_tail.json),
    ``relative-tuned:FAMILY`` (policies/tuned_relative_tail.json) or
    ``llmvirt[:POLICY]``."""
    if (net := _net(name)) is not None:
        return net
    head, head_spec = _head_spec(name)
    learned, spec = _learned_spec(name)
    if learned and (chosen := goal_default(spec, "consolidate")) is not None:
        policy = make_policy(chosen[0], seed)
        policy.name = name
        return policy
    if head or learned:
        from llmvirt.policy import consolidate_head

        return consolidate_head.load(decide.policy_dir(head_spec if head else spec), name)[0]
    base = name.removeprefix("baseline:")
    if base.startswith(tuple(TUNED_SOURCES)):
        prefix, family = base.split(":", 1)
        policy = make_policy(tuned_name(family, TUNED_SOURCES[f"{prefix}:"]), seed)
        policy.name = name
        return policy
    if base.startswith("gated:"):
        return _gated(base)
    return cloudsim_policies.make_policy(base, seed=seed)


def make_balancer(name: str) -> Any:
    """A balance-scenario policy: a field baseline, ``tuned:FAMILY`` (policies/tuned_balance.json) or
    ``llmvirt[:POLICY]`` (llmvirt's rebalance loop)."""
    if name.removeprefix("baseline:").startswith("tuned:"):
        balancer = make_balancer(tuned_name(name.split("tuned:", 1)[1], TUNED_BALANCE_FILE))
        balancer.name = name
        return balancer
    actor = balance_actor(name)
    if actor is not None:
        return actor
    scan, scan_spec = _named(name, scan_recovery.PREFIX)
    if scan:
        return scan_recovery.balancer(scan_spec, name)
    learned, spec = _learned_spec(name)
    if learned and (chosen := goal_default(spec, "balance")) is not None:
        scanning = chosen[0] == scan_recovery.PREFIX  # the policy's own checkpoint, not the shipped one's
        balancer = scan_recovery.balancer(spec, name) if scanning else make_balancer(chosen[0])
        balancer.name = name
        return balancer
    base = name.removeprefix("baseline:")
    loop, loop_spec = _named(name, "llmvirt-scorer")
    if learned or loop or base in SCORER_RULES:
        from llmvirt.policy.sim_adapter import LlmvirtBalancer

        return LlmvirtBalancer(spec if learned else loop_spec if loop else f"baseline:{base}", name=name)
    return field_policies.make_balancer(base)


def make_balloon(name: str) -> Any:
    """A memory-scenario policy: MOM, Proxmox (each with its limits in the name), no-balloon,
    ``tuned:FAMILY`` (policies/tuned_memory.json) or ``llmvirt[:POLICY]`` (the balloon head)."""
    if name.removeprefix("baseline:").startswith("tuned:"):
        policy = make_balloon(tuned_name(name.split("tuned:", 1)[1], TUNED_MEMORY_FILE))
        policy.name = name
        return policy
    learned, spec = _learned_spec(name)
    if learned:
        from llmvirt.policy.sim_adapter import LearnedBalloon

        return LearnedBalloon(spec, name=name)
    return field_balloons.make_balloon(name.removeprefix("baseline:"))


def make_pin_policy(name: str) -> Any:
    """A pinning-scenario policy: none, nova[:FRACTION], or ``llmvirt[:POLICY]`` (the pinning head)."""
    learned, spec = _learned_spec(name)
    if learned:
        from llmvirt.policy.sim_adapter import LearnedPinning

        return LearnedPinning(spec, name=name)
    return pinning.make_pin_policy(name.removeprefix("baseline:"))


class Strategy(Protocol):
    """Plans on a cluster: (cluster, context) -> plan. ``cluster`` is left as the plan would leave it."""

    name: str

    def plan(self, cluster: Cluster, goal: str, ctx: decide.Context) -> decide.Plan:
        """A dry-run plan for ``goal``."""
        ...


@dataclass
class ScorerStrategy:
    """llmvirt's rebalance loop (drain, relieve hot hosts or empty cold ones) driven by a host scorer."""

    scorer: Any  #: decide.BaselineScorer or decide.LearnedScorer
    name: str = ""  #: display name

    def plan(self, cluster: Cluster, goal: str, ctx: decide.Context) -> decide.Plan:
        """decide.rebalance with the context's limits, groups, pins and thresholds."""
        return decide.rebalance(cluster, self.scorer, goal, ctx)


@dataclass
class FleetStrategy:
    """A balance-scenario baseline (Watcher, ProxLB) on the cluster's ClusterArrays."""

    balancer: Any  #: a BalancePolicy from llmvirt.sim.field_policies
    name: str  #: display name

    def plan(self, cluster: Cluster, goal: str, ctx: decide.Context) -> decide.Plan:
        """The balancer's one decision on the scanned state, through the hard rules (none on a cluster with no
        host, as when every node of a Proxmox case is off)."""
        if not cluster.hosts:
            return plan_from_proposals(cluster, goal, self.name, [], ctx)
        view = cluster_arrays.fleet_view(cluster, ctx.limits.cpu_allocation_ratio, ctx.limits.ram_allocation_ratio)
        if hasattr(self.balancer, "explain"):  # a balancer that says why (proxmox-crs)
            said = self.balancer.explain(view)
            reasons = {view.vm_name(v): why for v, _, why in said}
            return plan_from_proposals(cluster, goal, self.name, view.named([(v, h) for v, h, _ in said]), ctx,
                                       reasons)
        return plan_from_proposals(cluster, goal, self.name, view.named(self.balancer.decide(view)), ctx)


@dataclass
class CloudsimStrategy:
    """A cloudsim-scenario policy (PABFD baselines, the learned consolidation head) on the cluster's arrays."""

    policy: PabfdPolicy | Dvfs | StaticDecreasing  #: the simulator's policy object
    name: str  #: display name
    needs_history: ClassVar[bool] = True  #: the adaptive detectors read each VM's past CPU use

    def plan(self, cluster: Cluster, goal: str, ctx: decide.Context) -> decide.Plan:
        """One optimisation step (overload relief, then consolidation) on the scanned state.

        A gated head consolidates every ``every`` steps in the simulator; on real hosts each run is a
        decision step the operator chose to take (the cron interval stands in for the gate)."""
        state, view = cluster_arrays.cloudsim_state(cluster, ctx.history)
        if isinstance(self.policy, GatedConsolidation):
            self.policy.consolidate_next_step()
        pairs = self.policy.decide(state, 0.0)  # type: ignore[arg-type]
        why = getattr(self.policy, "reasons", {})
        reasons = {view.vm_name(vm): why[vm] for vm, _ in pairs if vm in why} or None
        return plan_from_proposals(cluster, goal, self.name, view.named(pairs), ctx, reasons)


@dataclass
class BalanceRlStrategy:
    """The learned balance policy (or its fallback) on the cluster's ClusterArrays, with each VM's recent CPU
    history from the store; one move per plan, as it was trained (one per 300 s step), unless the plan
    has hosts to drain (then the hard rules' drain comes first: ``decide.rebalance`` with least-loaded)."""

    actor: Any  #: llmvirt.policy.balance_policy.BalanceActor
    name: str  #: display name
    needs_history: ClassVar[bool] = True  #: the forecast reads each VM's last hour

    def plan(self, cluster: Cluster, goal: str, ctx: decide.Context) -> decide.Plan:
        """The actor's decision on the scanned state, with its reason, through the hard rules."""
        import numpy as np

        from llmvirt.sim.balance_env import HISTORY

        if goal != "balance":
            raise UsageError(f"{self.name} decides goal balance only; for consolidate use llmvirt or llmvirt-head")
        view = cluster_arrays.fleet_view(cluster, ctx.limits.cpu_allocation_ratio, ctx.limits.ram_allocation_ratio)
        mhz = view.setup.mhz_per_core
        k = HISTORY - 1  # past samples besides now
        hist = np.empty((len(view.vm_uuids), k))
        for i, uuid in enumerate(view.vm_uuids):  # CPU use as a share of the VM's vCPUs, oldest first
            past = [x * view.vm_vcpus[i] * mhz for x in ctx.history.get(uuid, [])[-k:]] or [view.vm_cpu_mhz[i]]
            hist[i] = [past[0]] * (k - len(past)) + past  # a short history repeats its oldest sample
        decisions = self.actor.explain(view, hist, view.movable)
        pairs = [(d.vm, d.dst) for d in decisions]
        reasons = {view.vm_name(d.vm): d.reason for d in decisions}
        return plan_from_proposals(cluster, goal, self.name, view.named(pairs), ctx, reasons)


def _chosen(chosen: str, spec: str | None, goal: str) -> Strategy:
    """A policy's strategies.json choice: the scan recovery reads that policy's checkpoint, others as named."""
    return scan_recovery.load(spec, chosen) if chosen == scan_recovery.PREFIX else resolve(chosen, goal)


def _learned(spec: str | None, goal: str, head_only: bool = False) -> Strategy:
    scorer = decide.load_scorer(spec)
    if goal == "balance" and not head_only and (chosen := goal_default(spec, goal)) is not None:
        from llmvirt.strategies.drain_first import DrainFirst

        return DrainFirst(_chosen(chosen[0], spec, goal), scorer, f"llmvirt balance={chosen[0]}")
    if goal == "consolidate":
        from llmvirt.policy import consolidate_head

        chosen = None if head_only else goal_default(spec, goal)
        if chosen is not None:
            return CloudsimStrategy(make_policy(chosen[0]), f"{scorer.name} {goal}={chosen[0]}")
        if has_head(spec):
            policy, _ = consolidate_head.load(decide.policy_dir(spec), name=f"{scorer.name} consolidation head")
            return CloudsimStrategy(policy, policy.name)
    return ScorerStrategy(scorer, scorer.name)


def resolve(name: str | None, goal: str = "balance") -> Strategy:
    """The Strategy called ``name`` for ``goal`` (see the module docstring); one clear line for a bad name."""
    if goal not in GOALS:
        raise UsageError(f"unknown goal {goal!r}: use balance or consolidate")
    if name is None:
        return _learned(None, goal)
    actor = balance_actor(name)
    if actor is not None:
        return BalanceRlStrategy(actor, name)
    scan, scan_spec = _named(name, scan_recovery.PREFIX)
    if scan:
        return scan_recovery.load(scan_spec, name)
    learned, spec = _learned_spec(name)
    if learned:
        return _learned(spec, goal)
    loop, spec = _named(name, "llmvirt-scorer")
    if loop:
        return ScorerStrategy(decide.load_scorer(spec), name)
    if (net := _net(name)) is not None:
        if goal != "consolidate":
            raise UsageError(f"{name} decides goal consolidate only; for balance use llmvirt or llmvirt-rl")
        return CloudsimStrategy(net, name)
    head, head_spec = _head_spec(name)
    if head:
        return _learned(head_spec, goal, head_only=True)
    base = name.removeprefix("baseline:")
    family = base.removeprefix("tuned:")
    if family != base and family in tuned_families(TUNED_BALANCE_FILE):
        strategy = resolve(tuned_name(family, TUNED_BALANCE_FILE), goal)
        strategy.name = f"baseline:{base} ({strategy.name})"
        return strategy
    if base in SCORER_RULES:
        return ScorerStrategy(decide.BaselineScorer(base), f"baseline:{base}")
    label = f"baseline:{base}"
    try:
        return FleetStrategy(field_policies.make_balancer(base), label)
    except ValueError as exc:
        if base.startswith(("proxmox-crs", "cp-sat")):
            raise UsageError(str(exc)) from None
    try:
        return CloudsimStrategy(make_policy(base), label)
    except ValueError as exc:
        if base.startswith((*TUNED_SOURCES, "gated:")):
            raise UsageError(str(exc)) from None
    if name.startswith("baseline:"):
        raise UsageError(f"unknown baseline {name!r}: use baseline:best-fit|least-loaded|first-fit, "
                         "watcher-wb[:T], watcher-vwc, proxlb[:B][:cpu], proxmox-crs[:OPTS], cp-sat[:K[:P[:T]]], none, "
                         "dvfs or "
                         "DETECTOR-SELECTION-PARAM (e.g. thr-mmt-0.8)")
    return _learned(name, goal)
