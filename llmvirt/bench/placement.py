"""``llmvirt bench --scenario placement``: placement scorers side by side in the placement scenario
(:mod:`llmvirt.sim.placement_env`) on fleets drawn from any trace's VMs.

Names are what ``place --policy`` takes (``baseline:...``, a name under policies/, a checkpoint
directory), and ``tuned`` for the tuned placement baseline (``policies/tuned_placement.json``). Every
scorer expects a new VM to use the trace VMs' mean share of their vCPUs, as ``place --expected-cpu``
would be set for that fleet.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import numpy as np

from llmvirt.bench.fleets import scenario_config
from llmvirt.learn.train_place_rl import episodes, expected_util
from llmvirt.paths import DEFAULT_POLICY
from llmvirt.policy import decide
from llmvirt.policy.arrivals import chooser
from llmvirt.sim.traces import UsageTrace


def spec(name: str) -> str:
    """``tuned`` as the tuned placement baseline's name; any other name as it is."""
    if name != "tuned":
        return name
    return str(json.loads((DEFAULT_POLICY.parent / "tuned_placement.json").read_text())["strategy"])


def check(names: list[str]) -> dict[str, Any]:
    """Every scorer loaded (a bad name or checkpoint: one clear error), by name."""
    return {name: decide.load_scorer(spec(name)) for name in names}


def run(label: str, trace: UsageTrace, scorers: dict[str, Any], n_fleets: int,
        draw: tuple[list[int], bool]) -> list[dict[str, Any]]:
    """One row per scorer and seed: the summed figures of ``n_fleets`` fleets (``draw``: seeds, mixed sizes)."""
    seeds, mixed = draw
    shape = scenario_config(trace, mixed)  # the fleets scenario's: a generic trace's vCPU is a core
    vms = np.arange(len(trace.names))
    util = expected_util([(trace, vms)], shape.mhz_per_core)
    rows = []
    for seed in seeds:
        eps = episodes([(trace, vms)], [shape], n_fleets, np.random.default_rng(seed))
        bound = sum(ep.run(lambda _a: -1)["bound_core_h"] for ep, _ in eps)
        for name, scorer in scorers.items():
            figs = [ep.run(chooser(scorer, util)) for ep, _ in eps]
            row = {k: sum(f[k] for f in figs) for k in ("cost", "overload_host_h", "demand_core_h", "rejected")}
            rows.append({"trace": label, "policy": name, "seed": seed, **row, "bound_core_h": bound,
                         "expected_cpu": util})
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per trace and scorer: cost min/median/max over seeds, mean unmet share, rejections, bound."""
    out = []
    for key in dict.fromkeys((r["trace"], r["policy"]) for r in rows):
        mine = [r for r in rows if (r["trace"], r["policy"]) == key]
        costs = [r["cost"] for r in mine]
        out.append({"trace": key[0], "policy": key[1], "seeds": len(mine), "cost_min": min(costs),
                    "cost_median": statistics.median(costs), "cost_max": max(costs),
                    "unmet_demand_pct": 100 * sum(costs) / max(sum(r["demand_core_h"] for r in mine), 1e-9),
                    "rejected": sum(r["rejected"] for r in mine),
                    "bound_core_h": statistics.mean(r["bound_core_h"] for r in mine)})
    return out
