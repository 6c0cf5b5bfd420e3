"""``llmvirt plans``, ``llmvirt actions`` and ``llmvirt cron``: the journal and unattended runs."""

import json
import shutil
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from llmvirt.cli.common import lazy, literal, new_app, out, state
from llmvirt.errors import UsageError
from llmvirt.unattended import EVERY_MINUTES

if TYPE_CHECKING:
    import llmvirt.store.journal as journal
else:  # imported when a command runs
    journal = lazy("llmvirt.store.journal")

plans_app = new_app("Plans that were applied, and what happened to each action.")
cron_app = new_app("Unattended runs: crontab lines and systemd units.")


@plans_app.command("list")
def plans_list(ctx: typer.Context,
               as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Recent plans, newest first."""
    rows = journal.plans(state(ctx).engine())
    if as_json:
        out.print_json(json.dumps({"plans": rows}))
        return
    t = Table(title="Plans")
    for col in ("id", "created", "goal", "policy", "status"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*literal(r["id"], r["created_at"], r["goal"], r["policy"], r["status"]))
    out.print(t)


@plans_app.command("show")
def plans_show(ctx: typer.Context, plan_id: Annotated[int, typer.Argument(help="Plan id.")],
               as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """One plan with every action and each of its state changes."""
    doc = journal.plan(state(ctx).engine(), plan_id)
    if doc is None:
        raise UsageError(f"no plan {plan_id} (see `llmvirt plans list`)")
    if as_json:
        out.print_json(json.dumps(doc))
        return
    out.print(f"plan {doc['id']} ({doc['goal']}, {doc['policy']}) {doc['status']}, created {doc['created_at']}")
    for a in doc["actions"]:
        where = f"{a['src']} -> {a['dst']}" if a["dst"] else a["src"]
        out.print(f"  {a['seq'] + 1}. {a['kind']} {a['vm']} {where}: {a['status']} {a['reason'] or ''}", markup=False)
        for e in a["events"]:
            out.print(f"       {e['at']} {e['status']} {e['detail'] or ''}", markup=False)


def actions(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Recent actions, newest first."""
    rows = journal.all_actions(state(ctx).engine())
    if as_json:
        out.print_json(json.dumps({"actions": rows}))
        return
    t = Table(title="Actions")
    for col in ("id", "plan", "kind", "vm", "src", "dst", "status", "reason"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*literal(*(r[k] or "" for k in ("id", "plan_id", "kind", "vm", "src", "dst", "status", "reason"))))
    out.print(t)


@cron_app.command("print")
def cron_print(
    every_minutes: Annotated[int, typer.Option(help="Minutes between runs.")] = EVERY_MINUTES,
    apply: Annotated[bool, typer.Option("--apply/--dry-run", help="Units that apply plans, or only plan.")] = True,
) -> None:
    """Print a crontab line and systemd service + timer units for scan-then-rebalance."""
    if not 1 <= every_minutes <= 1440:
        raise UsageError("--every-minutes must be 1..1440")
    from llmvirt.unattended import crontab_line, systemd_units

    exe = shutil.which("llmvirt") or f"{sys.executable} -m llmvirt"
    try:
        line = crontab_line(exe, every_minutes, apply)
    except ValueError as exc:
        raise UsageError(f"--every-minutes {every_minutes}: {exc}") from None
    text = "# crontab (root): scan, then rebalance. Exit 3: some hosts or actions failed; 5: last run still busy\n"
    text += line + "\n"
    for name, unit in systemd_units(exe, every_minutes, apply).items():
        text += f"\n# /etc/systemd/system/{name}\n{unit}"
    out.print(text, markup=False, soft_wrap=True, end="")
