"""``llmvirt lab``: a lab of real libvirt/KVM hosts on this machine."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from llmvirt.cli.common import lazy, new_app, out, parse_size_mib, state

if TYPE_CHECKING:
    import llmvirt.lab.lab as lab
else:  # imported when a command runs
    lab = lazy("llmvirt.lab.lab")

app = new_app("Run several real libvirt hosts with real QEMU guests on this machine (needs root).")

DirOpt = Annotated[Path | None, typer.Option("--dir", help="Lab directory (default: XDG data dir/llmvirt/lab).")]


def _dir(path: Path | None) -> Path:
    return (path or lab.default_lab_dir()).resolve()


@app.command("up")
def up(
    ctx: typer.Context,
    hosts: Annotated[int, typer.Option("--hosts", help="Number of libvirt hosts.")] = 3,
    vms: Annotated[int, typer.Option("--vms", help="Number of guests, spread unevenly.")] = 6,
    dir: DirOpt = None,
) -> None:
    """Start the hosts (libvirtd + virtlogd each), register them as lab-1..lab-N, boot the guests."""
    lab.up(_dir(dir), hosts, vms, state(ctx).engine(), say=out.print)


@app.command("down")
def down(ctx: typer.Context, dir: DirOpt = None) -> None:
    """Destroy the guests, stop the lab's daemons by pid, remove its state (safe to repeat)."""
    n = lab.down(_dir(dir), state(ctx).engine(), say=out.print)
    out.print(f"lab down ({n} host(s) cleaned)")


@app.command("status")
def status(
    dir: DirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the lab's hosts, their daemons and where each guest runs."""
    st = lab.status(_dir(dir))
    if as_json:
        out.print_json(json.dumps(st))
        return
    if not st["up"]:
        out.print(f"no lab in {st['dir']}")
        return
    t = Table(title=f"Lab in {st['dir']} (guests as type='{st['virt_type']}')")
    for col in ("host", "libvirtd pid", "virtlogd pid", "alive", "guests"):
        t.add_column(col, overflow="fold")
    for h in st["hosts"]:
        t.add_row(h["name"], str(h["pids"]["libvirtd"]), str(h["pids"]["virtlogd"]),
                  "yes" if all(h["alive"].values()) else "NO", ", ".join(h["guests"]) or "-")
    out.print(t)


@app.command("load")
def load(
    vm: Annotated[str, typer.Argument(help="Guest name, e.g. vm-1.")],
    cpu: Annotated[int, typer.Option("--cpu", help="CPU load, percent of one vCPU (0-100).")] = 0,
    mem: Annotated[str, typer.Option("--mem", help="Memory the guest holds, e.g. 64M.")] = "0",
    dir: DirOpt = None,
) -> None:
    """Change a guest's CPU and memory load while it runs (through its serial console)."""
    host = lab.load(_dir(dir), vm, cpu, parse_size_mib(mem))
    out.print(f"{vm} on {host.name}: cpu {cpu}%, memory {parse_size_mib(mem)} MiB")


@app.command("reset")
def reset(ctx: typer.Context, dir: DirOpt = None) -> None:
    """Put the lab back as `up` left it: daemons alive, each guest once on the host it started on, balloons
    at their maximum, nothing pinned, the starting load, no lab host in maintenance."""
    from llmvirt.lab.reset import reset as do_reset

    changes = do_reset(_dir(dir), state(ctx).engine(), say=out.print)
    out.print(f"lab reset ({len(changes)} change(s))")
