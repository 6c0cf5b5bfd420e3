"""``llmvirt bench``: compare placement policies side by side on identical trace input."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llmvirt.cli.common import out
from llmvirt.errors import UsageError
from llmvirt.sim import bench as simbench


class Scenario(StrEnum):
    """Benchmark scenarios."""

    cloudsim = "cloudsim"


def bench(
    scenario: Annotated[Scenario, typer.Option(help="Scenario: cloudsim (Beloglazov & Buyya on PlanetLab).")] =
    Scenario.cloudsim,
    trace: Annotated[list[Path] | None, typer.Option("--trace", help="Trace directory (repeatable), e.g. "
                                                     "../shared/traces/planetlab/20110303.")] = None,
    policies: Annotated[str, typer.Option(help="Comma-separated policies: dvfs or DETECTOR-SELECTION-PARAM "
                                          "(thr|iqr|mad|lr x mmt|mu|rs).")] =
    ",".join(simbench.DEFAULT_CLOUDSIM_POLICIES),
    seed: Annotated[int, typer.Option(help="Seed for random selection (rs).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write per-step curves and a summary chart to this PNG.")]
    = None,
) -> None:
    """Run every policy on every trace and print the results side by side, with a lower bound."""
    if not trace:
        raise UsageError("give at least one --trace DIR")
    names = [p.strip() for p in policies.split(",") if p.strip()]
    for name in names:
        try:
            simbench.make_policy(name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    results, bounds = simbench.run_cloudsim(list(trace), names, seed)
    if plot is not None:
        simbench.plot(results, bounds, plot)
    if as_json:
        out.print_json(json.dumps(simbench.results_json(results, bounds)))
        return
    t = Table(title=f"{scenario.value}: policies side by side")
    for col in ("trace", "policy", "energy kWh", "migrations", "SLATAH %", "PDM %", "SLAV %", "ESV", "s"):
        t.add_column(col, justify="right" if col not in ("trace", "policy") else "left")
    for r in results:
        s = r.summary
        t.add_row(r.trace, r.policy, f"{s['energy_kwh']:.2f}", str(int(s["migrations"])), f"{s['slatah_pct']:.2f}",
                  f"{s['pdm_pct']:.3f}", f"{s['slav_pct']:.5f}", f"{s['esv']:.5f}", f"{r.seconds:.1f}")
    for tr, e in bounds.items():
        t.add_row(tr, "[italic]lower bound[/italic]", f"{e:.2f}", "-", "-", "-", "-", "-", "-")
    out.print(t)
    if plot is not None:
        out.print(f"plot written to {plot}")
