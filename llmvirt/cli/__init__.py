"""The ``llmvirt`` command line."""

from pathlib import Path
from typing import Annotated

import typer

from llmvirt.cli import (
    bench,
    controller_cmd,
    db,
    doctor_cmd,
    hosts,
    inventory_cmds,
    journal_cmds,
    lab,
    mcp_cmd,
    metrics_cmd,
    outcome_cmds,
    peers_cmds,
    plan_cmds,
    policy_cmds,
    train_cmd,
)
from llmvirt.cli.common import State, new_app

app = new_app("llmvirt: inventory, placement and rebalancing for libvirt/KVM fleets.")
app.add_typer(hosts.app, name="hosts")
app.add_typer(db.app, name="db")
app.add_typer(lab.app, name="lab")
app.add_typer(metrics_cmd.app, name="metrics")
app.add_typer(controller_cmd.app, name="controller")
app.command("scan")(inventory_cmds.scan)
app.command("status")(inventory_cmds.status)
app.command("bench")(bench.bench)
app.command("tune")(bench.tune)
app.command("doctor")(doctor_cmd.doctor)
app.command("mcp")(mcp_cmd.mcp)
app.command("place")(plan_cmds.place)
app.command("rebalance")(plan_cmds.rebalance)
app.command("train")(train_cmd.train)
app.add_typer(journal_cmds.plans_app, name="plans")
app.add_typer(journal_cmds.cron_app, name="cron")
app.command("actions")(journal_cmds.actions)
app.command("outcomes")(outcome_cmds.outcomes_cmd)
app.command("score")(outcome_cmds.score)
app.add_typer(policy_cmds.policy_app, name="policy")
app.add_typer(peers_cmds.peers_app, name="peers")


def _print_version(value: bool) -> None:
    if value:
        from llmvirt import __version__

        typer.echo(f"llmvirt {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    db_url: Annotated[str | None, typer.Option("--db", envvar="LLMVIRT_DB",
                                               help="Database URL or SQLite path.")] = None,
    config: Annotated[Path | None, typer.Option("--config", envvar="LLMVIRT_CONFIG",
                                                help="TOML file listing hosts.")] = None,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print llmvirt's version and exit.")] = False,
) -> None:
    """llmvirt: inventory, placement and rebalancing for libvirt/KVM fleets."""
    ctx.obj = State(db_url=db_url, config_path=config)


COMPLETE_VAR = "_LLMVIRT_COMPLETE"  #: ``source_bash`` prints the bash completion script; the script sets the rest


def main() -> None:
    """Console entry point. Shell completion is loaded only when a shell asks for it (it costs start-up time):
    ``eval "$(_LLMVIRT_COMPLETE=source_bash llmvirt)"``, or the file the Debian package installs."""
    import os

    if os.environ.get(COMPLETE_VAR):
        from typer._completion_classes import completion_init

        completion_init()
    app(prog_name="llmvirt")
