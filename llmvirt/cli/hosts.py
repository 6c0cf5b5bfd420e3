"""``llmvirt hosts``: the host registry."""

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from llmvirt.cli.common import lazy, literal, new_app, out, state
from llmvirt.errors import UsageError

if TYPE_CHECKING:
    import llmvirt.store.registry as registry
else:  # imported when a command runs
    registry = lazy("llmvirt.store.registry")

app = new_app("Register the libvirt hosts llmvirt manages.")


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Unique name for the host, e.g. kvm1.")],
    uri: Annotated[str, typer.Argument(help="libvirt URI, e.g. qemu+ssh://root@kvm1/system.")],
    maintenance: Annotated[bool, typer.Option(help="Register the host in maintenance.")] = False,
) -> None:
    """Register a host by its libvirt URI."""
    registry.add_host(state(ctx).engine(), registry.RegisteredHost(name, uri, maintenance))
    out.print(f"added host {name} ({uri})")


@app.command("list")
def list_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List registered hosts."""
    hosts = registry.list_hosts(state(ctx).store())
    if as_json:
        out.print_json(json.dumps({"hosts": [
            {"name": h.name, "uri": h.uri, "maintenance": h.maintenance, "source": h.source}
            for h in hosts]}))
        return
    t = Table(title="Registered hosts")
    for col in ("name", "uri", "maintenance", "source"):
        t.add_column(col, overflow="fold")
    for h in hosts:
        t.add_row(*literal(h.name, h.uri, "yes" if h.maintenance else "no", h.source))
    out.print(t)


@app.command("remove")
def remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Host to forget.")]) -> None:
    """Forget a host and its snapshot history."""
    registry.remove_host(state(ctx).engine(), name)
    out.print(f"removed host {name}")


@app.command("maintenance")
def maintenance(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Host to change.")],
    mode: Annotated[str, typer.Argument(help="on or off.")],
) -> None:
    """Put a host in maintenance (no new VMs; rebalance drains it) or take it out."""
    if mode not in ("on", "off"):
        raise UsageError(f"maintenance mode must be 'on' or 'off', not {mode!r}")
    registry.set_maintenance(state(ctx).engine(), name, mode == "on")
    out.print(f"host {name} maintenance {mode}")
