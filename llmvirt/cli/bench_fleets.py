"""``llmvirt bench --scenario fleets|placement``: the hard balance scenario's table (see
:mod:`llmvirt.bench.fleets`) and the placement scenario's (:mod:`llmvirt.bench.placement`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.table import Table

from llmvirt.cli.common import out

if TYPE_CHECKING:
    from llmvirt.sim.traces import UsageTrace


def _selected(traces: list[tuple[str, UsageTrace]], held_out: bool) -> list[tuple[str, UsageTrace]]:
    """Each trace, or with ``held_out`` only its held-back VMs (the split every report uses)."""
    if not held_out:
        return traces
    from llmvirt.sim.split import split

    return [(f"{label} (held out)", tr.select(split(tr.names)[1])) for label, tr in traces]


def _table(title: str, columns: tuple[str, ...], summary: list[dict[str, Any]],
           row: Callable[[dict[str, Any]], list[str]]) -> None:
    """Print ``summary`` grouped by trace, one ``row`` per policy under ``columns`` (the first: the policy)."""
    t = Table(title=title)
    for col in columns:
        t.add_column(col, overflow="fold", justify="left" if col == "policy" else "right")
    for trace in dict.fromkeys(s["trace"] for s in summary):
        t.add_row(f"[bold]{trace}[/bold]", *[""] * (len(columns) - 1))
        for s in (s for s in summary if s["trace"] == trace):
            t.add_row(*row(s))
    out.print(t)


def _rows(traces: list[tuple[str, UsageTrace]], held_out: bool,
          run_one: Callable[[str, UsageTrace], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``run_one(label, trace)``'s rows for every selected trace."""
    return [row for label, tr in _selected(traces, held_out) for row in run_one(label, tr)]


def _print_json(scenario: str, draw: tuple[list[int], int, bool], summary: list[dict[str, Any]]) -> None:
    seeds, n_fleets, mixed = draw
    out.print_json(json.dumps({"scenario": scenario, "mixed": mixed, "fleets_per_seed": n_fleets, "seeds": seeds,
                               "policies": summary}))


def _costs(s: dict[str, Any]) -> str:
    return f"{s['cost_min']:.0f}/{s['cost_median']:.0f}/{s['cost_max']:.0f}"


def _shape(mixed: bool) -> str:
    return "mixed host sizes, memory binding" if mixed else "hosts of one size a fleet"


def show(traces: list[tuple[str, UsageTrace]], names: list[str], held_out: bool,
         draw: tuple[list[int], int, bool], as_json: bool) -> None:
    """Run ``names`` on fleets of each trace (``draw``: seeds, fleets a seed, mixed sizes) and print them."""
    from llmvirt.bench import fleets

    _show_fleets("fleets", fleets.run, (traces, names, held_out), draw, as_json)


def show_scans(traces: list[tuple[str, UsageTrace]], names: list[str], held_out: bool,
               draw: tuple[list[int], int, bool], as_json: bool) -> None:
    """Run ``names`` on fleets of each trace, every policy deciding on what scans show, and print them."""
    from llmvirt.bench import scans

    _show_fleets("scans", scans.run, (traces, names, held_out), draw, as_json)


def _show_fleets(scenario: str, run: Callable[..., list[Any]], what: tuple[list[tuple[str, UsageTrace]], list[str],
                 bool], draw: tuple[list[int], int, bool], as_json: bool) -> None:
    from llmvirt.bench import fleets

    traces, names, held_out = what
    seeds, n_fleets, mixed = draw
    summary = fleets.summary(_rows(traces, held_out, lambda label, tr: run(label, tr, names, n_fleets, seeds, mixed)))
    if as_json:
        _print_json(scenario, draw, summary)
        return
    on = "every policy deciding on scans (a saturated host reads just under its cores)" if scenario == "scans" else ""
    out.print(f"{scenario}: {n_fleets} fleet-days a seed, seeds {seeds[0]}-{seeds[-1]}, {_shape(mixed)}"
              f"{'; ' + on if on else ''}; cost = unmet + migration core-hours (docs/metrics.md), lower is better",
              markup=False)
    _table(f"the balance scenario on fleets{', on scans' if on else ''}: policies side by side",
           ("policy", "cost min/med/max", "unmet %", "moves", "bound"), summary,
           lambda s: [s["policy"] if s["runs"] == s["policy"] else f"{s['policy']} ({s['runs']})", _costs(s),
                      f"{s['unmet_demand_pct']:.2f}", str(int(s["migrations"])), f"{s['bound_core_h']:.0f}"])


def show_placement(traces: list[tuple[str, UsageTrace]], names: list[str], held_out: bool,
                   draw: tuple[list[int], int, bool], as_json: bool) -> None:
    """Run the placement scorers ``names`` on fleets of each trace and print them side by side."""
    from llmvirt.bench import placement

    seeds, n_fleets, mixed = draw
    scorers = placement.check(names)
    summary = placement.summary(_rows(traces, held_out, lambda label, tr: placement.run(label, tr, scorers, n_fleets,
                                                                                         (seeds, mixed))))
    if as_json:
        _print_json("placement", draw, summary)
        return
    out.print(f"placement: {n_fleets} fleets a seed, seeds {seeds[0]}-{seeds[-1]}, {_shape(mixed)}; half the VMs "
              "arrive and are placed once, nothing migrates; cost = unmet core-hours (docs/metrics.md), lower is "
              "better", markup=False)
    _table("the placement scenario: scorers side by side", ("policy", "cost min/med/max", "unmet %", "refused",
                                                             "bound"), summary,
           lambda s: [s["policy"], _costs(s), f"{s['unmet_demand_pct']:.2f}", str(int(s["rejected"])),
                      f"{s['bound_core_h']:.0f}"])
