"""``llmvirt mcp``: serve llmvirt to an LLM assistant over the Model Context Protocol."""

from typing import Annotated

import typer

from llmvirt.cli.common import state
from llmvirt.errors import UsageError


def mcp(
    ctx: typer.Context,
    listen: Annotated[str | None, typer.Option(help="Serve streamable HTTP on HOST:PORT (path /mcp) instead of "
                                               "stdio. Bind to localhost unless a proxy authenticates callers.")]
    = None,
    allow_apply: Annotated[bool, typer.Option("--allow-apply", help="Offer apply_plan: apply a plan the client was "
                                              "shown (default: read-only tools only).")] = False,
    stale_after: Annotated[float, typer.Option(help="Refuse to apply a plan shown more than this many seconds ago.")]
    = 600.0,
    apply_interval: Annotated[float, typer.Option(help="At most one apply per this many seconds.")] = 60.0,
) -> None:
    """Serve the read-only tools (status, vm_history, place, rebalance_plan, plans, actions, outcomes,
    policies, doctor), two resources and two prompts; with --allow-apply also apply_plan."""
    from llmvirt import mcp_server

    if stale_after <= 0 or apply_interval < 0:
        raise UsageError("--stale-after must be above 0 and --apply-interval at least 0")
    host, port = "127.0.0.1", 0
    if listen is not None:
        host, _, port_text = listen.rpartition(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"--listen {listen!r}: use HOST:PORT, e.g. 127.0.0.1:8765")
        host, port = host or "127.0.0.1", int(port_text)
    st = state(ctx)
    app = mcp_server.LlmvirtMcp(st.db_url, st.config_path, allow_apply, stale_after, apply_interval)
    app.engine()  # open (and upgrade) the store now: a bad --db fails here, with one line
    mcp_server.warm_up()
    server = mcp_server.build(app)
    if listen is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=port)
