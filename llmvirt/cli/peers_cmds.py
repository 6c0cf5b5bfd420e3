"""``llmvirt peers``: run other projects' own test cases through llmvirt (conformance data)."""

import json
from pathlib import Path
from typing import Annotated

import typer

from llmvirt.cli.common import new_app, out
from llmvirt.errors import EXIT_ERROR, UsageError

peers_app = new_app("Run peers' own test cases (Proxmox VE's CRS cases) through llmvirt.")


@peers_app.command("pve-crs")
def pve_crs(
    cases: Annotated[list[Path], typer.Argument(help="Case directories, or folders of them "
                                                "(pve-ha-manager's src/test/test-crs-*).")],
    policy: Annotated[str | None, typer.Option(help="The llmvirt policy to compare (default: the default "
                                               "policy); baseline:proxmox-crs is always replayed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
) -> None:
    """Replay each Proxmox CRS case with baseline:proxmox-crs and with an llmvirt policy, and compare
    their decisions with Proxmox's own. Exit 1 when baseline:proxmox-crs misses one of Proxmox's
    decisions (llmvirt's own policy may differ; the table says how and why)."""
    from llmvirt.peers import conformance
    from llmvirt.peers.llmvirt_scheduler import LlmvirtScheduler

    for p in cases:
        if not p.exists():
            raise UsageError(f"{p}: no such case directory")
    dirs = conformance.case_dirs(cases)
    if not dirs:
        raise UsageError(f"no Proxmox CRS case (a directory with hardware_status) under {', '.join(map(str, cases))}")
    scheduler = LlmvirtScheduler(policy, name=policy or "llmvirt (default)")
    results = [conformance.run_case(d, scheduler) for d in dirs]
    if as_json:
        out.print_json(json.dumps({"cases": [r.as_json() for r in results],
                                   "baseline_matches": sum(r.baseline_matches for r in results),
                                   "tested": {s: sum(r.status == s for r in results)
                                              for s in ("match", "equal-or-better", "differs")}}))
    elif markdown:
        print(conformance.table(results))
    else:
        from rich.table import Table

        t = Table(title=f"Proxmox CRS conformance: baseline:proxmox-crs and {scheduler.name}")
        for col in ("case", "Proxmox", "proxmox-crs", scheduler.name, "imbalance", "reason"):
            t.add_column(col, overflow="fold")
        for r in results:
            t.add_row(r.case.removeprefix("test-crs-"), str(len(r.expected)),
                      "same" if r.baseline_matches else "[bold red]DIFFERS[/]", r.status,
                      f"{r.imbalance_proxmox:.2f} / {r.imbalance_tested:.2f}", r.reason)
        out.print(t)
        out.print(f"baseline:proxmox-crs reproduces {sum(r.baseline_matches for r in results)} of {len(results)} "
                  f"cases; {scheduler.name}: " + ", ".join(f"{sum(r.status == s for r in results)} {s}"
                                                         for s in ("match", "equal-or-better", "differs")))
    if not all(r.baseline_matches for r in results):
        raise typer.Exit(EXIT_ERROR)
