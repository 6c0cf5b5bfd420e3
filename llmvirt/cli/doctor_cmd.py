"""``llmvirt doctor``: check hosts, store and unattended runs before trusting them."""

import json
from typing import Annotated

import typer

from llmvirt.cli.common import out, state
from llmvirt.errors import EXIT_ERROR


def doctor(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds each host may take.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One line per check, with a fix hint where something is wrong. Exit 1 when a check fails."""
    from rich.markup import escape
    from rich.table import Table

    from llmvirt import doctor as doc
    from llmvirt.config import load_migration_settings
    from llmvirt.store import database

    st = state(ctx)
    migrate_uri = load_migration_settings(st.config_path).migrate_uri
    checks = doc.all_checks(st.engine, database.sqlite_path(database.resolve_url(st.db_url)), timeout, migrate_uri)
    if as_json:
        out.print_json(json.dumps(doc.as_json(checks)))
    else:
        t = Table(title="llmvirt doctor", show_lines=False)
        for col in ("scope", "check", "status", "detail"):
            t.add_column(col, overflow="fold")
        style = {doc.OK: "green", doc.WARN: "yellow", doc.FAIL: "bold red"}
        for c in checks:
            detail = c.detail + (f"\n→ {c.fix}" if c.fix else "")
            t.add_row(escape(c.scope), c.check, f"[{style[c.status]}]{c.status}[/]", escape(detail))
        out.print(t)
    if any(c.status == doc.FAIL for c in checks):
        raise typer.Exit(EXIT_ERROR)
