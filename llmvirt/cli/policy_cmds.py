"""``llmvirt policy list|show|defaults|promote|rollback``: policy versions, which one is active, and what runs
for each goal by default and why."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from llmvirt.cli.common import lazy, literal, new_app, out, state
from llmvirt.errors import UsageError

if TYPE_CHECKING:
    import llmvirt.store.policy_versions as versions
else:  # imported when a command runs
    versions = lazy("llmvirt.store.policy_versions")

policy_app = new_app("Policy versions: list, show, promote (only when better), roll back.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@policy_app.command("list")
def list_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every version, the active one marked."""
    rows = versions.list_versions(state(ctx).engine())
    if as_json:
        out.print_json(json.dumps({"versions": rows}))
        return
    t = Table(title="Policy versions")
    for col in ("", "name", "source", "parent", "created", "path"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*literal("*" if r["active"] else "", r["name"], r["source"], r["parent"] or "", r["created_at"],
                           r["path"]))
    out.print(t)


@policy_app.command("show")
def show_cmd(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Version, e.g. v1.")],
             as_json: JsonOpt = False) -> None:
    """One version with its evaluation and its checkpoint's metadata."""
    v = versions.get(state(ctx).engine(), name)
    meta_path = Path(v["path"]) / "policy.json"
    v["checkpoint"] = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if as_json:
        out.print_json(json.dumps(v))
        return
    out.print(json.dumps(v, indent=2), markup=False)


@policy_app.command("defaults")
def defaults_cmd(policy: Annotated[str | None, typer.Option("--policy", help="A policy directory or a name under "
                                                         "policies/ (default: the shipped one).")] = None,
                 as_json: JsonOpt = False) -> None:
    """What runs for each goal when no --policy is given, and why: a tuned baseline where no learned strategy beat
    it (the policy's strategies.json), else the policy's own learned part."""
    from llmvirt.paths import policy_dir
    from llmvirt.strategies.goal_defaults import goal_strategy

    if not policy_dir(policy).is_dir():
        raise UsageError(f"no policy {policy!r}: give a policy directory or a name under policies/")
    rows = [dict(zip(("goal", "strategy", "why"), (goal, *goal_strategy(policy, goal)), strict=True))
            for goal in ("balance", "consolidate", "place")]
    if as_json:
        out.print_json(json.dumps({"defaults": rows}))
        return
    t = Table(title="What runs by default, and why")
    for col in ("goal", "strategy", "why"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*literal(r["goal"], r["strategy"], r["why"]))
    out.print(t)


@policy_app.command("promote")
def promote_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Version to make active.")],
    trace: Annotated[list[Path] | None, typer.Option("--trace", help="Benchmark trace (Bitbrains or generic; "
                                                     "its held-out VMs are used). Repeatable.")] = None,
    steps: Annotated[int | None, typer.Option(help="Evaluate on the first N steps of each trace.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Promote even if it evaluates worse.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate the version against the active one (benchmark traces and the store's replayed history);
    make it active only if it is no worse. Exit 1 when refused."""
    from llmvirt.learn.evaluate import compare

    engine = state(ctx).engine()
    cand, cur = versions.get(engine, name), versions.active(engine)
    if cand["name"] == cur["name"]:
        raise UsageError(f"{name} is already active")
    if steps is not None and steps < 2:
        raise UsageError("--steps must be at least 2")
    traces = _eval_traces(ctx, list(trace or []))
    if not traces and not force:
        raise UsageError("nothing to evaluate on: give --trace, or scan at least twice (or use --force)")
    ok, cand_r, cur_r = compare(Path(cand["path"]), Path(cur["path"]), traces, steps) if traces else (True, {}, {})
    doc = {"candidate": name, "active": cur["name"], "candidate_rewards": cand_r, "active_rewards": cur_r,
           "better_or_equal": ok, "promoted": ok or force}
    if ok or force:
        versions.activate(engine, name, {"evaluation": doc})
    if as_json:
        out.print_json(json.dumps(doc))
    elif ok or force:
        out.print(f"{name} is active (reward {cand_r.get('total', 'not evaluated')} vs {cur['name']} "
                  f"{cur_r.get('total', 'not evaluated')}{', forced' if not ok else ''})", markup=False)
    else:
        out.print(f"refused: {name} evaluates worse than {cur['name']} (reward {cand_r['total']} < "
                  f"{cur_r['total']}); --force to promote anyway", markup=False)
    if not (ok or force):
        raise typer.Exit(1)


@policy_app.command("rollback")
def rollback_cmd(ctx: typer.Context) -> None:
    """Make the previously active version active again."""
    out.print(f"{versions.rollback(state(ctx).engine())} is active")


def _eval_traces(ctx: typer.Context, paths: list[Path]) -> list[tuple[str, object]]:
    from llmvirt.sim import traces
    from llmvirt.sim.split import split
    from llmvirt.sim.store_history import scan_interval, store_trace

    out_traces: list[tuple[str, object]] = []
    for p in paths:
        tr = traces.load_usage(p)
        out_traces.append((f"{p.name} (held out)", tr.select(split(tr.names)[1])))
    engine = state(ctx).engine()
    try:
        out_traces.append(("store", store_trace(engine, scan_interval(engine))))
    except UsageError:
        pass  # no history yet: benchmark traces only
    return out_traces
