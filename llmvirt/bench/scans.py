"""``llmvirt bench --scenario scans``: the balance default's own judgement, on any trace, from the command line.

``rebalance --goal balance`` decides on what scans show, and a scan hides the size of an overload: a host whose
demand exceeds its cores reads just under them, each VM at its fair share. The balance default (tuned CP-SAT on the
learned scan recovery, :mod:`llmvirt.policy.scan_recovery`) was judged that way, on held-back Bitbrains fleets
(bench/balance_scan_recovery.py). This scenario runs the same judgement on the fleets of any trace an operator or a
reviewer brings: the fleets of the ``fleets`` scenario, every policy deciding on the simulated scans, with the
store's hour of scans kept as a controller keeps it. Policy names:

- ``llmvirt`` (the active policy's balance default) or ``llmvirt-scan[:DIR]``: CP-SAT on the learned estimate;
- ``scan-heuristic``: the tuned heuristic the network must beat (ablation (a)): CP-SAT on each VM's last reading from
  before its host saturated, at the point tuned on the training fleets (:data:`HEURISTIC_POINTS`);
- ``scan-heuristic:host``: the host-wide heuristic, a saturated host's readings scaled by how much more its VMs read
  at their last clear step, at its own tuned point; ``scan-heuristic:NAME:GAIN``: either one at another gain;
  a last ``:capped`` decides on no more than each VM's vCPUs, as a checkpoint with ``"cap": "vcpus"`` does;
- any other balancer name (``baseline:cp-sat:2:0.1:0.95``, the default before; ``tuned:FAMILY``; a field baseline):
  that balancer deciding on the reading.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from llmvirt.bench import fleets as fleet_scenario
from llmvirt.bench.balance_rl import fleets
from llmvirt.bench.fleets import FleetRow
from llmvirt.errors import UsageError
from llmvirt.learn.train_scan_recovery import reading, run_on_scans
from llmvirt.policy import scan_recovery as sr
from llmvirt.policy.weights import CheckpointError
from llmvirt.sim.scan_window import ScanWindow
from llmvirt.sim.traces import UsageTrace

HEURISTIC = "scan-heuristic"  #: the tuned heuristics' name in this scenario: ``scan-heuristic[:NAME]``
HEURISTIC_POINTS = {"last-clear": (0.95, 1.0), "host": (0.95, 1.0)}
"""(CP-SAT trigger, gain) of each heuristic of :data:`llmvirt.policy.scan_recovery.HEURISTICS`: the lowest cost summed
on both Bitbrains months' tuning fleets (bench/balance_scan_recovery_tune_[host_]*.json), the grid and fleets the
learned estimate's point was chosen on."""

Contender = tuple[Any, Callable[[ScanWindow], np.ndarray]]  #: (a balancer, the demand it decides on)


def contender(name: str) -> Contender:
    """The balancer ``name`` runs and the demand it decides on; one clear line for a name this scenario cannot run."""
    from llmvirt.strategies.registry import balance_actor, make_balancer
    from llmvirt.strategies.scan_recovery import ScanRecoveryBalancer

    if name.split(":")[0] == HEURISTIC:
        capped = name.endswith(":capped")
        which, trigger, gain = heuristic_point(name.removesuffix(":capped"))
        point = f"cp-sat:{sr.CPSAT_MOVES}:{sr.CPSAT_PRICE:g}:{trigger:g}"
        return make_balancer(point), sr.ScanRecovery(None, gain, heuristic=which, cap="vcpus" if capped else "").demand
    base = fleet_scenario.resolved(name)
    try:
        if balance_actor(base) is not None:
            raise UsageError(f"{name} acts on the simulator's state, not on a scan; the scans scenario runs "
                             "balancers (use --scenario fleets for it)")
        b = make_balancer(base)
    except (ValueError, CheckpointError) as exc:
        raise UsageError(str(exc)) from None
    if isinstance(b, ScanRecoveryBalancer):
        return b.balancer, b.recovery.demand
    return b, reading


def heuristic_point(name: str) -> tuple[str, float, float]:
    """(heuristic, trigger, gain) of ``scan-heuristic[:NAME[:GAIN]]``: its tuned point, or that trigger at GAIN."""
    parts = name.split(":")
    which = parts[1] if len(parts) > 1 else "last-clear"
    if which not in HEURISTIC_POINTS or len(parts) > 3:
        raise UsageError(f"unknown heuristic {':'.join(parts[1:])!r}: use "
                         f"{HEURISTIC}[:last-clear|:host][:GAIN][:capped]")
    trigger, gain = HEURISTIC_POINTS[which]
    if len(parts) == 3:
        try:
            gain = float(parts[2])
        except ValueError:
            gain = -1.0
        if not 0.0 <= gain <= 10.0:
            raise UsageError(f"{name}: the gain must be a number from 0 to 10")
    return which, trigger, gain


def check(names: list[str]) -> None:
    """One clear line for a name the scenario cannot run."""
    for name in names:
        contender(name)


def run(label: str, trace: UsageTrace, names: list[str], n_fleets: int, seeds: list[int],
        mixed: bool = False) -> list[FleetRow]:
    """Every policy on the same ``n_fleets`` fleets of each seed (VMs of ``trace``), deciding on scans."""
    import time

    cfg = fleet_scenario.scenario_config(trace, mixed)
    vms = np.arange(len(trace.names))
    chosen = {name: contender(name) for name in names}
    rows = []
    for seed in seeds:
        fl = fleets(trace, vms, n_fleets, seed, cfg)
        for name, (balancer, demand) in chosen.items():
            t0 = time.perf_counter()
            per = run_on_scans(balancer, demand, trace, fl, cfg)
            totals = {k: float(sum(r[k] for r in per)) for k in fleet_scenario.KEYS}
            rows.append(FleetRow(label, name, seed, totals, time.perf_counter() - t0))
    return rows
