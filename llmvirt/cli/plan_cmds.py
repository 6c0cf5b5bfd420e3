"""``llmvirt place`` and ``llmvirt rebalance`` (dry run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llmvirt import config
from llmvirt.cli.common import out, parse_size_mib, state
from llmvirt.errors import EXIT_ERROR, UsageError, translate_libvirt
from llmvirt.policy import decide
from llmvirt.policy.constraints import Request
from llmvirt.store import snapshots

PolicyOpt = Annotated[str | None, typer.Option(help="Policy: a name under policies/, a checkpoint directory, or "
                                               "baseline:best-fit|least-loaded|first-fit (default: policies/default).")]


def _cluster(ctx: typer.Context):  # noqa: ANN202
    cluster = snapshots.latest_cluster(state(ctx).engine())
    if not any(h.cpus for h in cluster.hosts):
        raise UsageError("no scanned hosts: run `llmvirt hosts add` and `llmvirt scan` first")
    cluster.hosts = [h for h in cluster.hosts if h.cpus]
    return cluster


def place(
    ctx: typer.Context,
    vcpus: Annotated[int, typer.Option(help="vCPUs of the new VM.")],
    memory: Annotated[str, typer.Option(help="Memory of the new VM, e.g. 4G.")],
    gpu: Annotated[int, typer.Option(help="Whole GPUs by PCI passthrough.")] = 0,
    vgpu: Annotated[str | None, typer.Option(help="vGPU (mdev) type, e.g. nvidia-1155.")] = None,
    anti_affinity: Annotated[str | None, typer.Option(help="Anti-affinity group (config [anti_affinity]).")] = None,
    expected_cpu: Annotated[float, typer.Option(help="Expected CPU use, fraction of its vCPUs.")] = 0.5,
    policy: PolicyOpt = None,
    define: Annotated[Path | None, typer.Option(help="Domain XML to define and start on the chosen host.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rank the hosts that can take a new VM, say why the others cannot, optionally create it there."""
    if vcpus < 1 or gpu < 0 or not 0 <= expected_cpu <= 1:
        raise UsageError("--vcpus must be at least 1, --gpu at least 0, --expected-cpu within 0..1")
    if gpu and vgpu:
        raise UsageError("use --gpu or --vgpu, not both")
    st = state(ctx)
    req = Request(vcpus=vcpus, memory_mib=parse_size_mib(memory), gpus=gpu, vgpu_type=vgpu,
                  anti_affinity=anti_affinity)
    result = decide.place(_cluster(ctx), req, decide.load_scorer(policy), config.load_limits(st.config_path),
                          config.load_groups(st.config_path), expected_cpu)
    if as_json:
        out.print_json(json.dumps(result.as_json()))
    else:
        t = Table(title=f"Placement ({result.policy})")
        for col in ("rank", "host", "score", "reasons"):
            t.add_column(col)
        for i, r in enumerate(result.ranked, 1):
            t.add_row(str(i), r["host"], f"{r['score']:.3f}", "; ".join(r["reasons"]))
        out.print(t)
        for h, c in result.excluded.items():
            out.print(f"excluded {h}: {c}")
    if not result.ranked:
        out.print("nothing fits: every host is excluded by a constraint (see above)", markup=False)
        raise typer.Exit(EXIT_ERROR)
    if define is not None:
        _define(ctx, result.ranked[0]["host"], define)


def _define(ctx: typer.Context, host_name: str, xml_path: Path) -> None:
    import libvirt

    from llmvirt.store import registry

    try:
        xml = xml_path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {xml_path}: {exc.strerror}") from None
    host = registry.get_host(state(ctx).engine(), host_name)
    with translate_libvirt(f"host {host_name}", connecting=True):
        conn = libvirt.open(host.uri)
    try:
        with translate_libvirt(f"defining {xml_path.name} on {host_name}"):
            dom = conn.defineXML(xml)
            dom.create()
        out.print(f"defined and started {dom.name()} on {host_name}")
    finally:
        conn.close()


def rebalance(
    ctx: typer.Context,
    goal: Annotated[str, typer.Option(help="balance (relieve hot hosts) or consolidate (empty cold ones).")]
    = "balance",
    max_migrations: Annotated[int, typer.Option(help="At most this many migrations in the plan.")] = 10,
    policy: PolicyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a rebalancing plan from the latest scan (a dry run: nothing is changed)."""
    if max_migrations < 0:
        raise UsageError("--max-migrations must be at least 0")
    st = state(ctx)
    plan = decide.rebalance(_cluster(ctx), decide.load_scorer(policy), config.load_limits(st.config_path),
                            config.load_groups(st.config_path), goal, max_migrations)
    if as_json:
        out.print_json(json.dumps(plan.as_json()))
        return
    t = Table(title=f"Rebalance plan, goal {plan.goal} ({plan.policy}), dry run")
    for col in ("#", "VM", "from", "to", "src CPU", "dst CPU", "power", "reason"):
        t.add_column(col)
    for i, m in enumerate(plan.moves, 1):
        t.add_row(str(i), m.vm, m.src, m.dst, f"{100 * m.src_cpu_before:.0f}→{100 * m.src_cpu_after:.0f} %",
                  f"{100 * m.dst_cpu_before:.0f}→{100 * m.dst_cpu_after:.0f} %", f"{m.power_delta_w:+.0f} W", m.reason)
    out.print(t)
    for vm, why in plan.unmovable.items():
        out.print(f"cannot move {vm}: {why}", markup=False)
    out.print(f"predicted: {plan.before} -> {plan.after}", markup=False)
