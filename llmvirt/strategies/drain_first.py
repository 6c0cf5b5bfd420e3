"""The default for goal balance when a policy's ``strategies.json`` names a tuned baseline for it.

A field baseline decides one step on the arrays (:class:`~llmvirt.strategies.registry.FleetStrategy`) and knows
nothing of hosts in maintenance, beyond never moving a VM into one. llmvirt's own loop drains them first, and
operators rely on it (``llmvirt hosts maintenance HOST on``, then ``rebalance --apply``). So the default keeps
that step: hosts in maintenance are drained exactly as ``llmvirt``'s loop drains them, then the named strategy
decides once on the cluster as the drain leaves it, within the migrations the drain left.

One knob: when the config sets ``[rebalance] hot``, a CP-SAT baseline's trigger is that value (the operator's
word on when rebalance acts); unset, the tuned trigger runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from llmvirt.model.cluster import Cluster
from llmvirt.policy import decide
from llmvirt.sim.cpsat_balancer import CpSatBalance


@dataclass
class DrainFirst:
    """Drain hosts in maintenance with ``scorer`` (as llmvirt's loop does), then one decision of ``inner``."""

    inner: Any  #: the Strategy strategies.json names (a FleetStrategy for a field baseline)
    scorer: decide.Scorer  #: ranks drain destinations: the policy's own scorer, as in llmvirt's loop
    name: str  #: display name

    @property
    def needs_history(self) -> bool:
        """Whether the inner strategy reads each VM's CPU history."""
        return bool(getattr(self.inner, "needs_history", False))

    @property
    def needs_scan_history(self) -> bool:
        """Whether the inner strategy reads the store's last hour of scans."""
        return bool(getattr(self.inner, "needs_scan_history", False))

    def plan(self, cluster: Cluster, goal: str, ctx: decide.Context) -> decide.Plan:
        """The drain's moves, then the inner strategy's, as one plan (``cluster`` is left as it leaves it)."""
        drained = decide.drain(cluster, self.scorer, goal, ctx)
        left = ctx.max_migrations - len(drained.moves)
        inner, name = self._inner(ctx)
        if left <= 0:
            drained.policy = name
            return drained
        rest = inner.plan(cluster, goal, replace(ctx, max_migrations=left))
        return decide.Plan(goal=goal, policy=name, moves=drained.moves + rest.moves,
                           unmovable={**rest.unmovable, **drained.unmovable}, before=drained.before,
                           after=rest.after, decisions={**rest.decisions, **drained.decisions})

    def _inner(self, ctx: decide.Context) -> tuple[Any, str]:
        """The inner strategy with a CP-SAT trigger set to the configured ``hot``, and the plan's policy name."""
        balancer = getattr(self.inner, "balancer", None)
        if not (isinstance(balancer, CpSatBalance) and ctx.thresholds.hot_configured):
            return self.inner, self.name
        hot = ctx.thresholds.hot
        name = f"baseline:cp-sat:{balancer.max_moves}:{balancer.move_price:g}:{hot:g}"
        label = name if self.inner.name.startswith("baseline:") else self.inner.name  # a learned one keeps its name
        return (replace(self.inner, balancer=replace(balancer, trigger=hot, name=name), name=label),
                f"{self.name} (trigger {hot:g}: the configured hot)")
