"""``llmvirt scan`` and ``llmvirt status``."""

import json
from typing import TYPE_CHECKING, Annotated

import typer

from llmvirt.cli.common import err, lazy, out, state
from llmvirt.errors import EXIT_PARTIAL, UsageError

if TYPE_CHECKING:
    import llmvirt.status_view as status_view
    import llmvirt.store.latest_view as latest_view
    import llmvirt.store.registry as registry
else:  # imported when a command runs
    status_view = lazy("llmvirt.status_view")
    registry = lazy("llmvirt.store.registry")
    latest_view = lazy("llmvirt.store.latest_view")

HostOpt = Annotated[list[str] | None, typer.Option("--host", help="Only this host (repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (see docs/json-contracts.md).")]


def _selected(ctx: typer.Context, names: list[str] | None) -> list[registry.RegisteredHost]:
    hosts = registry.list_hosts(state(ctx).store())
    if not names:
        return hosts
    known = {h.name: h for h in hosts}
    missing = [n for n in names if n not in known]
    if missing:
        raise UsageError(f"unknown host(s): {', '.join(missing)} (see `llmvirt hosts list`)")
    return [known[n] for n in names]


def scan(
    ctx: typer.Context,
    host: HostOpt = None,
    as_json: JsonOpt = False,
    timeout: Annotated[float, typer.Option(help="Seconds each host may take.")] = 30.0,
    workers: Annotated[int, typer.Option(help="Hosts scanned at once.")] = 8,
) -> None:
    """Read every registered host through libvirt and store a snapshot of each.

    Exit status: 0 when every host was scanned, 3 when some failed (the others
    are stored), 2 on a usage error.
    """
    store = state(ctx).store()  # a SQLite store at the newest schema: no SQLAlchemy unless there is journal work
    targets = _selected(ctx, host)
    if not targets:
        raise UsageError("no hosts registered: add one with `llmvirt hosts add NAME URI`")
    from llmvirt.scan_service import Reach, scan_and_record  # reconciles first: a run killed mid-plan is set right

    done = scan_and_record(store, state(ctx).db_url, state(ctx).config_path,
                           [(h.name, h.uri, h.maintenance) for h in targets], Reach(workers, timeout))
    for note in done.reconciled:
        err.print(note, markup=False, soft_wrap=True)
    result, scan_id = done.result, done.scan_id
    if as_json:
        out.print_json(json.dumps({
            "scan_id": scan_id, "seconds": round(result.seconds, 3),
            "hosts": [{"name": h.name, "ok": True, "vms": len(h.vms), "notes": h.notes} for h in result.hosts]
            + [{"name": n, "ok": False, "error": r} for n, r in result.failures.items()],
        }))
    else:
        for h in result.hosts:
            notes = f" ({'; '.join(h.notes)})" if h.notes else ""
            out.print(f"scanned {h.name}: {len(h.vms)} VMs, {h.cpus} CPUs, {len(h.gpus)} GPUs{notes}")
        for name, reason in result.failures.items():
            err.print(f"failed {name}: {reason}", soft_wrap=True, markup=False)
        out.print(f"scan {scan_id}: {len(result.hosts)} ok, {len(result.failures)} failed "
                  f"in {result.seconds:.2f} s")
    if result.failures:
        raise typer.Exit(EXIT_PARTIAL)


def status(ctx: typer.Context, host: HostOpt = None, as_json: JsonOpt = False) -> None:
    """Show capacity, allocation and use per host and per VM from the latest scan."""
    names = [h.name for h in _selected(ctx, host)] if host else None
    views = latest_view.latest(state(ctx).store(), names)
    if as_json:
        out.print_json(json.dumps(status_view.status_json(views)))
    else:
        status_view.print_status(out, views)
