"""``llmvirt bench --scenario fleets|placement``: the hard balance scenario's table (see
:mod:`llmvirt.bench.fleets`) and the placement scenario's (:mod:`llmvirt.bench.placement`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rich.table import Table

from llmvirt.cli.common import out

if TYPE_CHECKING:
    from llmvirt.sim.traces import UsageTrace


def show(traces: list[tuple[str, UsageTrace]], names: list[str], held_out: bool,
         draw: tuple[list[int], int, bool], as_json: bool) -> None:
    """Run ``names`` on fleets of each trace (``draw``: seeds, fleets a seed, mixed sizes) and print them."""
    from llmvirt.bench import fleets
    from llmvirt.sim.split import split

    seeds, n_fleets, mixed = draw
    rows = []
    for label, tr in traces:
        if held_out:
            tr, label = tr.select(split(tr.names)[1]), f"{label} (held out)"
        rows += fleets.run(label, tr, names, n_fleets, seeds, mixed)
    summary = fleets.summary(rows)
    if as_json:
        out.print_json(json.dumps({"scenario": "fleets", "mixed": mixed, "fleets_per_seed": n_fleets,
                                   "seeds": seeds, "policies": summary}))
        return
    shape = "mixed host sizes, memory binding" if mixed else "hosts of one size a fleet"
    out.print(f"fleets: {n_fleets} fleet-days a seed, seeds {seeds[0]}-{seeds[-1]}, {shape}; cost = unmet + "
              "migration core-hours (docs/metrics.md), lower is better", markup=False)
    t = Table(title="the balance scenario on fleets: policies side by side")
    for col in ("policy", "cost min/med/max", "unmet %", "moves", "bound"):
        t.add_column(col, overflow="fold", justify="left" if col == "policy" else "right")
    for trace in dict.fromkeys(s["trace"] for s in summary):
        t.add_row(f"[bold]{trace}[/bold]", "", "", "", "")
        for s in (s for s in summary if s["trace"] == trace):
            name = s["policy"] if s["runs"] == s["policy"] else f"{s['policy']} ({s['runs']})"
            t.add_row(name, f"{s['cost_min']:.0f}/{s['cost_median']:.0f}/{s['cost_max']:.0f}",
                      f"{s['unmet_demand_pct']:.2f}", str(int(s["migrations"])), f"{s['bound_core_h']:.0f}")
    out.print(t)


def show_placement(traces: list[tuple[str, UsageTrace]], names: list[str], held_out: bool,
                   draw: tuple[list[int], int, bool], as_json: bool) -> None:
    """Run the placement scorers ``names`` on fleets of each trace and print them side by side."""
    from llmvirt.bench import placement
    from llmvirt.sim.split import split

    seeds, n_fleets, mixed = draw
    scorers = placement.check(names)
    rows = []
    for label, tr in traces:
        if held_out:
            tr, label = tr.select(split(tr.names)[1]), f"{label} (held out)"
        rows += placement.run(label, tr, scorers, n_fleets, (seeds, mixed))
    summary = placement.summary(rows)
    if as_json:
        out.print_json(json.dumps({"scenario": "placement", "mixed": mixed, "fleets_per_seed": n_fleets,
                                   "seeds": seeds, "policies": summary}))
        return
    shape = "mixed host sizes, memory binding" if mixed else "hosts of one size a fleet"
    out.print(f"placement: {n_fleets} fleets a seed, seeds {seeds[0]}-{seeds[-1]}, {shape}; half the VMs arrive "
              "and are placed once, nothing migrates; cost = unmet core-hours (docs/metrics.md), lower is better",
              markup=False)
    t = Table(title="the placement scenario: scorers side by side")
    for col in ("policy", "cost min/med/max", "unmet %", "refused", "bound"):
        t.add_column(col, overflow="fold", justify="left" if col == "policy" else "right")
    for trace in dict.fromkeys(s["trace"] for s in summary):
        t.add_row(f"[bold]{trace}[/bold]", "", "", "", "")
        for s in (s for s in summary if s["trace"] == trace):
            t.add_row(s["policy"], f"{s['cost_min']:.0f}/{s['cost_median']:.0f}/{s['cost_max']:.0f}",
                      f"{s['unmet_demand_pct']:.2f}", str(int(s["rejected"])), f"{s['bound_core_h']:.0f}")
    out.print(t)
