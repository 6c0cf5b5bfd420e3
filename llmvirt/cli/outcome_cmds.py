"""``llmvirt outcomes`` and ``llmvirt score``: what executed actions came to, and their rewards."""

import json
from typing import Annotated

import typer
from rich.table import Table

from llmvirt import config
from llmvirt.cli.common import out, state


def score(ctx: typer.Context,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Score every executed action whose outcome window has passed (also run at the end of each scan)."""
    from llmvirt.measure import outcomes

    st = state(ctx)
    n = outcomes.score_due(st.engine(), config.load_outcome_window(st.config_path))
    if as_json:
        out.print_json(json.dumps({"scored": n}))
    else:
        out.print(f"scored {n} outcome{'s' if n != 1 else ''}")


def outcomes_cmd(ctx: typer.Context,
                 as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
                 limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50) -> None:
    """Executed actions with their measured outcome and reward (or pending while their window runs)."""
    from llmvirt.measure import outcomes

    rows = outcomes.listing(state(ctx).engine(), limit)
    if as_json:
        out.print_json(json.dumps({"outcomes": rows}))
        return
    t = Table(title="Outcomes")
    for col in ("action", "policy", "kind", "VM", "hosts", "status", "reward", "load after"):
        t.add_column(col, overflow="fold")
    for r in rows:
        after = ", ".join(f"{h} {100 * x:.0f} %" for h, x in (r.get("detail") or {}).get("after", {}).items()
                          if x is not None)
        hosts = f"{r['src']}→{r['dst']}" if r["dst"] else (r["src"] or "")
        t.add_row(str(r["action_id"]), r["policy"], r["kind"], r["vm"], hosts, r["status"],
                  f"{r['reward']:.4f}" if "reward" in r else "pending", after or "-")
    out.print(t)
