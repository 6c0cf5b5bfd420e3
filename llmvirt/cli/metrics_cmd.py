"""``llmvirt metrics``: the fleet's state for Prometheus, served or written for the textfile collector."""

import time
from pathlib import Path
from typing import Annotated

import typer

from llmvirt.cli.common import new_app, out, state
from llmvirt.errors import UsageError

app = new_app("Prometheus metrics from the store: hosts, VMs, scans, the journal, outcomes, the policy version.")


def parse_listen(listen: str) -> tuple[str, int]:
    """``ADDR:PORT`` (or ``:PORT`` for every address) as (address, port); one clear line when it is not."""
    addr, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {listen!r}: expected ADDRESS:PORT, e.g. 127.0.0.1:9177")
    return (addr.strip("[]") or "0.0.0.0"), int(port)


@app.command("serve")
def serve(
    ctx: typer.Context,
    listen: Annotated[str, typer.Option("--listen", help="ADDRESS:PORT to serve /metrics on.")] = "127.0.0.1:9177",
) -> None:
    """Serve /metrics until stopped; every scrape reads the store as it is then."""
    from llmvirt import prometheus_export

    addr, port = parse_listen(listen)
    engine = state(ctx).engine()
    try:
        prometheus_export.serve(engine, addr, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {addr}:{port}: {exc.strerror or exc}") from None
    out.print(f"serving llmvirt metrics on http://{addr}:{port}/metrics")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return


@app.command("write")
def write(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="File to write (e.g. in node_exporter's textfile directory).")],
) -> None:
    """Write the metrics once to PATH (whole, then renamed into place): for cron set-ups."""
    from llmvirt import prometheus_export

    if not path.parent.is_dir():
        raise UsageError(f"{path.parent} is not a directory")
    prometheus_export.write(state(ctx).engine(), path)
