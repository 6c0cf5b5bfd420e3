"""Turn an array strategy's proposals into a rebalance :class:`~llmvirt.policy.decide.Plan`.

A strategy that decides on the simulator's arrays (Watcher, ProxLB, CloudSim's PABFD, the learned
consolidation head) proposes ``(VM, destination)`` pairs. The policy proposes, constraints
dispose: each proposal is re-checked in plan order against the hard rules
(:func:`~llmvirt.policy.constraints.check_host`: capacity, GPUs, anti-affinity, host pinning,
maintenance; passthrough never moves) on the cluster as the earlier moves leave it. A refused
proposal is listed with its rule, never carried out. The kept moves carry the same reasons and
predicted effects as every other plan, so dry run, journal and executor treat them alike.
"""

from __future__ import annotations

from llmvirt.model.cluster import Cluster, Host
from llmvirt.policy import decide
from llmvirt.policy.constraints import PASSTHROUGH_NOT_MIGRATABLE, check_host, request_of


def _reason(strategy: str, src: Host, emptied: bool, before: float) -> str:
    if emptied:
        return f"{strategy}: empty {src.name} (expected CPU {100 * before:.0f} %) so it can idle"
    return f"{strategy}: relieve {src.name} (expected CPU {100 * before:.0f} %)"


def plan_from_proposals(cluster: Cluster, goal: str, strategy: str, proposals: list[tuple[str, str]],
                        ctx: decide.Context, reasons: dict[str, str] | None = None) -> decide.Plan:
    """The plan of ``proposals`` (VM name, destination host name) after the hard rules, at most
    ``ctx.max_migrations`` moves. ``reasons`` (VM name -> why) replaces the generic reason where the
    strategy says what drove a move. ``cluster`` is changed to the state after the plan."""
    plan = decide.Plan(goal=goal, policy=strategy, before=decide.summary(cluster, ctx.thresholds.hot))
    hosts = {h.name: h for h in cluster.hosts}
    where = {v.name: (v, h) for h in cluster.hosts for v in h.vms if v.running}  # kept current as moves apply
    proposed = {vm for vm, _ in proposals}
    emptied = {h.name for h in cluster.hosts
               if any(v.running for v in h.vms) and all(v.name in proposed for v in h.vms if v.running)}
    for vm_name, dst_name in proposals:
        found = where.get(vm_name)
        if found is None or dst_name not in hosts or found[1].name == dst_name:
            continue
        vm, src = found
        dst = hosts[dst_name]
        if vm.has_pci_passthrough:
            plan.unmovable[vm.name] = PASSTHROUGH_NOT_MIGRATABLE
            continue
        rule = check_host(dst, request_of(vm, ctx.groups.get(vm.name), ctx.host_pins.get(vm.name, ())),
                          ctx.limits, ctx.groups, exclude_vm=vm.name)
        if rule is not None:
            plan.unmovable[vm.name] = f"{strategy} proposed {dst.name}, refused: {rule}"
            continue
        if len(plan.moves) >= ctx.max_migrations:
            break
        reason = (f"{strategy}: {reasons[vm.name]}" if reasons and vm.name in reasons
                  else _reason(strategy, src, src.name in emptied, decide.host_load(src)))
        plan.moves.append(decide.move(cluster, vm, src, dst, reason))
        where[vm.name] = (vm, dst)
    plan.after = decide.summary(cluster, ctx.thresholds.hot)
    return plan

