"""``llmvirt place`` and ``llmvirt rebalance`` (dry run)."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from llmvirt import config
from llmvirt.cli.common import err, lazy, literal, out, parse_size_mib, state
from llmvirt.errors import EXIT_ERROR, UsageError, translate_libvirt

if TYPE_CHECKING:
    import llmvirt.store.snapshots as snapshots
    from llmvirt.model.action import Action
else:  # imported when a command runs
    snapshots = lazy("llmvirt.store.snapshots")

if TYPE_CHECKING:  # the policy package pulls in torch: imported when a command runs, not at start
    from llmvirt.policy import decide

PolicyOpt = Annotated[str | None, typer.Option(help="Policy: a name under policies/, a checkpoint directory, or "
                                               "baseline:best-fit|least-loaded|first-fit (default: the active "
                                               "version). rebalance also takes every bench strategy: "
                                               "baseline:watcher-wb, watcher-vwc, proxlb, thr-mmt-0.8, ...")]


def _policy(ctx: typer.Context, policy: str | None) -> tuple[str | None, str]:
    """(what to load, version prefix for plans): ``--policy`` as given, else the active version."""
    from llmvirt import plan_service

    return plan_service.policy_spec(state(ctx).engine(), policy)


def _refuse_rebalance_strategy(policy: str | None) -> None:
    """``place`` ranks hosts with a placement policy; a name only ``rebalance`` runs (the learned balance policy,
    a tuned baseline, CP-SAT, ...) gets one line that says so, before the store is opened."""
    from llmvirt.paths import policy_dir

    if not policy or policy.startswith("baseline:") or policy_dir(policy).exists():
        return
    from llmvirt.strategies import registry

    try:
        registry.resolve(policy, "balance")
    except UsageError:
        return  # not a strategy either: the policy loader says what is wrong with it
    raise UsageError(f"{policy!r} is a rebalance strategy (`llmvirt rebalance --policy {policy}`); place ranks "
                     "hosts with a placement policy: a name under policies/ (place-rl: the scorer trained on the "
                     "placement cost), a checkpoint directory, baseline:best-fit|least-loaded|first-fit or "
                     "baseline:weighted:C:V:M[:P]")


SnapshotOpt = Annotated[Path | None, typer.Option("--snapshot", help="Plan from this file (the `llmvirt status "
                                                  "--json` document, edited or from elsewhere) instead of the "
                                                  "store: what-if planning; nothing is applied.")]


def _cluster(ctx: typer.Context, snapshot: Path | None = None):  # noqa: ANN202
    if snapshot is not None:
        from llmvirt.observe import snapshot_file

        return snapshot_file.load(snapshot)
    from llmvirt import plan_service

    return plan_service.scanned_cluster(state(ctx).engine())


def place(
    ctx: typer.Context,
    vcpus: Annotated[int, typer.Option(help="vCPUs of the new VM.")],
    memory: Annotated[str, typer.Option(help="Memory of the new VM, e.g. 4G.")],
    gpu: Annotated[int, typer.Option(help="Whole GPUs by PCI passthrough.")] = 0,
    vgpu: Annotated[str | None, typer.Option(help="vGPU (mdev) type, e.g. nvidia-1155.")] = None,
    anti_affinity: Annotated[str | None, typer.Option(help="Anti-affinity group (config [anti_affinity]).")] = None,
    expected_cpu: Annotated[float | None, typer.Option(help="Expected CPU use, fraction of its vCPUs (default: "
                                                       "what a trained policy was trained with, else 0.5).")] = None,
    policy: PolicyOpt = None,
    define: Annotated[Path | None, typer.Option(help="Domain XML to define and start on the chosen host.")] = None,
    snapshot: SnapshotOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rank the hosts that can take a new VM, say why the others cannot, optionally create it there."""
    if vcpus < 1 or gpu < 0 or not 0 <= (0.5 if expected_cpu is None else expected_cpu) <= 1:
        raise UsageError("--vcpus must be at least 1, --gpu at least 0, --expected-cpu within 0..1")
    if gpu and vgpu:
        raise UsageError("use --gpu or --vgpu, not both")
    if parse_size_mib(memory) < 1:
        raise UsageError(f"--memory {memory}: a VM needs some memory")
    if snapshot is not None and define is not None:
        raise UsageError("--define creates the VM on a real host: not with --snapshot")
    _refuse_rebalance_strategy(policy)
    from llmvirt.policy import decide
    from llmvirt.policy.constraints import Request

    st = state(ctx)
    from llmvirt.plan_service import placement_history, placement_scorer

    spec, _ = (policy, "") if snapshot is not None else _policy(ctx, policy)
    scorer, expected_cpu = placement_scorer(spec, policy is not None, expected_cpu)
    req = Request(vcpus=vcpus, memory_mib=parse_size_mib(memory), gpus=gpu, vgpu_type=vgpu,
                  anti_affinity=anti_affinity, expected_cpu=expected_cpu)
    history = placement_history(None if snapshot is not None else st.engine(), scorer)
    rules = decide.Context(config.load_limits(st.config_path), config.load_groups(st.config_path), history=history)
    result = decide.place(_cluster(ctx, snapshot), req, scorer, rules)
    defined = None
    if define is not None and result.ranked:  # --json stays one JSON document: the creation goes into it
        defined = {"vm": _define(ctx, result.ranked[0]["host"], define), "host": result.ranked[0]["host"]}
    if as_json:
        out.print_json(json.dumps({**result.as_json(), **({"defined": defined} if defined else {})}))
    else:
        t = Table(title=literal(f"Placement ({result.policy})")[0])
        for col in ("rank", "host", "score", "reasons"):
            t.add_column(col, overflow="fold")
        for i, r in enumerate(result.ranked, 1):
            t.add_row(*literal(i, r["host"], f"{r['score']:.3f}", "; ".join(r["reasons"])))
        out.print(t)
        for h, c in result.excluded.items():
            out.print(f"excluded {h}: {c}")
        if defined:
            out.print(f"defined and started {defined['vm']} on {defined['host']}", markup=False)
    if not result.ranked:
        err.print("nothing fits: every host is excluded by a constraint (see above)", markup=False)
        raise typer.Exit(EXIT_ERROR)


