"""``llmvirt db``: schema upgrades and history pruning."""

from typing import TYPE_CHECKING, Annotated

import typer

from llmvirt.cli.common import lazy, new_app, out, parse_age, state

if TYPE_CHECKING:
    import llmvirt.store.database as database
    import llmvirt.store.snapshots as snapshots
else:  # imported when a command runs
    database = lazy("llmvirt.store.database")
    snapshots = lazy("llmvirt.store.snapshots")

app = new_app("Manage the llmvirt database.")


@app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Create the schema or bring it to the newest revision."""
    engine = state(ctx).engine()
    out.print(f"database {engine.url.render_as_string(hide_password=True)} at revision "
              f"{database.current_revision(engine)}")


@app.command("prune")
def prune(
    ctx: typer.Context,
    older_than: Annotated[str, typer.Option(help="Delete snapshots older than this, e.g. 30d.")] = "30d",
) -> None:
    """Delete old snapshots; each host's latest snapshot is always kept."""
    n = snapshots.prune(state(ctx).engine(), parse_age(older_than))
    out.print(f"pruned {n} host snapshot(s) older than {older_than}")
