"""``llmvirt controller run``: scan every interval, and plan and apply every --plan-every seconds, while this controller
leads."""

import json
from typing import Annotated

import typer

from llmvirt.cli.common import new_app, out, state
from llmvirt.errors import UsageError
from llmvirt.unattended import EVERY_MINUTES

app = new_app("A long-running controller; several can share one store, and exactly one leads.")


@app.command("run")
def run(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(help="Seconds between ticks: scans, and the takeover time.")] = 60.0,
    plan_every: Annotated[float, typer.Option(help="Seconds between the leader's plans (at once on taking the "
                                              "lead); 300 is the cadence the balance default was judged at.")]
    = 60.0 * EVERY_MINUTES,
    apply: Annotated[bool, typer.Option("--apply/--dry-run", help="Apply plans while leading, or only plan.")]
    = False,
    goal: Annotated[str, typer.Option(help="balance or consolidate.")] = "balance",
    max_migrations: Annotated[int, typer.Option(help="At most this many migrations per plan.")] = 10,
    ticks: Annotated[int | None, typer.Option(help="Stop after this many ticks (default: run until stopped).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per tick.")] = False,
) -> None:
    """Every interval: take or keep the lead; the leader scans, and every --plan-every seconds plans and (with
    --apply) applies.

    A follower waits. A new leader first reconciles what a dead one left in the journal. A leader that
    loses its lead or the database stops acting at once. SIGTERM or Ctrl-C gives the lead up.
    """
    if interval <= 0 or plan_every <= 0:
        raise UsageError("--interval and --plan-every must be above 0")
    if goal not in ("balance", "consolidate"):
        raise UsageError(f"unknown goal {goal!r}: use balance or consolidate")
    if max_migrations < 0 or (ticks is not None and ticks < 1):
        raise UsageError("--max-migrations must be at least 0 and --ticks at least 1")
    import signal

    from llmvirt import controller
    from llmvirt.store.database import resolve_url

    st = state(ctx)
    engine = st.engine()

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)  # unwinds through controller.run's finally: the lead is given up

    signal.signal(signal.SIGTERM, stop)

    def report(t: controller.Tick) -> None:
        if as_json:
            print(json.dumps(t.as_json()), flush=True)
            return
        did = f"{t.actions} actions {t.outcomes or ''}" if t.planned else "no plan due"
        what = {controller.LEADER: f"leader{' (took over)' if t.took_over else ''}: scan {t.scan_id}, "
                f"{t.hosts_ok} hosts ok, {t.hosts_failed} failed, {did}",
                controller.FOLLOWER: "follower: another controller leads",
                controller.LOST: f"lost the lead{': ' + t.note if t.note else ''}; not acting",
                controller.ERROR: f"leader, this tick failed: {t.note}"}[t.role]
        out.print(what, markup=False, soft_wrap=True)
        for note in t.reconciled:
            out.print(f"reconciled: {note}", markup=False, soft_wrap=True)

    settings = controller.ControllerSettings(apply, goal, max_migrations, st.config_path, plan_every)
    controller.run(engine, resolve_url(st.db_url), settings, interval, report, ticks)


@app.command("list")
def list_controllers(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every controller sharing this store: its role at its last tick, and whether it has gone quiet."""
    from rich.table import Table

    from llmvirt.store import controllers

    rows = controllers.all_controllers(state(ctx).engine())
    if as_json:
        out.print_json(json.dumps({"controllers": rows}))
        return
    t = Table(title="Controllers")
    for col in ("controller", "role", "last tick", "leading since"):
        t.add_column(col, overflow="fold")
    for c in rows:
        age = f"{c['last_tick_age_s']:.0f} s ago" + (" (stale)" if c["stale"] else "")
        t.add_row(c["name"], c["role"], age, (c["leading_since"] or "")[:19].replace("T", " "))
    out.print(t)