def _define(ctx: typer.Context, host_name: str, xml_path: Path) -> str:
    """Define and start the domain XML on the chosen host; return the domain's name."""
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
        return dom.name()
    finally:
        conn.close()


def rebalance(
    ctx: typer.Context,
    goal: Annotated[str, typer.Option(help="balance (relieve hot hosts) or consolidate (empty cold ones).")]
    = "balance",
    max_migrations: Annotated[int, typer.Option(help="At most this many migrations in the plan.")] = 10,
    policy: PolicyOpt = None,
    apply: Annotated[bool, typer.Option("--apply", help="Execute the plan (without it: print only).")] = False,
    no_migrate: Annotated[bool, typer.Option("--no-migrate", help="Plan no migrations.")] = False,
    only: Annotated[str | None, typer.Option(help="Only pin (vCPU pinning) or balloon, decided by the policy's "
                                             "pin/balloon head, or by a field baseline: --policy baseline:nova[:F] "
                                             "(pin), baseline:mom or baseline:proxmox (balloon), baseline:rules "
                                             "(one-to-one NUMA pinning, MOM's balloon rules).")] = None,
    snapshot: SnapshotOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Plan from the latest scan; print it, or with --apply execute it with guardrails and a journal.

    Exit status with --apply: 0 every action done or skipped, 3 some failed, 5 another apply is running.
    """
    if max_migrations < 0:
        raise UsageError("--max-migrations must be at least 0")
    if only not in (None, "pin", "balloon"):
        raise UsageError("--only must be pin or balloon")
    if goal not in ("balance", "consolidate"):
        raise UsageError(f"unknown goal {goal!r}: use balance or consolidate")
    if snapshot is not None and (apply or only):
        raise UsageError("--snapshot plans from a file: not with --apply or --only")
    from llmvirt.policy import decide

    st = state(ctx)
    cluster = _cluster(ctx, snapshot)
    if only:
        _tuning(ctx, cluster, only, policy, apply, as_json)
        return
    if no_migrate:
        plan = decide.Plan(goal=goal, policy="rules", before={}, after={})
    else:
        from llmvirt import plan_service

        plan = plan_service.rebalance_plan(None if snapshot is not None else st.engine(), st.config_path, cluster,
                                           goal, policy, max_migrations)
    if apply:
        _apply(ctx, plan, as_json)
        return
    if as_json:
        out.print_json(json.dumps(plan.as_json()))
        return
    t = Table(title=literal(f"Rebalance plan, goal {plan.goal} ({plan.policy}), dry run")[0])
    for col in ("#", "VM", "from", "to", "src CPU", "dst CPU", "power", "reason"):
        t.add_column(col, overflow="fold")
    for i, m in enumerate(plan.moves, 1):
        e = m.effect
        t.add_row(*literal(i, m.vm, m.src, m.dst or "",
                           f"{100 * e['src_cpu_before']:.0f}→{100 * e['src_cpu_after']:.0f} %",
                           f"{100 * e['dst_cpu_before']:.0f}→{100 * e['dst_cpu_after']:.0f} %",
                           _watts(e["power_delta_w"]), m.reason))
    out.print(t)
    for vm, why in plan.unmovable.items():
        out.print(f"cannot move {vm}: {why}", markup=False)
    out.print(predicted_sentence(plan.before, plan.after), markup=False)


def _watts(delta: float) -> str:
    """A power change for people: no "-0 W"."""
    rounded = round(delta)
    return "±0 W" if rounded == 0 else f"{rounded:+d} W"


def predicted_sentence(before: dict[str, float], after: dict[str, float]) -> str:
    """The plan's predicted effect as a sentence, one number per quantity before and after."""
    if not before or not after:
        return "predicted: no change"
    parts = [f"overloaded hosts {before['overloaded_hosts']:.0f} → {after['overloaded_hosts']:.0f}",
             f"hot hosts {before['hot_hosts']:.0f} → {after['hot_hosts']:.0f}",
             f"load spread {100 * before['imbalance']:.0f} → {100 * after['imbalance']:.0f} points",
             f"power {before['power_w']:.0f} → {after['power_w']:.0f} W"]
    return "predicted: " + ", ".join(parts)


def _tuning(ctx: typer.Context, cluster, only: str, policy: str | None,  # noqa: ANN001
            apply: bool, as_json: bool) -> None:
    from llmvirt import plan_service
    from llmvirt.policy import decide

    st = state(ctx)
    actions, held, label = plan_service.tuning_actions(st.engine(), cluster, only, policy,
                                                       config.load_limits(st.config_path))
    plan = decide.Plan(goal=only, policy=label, before={}, after={})
    if apply:
        _execute(ctx, plan, actions, held, as_json)
        return
    if as_json:
        out.print_json(json.dumps({"goal": only, "policy": label, "actions": [a.as_json() for a in actions],
                                   "left_alone": held}))
        return
    if not actions:
        out.print(f"{only} plan ({label}): no change to make", markup=False)
    t = Table(title=literal(f"{only} plan ({label}), dry run")[0])
    for col in ("#", "VM", "host", "change", "why"):
        t.add_column(col, overflow="fold")
    for i, a in enumerate(actions, 1):
        change = f"balloon → {a.target_mib} MiB" if a.kind == "balloon" else \
            "; ".join(f"vCPU {k} → {_cpus(list(v))}" for k, v in a.pins.items())
        t.add_row(*literal(i, a.vm, a.src, change, a.reason))
    if actions:
        out.print(t)
    for vm, why in held.items():
        out.print(f"not acting on {vm}: {why}", markup=False)


def _cpus(cpus: list[int]) -> str:
    """CPU list as ranges: 0-3,8."""
    parts, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            parts.append(f"{start}-{c}" if c != start else str(c))
            start = None
    return ",".join(parts)


def _apply(ctx: typer.Context, plan: "decide.Plan", as_json: bool) -> None:
    from llmvirt import plan_service

    st = state(ctx)
    actions, held = plan_service.migrate_actions(st.engine(), st.config_path, plan)
    _execute(ctx, plan, actions, held, as_json)


def _execute(ctx: typer.Context, plan: "decide.Plan", actions: "list[Action]", held: dict[str, str],
             as_json: bool) -> None:
    from rich.progress import BarColumn, Progress, TextColumn

    from llmvirt.act import executor
    from llmvirt.errors import EXIT_PARTIAL
    from llmvirt.store import journal

    st = state(ctx)
    human = err if as_json else out  # with --json, stdout holds the JSON document alone

    def say(line: str) -> None:
        human.print(line, markup=False)

    for vm, why in held.items():
        say(f"not acting on {vm}: {why}")
    if not actions:
        for note in executor.reconcile_if_idle(st.engine(), st.db_url):
            say(note)
        say("nothing to apply")
        if as_json:
            out.print_json(json.dumps({"plan_id": None, "outcomes": {"done": 0, "skipped": 0, "failed": 0}}))
        return
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                        disable=as_json or not out.is_terminal)

    def factory(label: str):  # noqa: ANN202
        task = progress.add_task(label, total=1.0)
        return lambda frac: progress.update(task, completed=frac)

    with progress:
        plan_id, counts = executor.apply(st.engine(), st.db_url,
                                         journal.NewPlan(plan.goal, plan.policy, plan.as_json(), actions),
                                         config.load_guardrails(st.config_path),
                                         say=say,
                                         hooks=executor.Hooks(progress_factory=factory))
    if as_json:
        out.print_json(json.dumps({"plan_id": plan_id, "outcomes": counts}))
    else:
        out.print(f"plan {plan_id}: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
    if counts["failed"]:
        raise typer.Exit(EXIT_PARTIAL)
