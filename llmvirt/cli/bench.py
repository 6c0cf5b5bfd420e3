"""``llmvirt bench``: compare policies side by side on identical trace input."""

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from llmvirt import bench as defaults
from llmvirt.cli.common import out, state
from llmvirt.errors import UsageError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from llmvirt.bench import tune as tuner
    from llmvirt.sim import episodes, traces


class Scenario(StrEnum):
    """Benchmark scenarios."""

    cloudsim = "cloudsim"
    balance = "balance"
    memory = "memory"
    pinning = "pinning"
    fleets = "fleets"
    scans = "scans"
    placement = "placement"


DEFAULTS = {Scenario.cloudsim: defaults.DEFAULT_CLOUDSIM_POLICIES, Scenario.balance: defaults.DEFAULT_BALANCE_POLICIES,
            Scenario.memory: defaults.DEFAULT_MEMORY_POLICIES, Scenario.pinning: defaults.DEFAULT_PINNING_POLICIES,
            Scenario.fleets: defaults.DEFAULT_FLEET_POLICIES, Scenario.placement: defaults.DEFAULT_PLACEMENT_POLICIES,
            Scenario.scans: defaults.DEFAULT_SCAN_POLICIES}
FLEET_COLUMNS = {
    Scenario.balance: ("host_overload_h", "cpu_overload_h", "mem_overload_h", "migrations", "gib_migrated",
                       "cpu_spread_avg"),
    Scenario.memory: ("memory_cost", "reclaimed_gib_avg", "needed_reclaimed_gib_avg", "guest_pressure_h",
                      "mem_overload_h"),
    Scenario.pinning: ("weighted_slowdown", "p95_slowdown", "vms_per_host", "repins"),
}


HEADERS = {"host_overload_h": "overload h", "cpu_overload_h": "CPU over h", "mem_overload_h": "mem over h",
           "gib_migrated": "GiB moved", "cpu_spread_avg": "CPU spread", "reclaimed_gib_avg": "reclaimed GiB",
           "needed_reclaimed_gib_avg": "needed GiB", "memory_cost": "cost",
           "guest_pressure_h": "pressure h", "weighted_slowdown": "weighted slowdown",
           "p95_slowdown": "p95 slowdown", "vms_per_host": "VMs/host", "repins": "re-pins"}


def _check(scenario: Scenario, names: list[str]) -> None:
    if scenario is Scenario.placement:
        return  # the scorers load (and say what is wrong with a name) when the scenario runs
    if scenario in (Scenario.fleets, Scenario.scans):
        from llmvirt.bench import fleets, scans

        (fleets if scenario is Scenario.fleets else scans).check(names)
        return
    from llmvirt.bench import run as simbench

    maker = {Scenario.cloudsim: simbench.make_policy, Scenario.balance: simbench.make_balancer,
             Scenario.memory: simbench.make_balloon, Scenario.pinning: simbench.make_pin_policy}[scenario]
    for name in names:
        try:
            maker(name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def _usage_traces(ctx: typer.Context, paths: list[Path], from_store: bool) -> list[tuple[str, "traces.UsageTrace"]]:
    from llmvirt.sim import traces

    out_traces = [(p.name, traces.load_usage(p)) for p in paths]
    if from_store:
        from llmvirt.sim.store_history import store_trace

        out_traces.append(("store", store_trace(state(ctx).engine())))
    return out_traces


def bench(
    ctx: typer.Context,
    scenario: Annotated[Scenario, typer.Option(help="cloudsim (consolidation in CloudSim's data centre), balance, "
                                               "memory or pinning (Bitbrains); fleets: the hard balance scenario the "
                                               "learned policy is judged on, on any trace; scans: the same fleets, "
                                               "every policy deciding on what scans show (how the balance default "
                                               "was judged); placement: arriving VMs placed once by place's "
                                               "scorers.")] = Scenario.cloudsim,
    trace: Annotated[list[Path] | None, typer.Option("--trace", help="Trace (repeatable): a PlanetLab day "
                                                     "directory, a Bitbrains directory or .tar.gz, or a generic "
                                                     ".csv/.parquet. For cloudsim a usage trace gives each of its "
                                                     "whole days on CloudSim's hosts.")] = None,
    from_store: Annotated[bool, typer.Option("--from-store", help="Also replay the VM history in llmvirt's "
                                             "store (balance and memory).")] = False,
    policies: Annotated[str | None, typer.Option(help="Comma-separated policies (default: every baseline of the "
                                                 "scenario).")] = None,
    held_out: Annotated[bool, typer.Option("--held-out", help="Only the VMs the learned policy was not trained "
                                           "on (the 40 % hash split; for cloudsim, a usage trace's).")] = False,
    seed: Annotated[int, typer.Option(help="Seed for random selection (rs); the first fleet seed (fleets, "
                                      "scans, placement).")] = 0,
    seeds: Annotated[int, typer.Option(help="How many seeds of fleets to draw, from --seed on (fleets, "
                                       "scans, placement).")] = 3,
    n_fleets: Annotated[int, typer.Option("--fleets", help="Fleets drawn per seed (fleets, scans, placement).")] = 8,
    mixed: Annotated[bool, typer.Option("--mixed", help="Give each host its own size, with memory binding "
                                        "(fleets, scans, placement).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write per-step curves and a summary chart to this PNG.")]
    = None,
) -> None:
    """Run every policy on every trace and print the results side by side, with the scenario's bound."""
    if not trace and not from_store:
        raise UsageError("give at least one --trace (or --from-store)")
    if seeds < 1 or n_fleets < 1:
        raise UsageError("--seeds and --fleets must be at least 1")
    names = [p.strip() for p in (policies or ",".join(DEFAULTS[scenario])).split(",") if p.strip()]
    _check(scenario, names)
    if scenario in (Scenario.fleets, Scenario.scans, Scenario.placement):
        from llmvirt.cli import bench_fleets

        show = {Scenario.fleets: bench_fleets.show, Scenario.scans: bench_fleets.show_scans,
                Scenario.placement: bench_fleets.show_placement}[scenario]
        show(_usage_traces(ctx, list(trace or []), from_store), names, held_out,
             (list(range(seed, seed + seeds)), n_fleets, mixed), as_json)
        return
    if scenario is Scenario.cloudsim:
        if from_store:
            raise UsageError("--from-store replays CPU and memory history: use --scenario balance or memory")
        _cloudsim(list(trace or []), names, (seed, "held" if held_out else "all"), as_json, plot)
        return
    _replay(_usage_traces(ctx, list(trace or []), from_store), scenario, names, held_out, (as_json, plot))


def _replay(loaded: list[tuple[str, "traces.UsageTrace"]], scenario: Scenario, names: list[str], held_out: bool,
            output: tuple[bool, Path | None]) -> None:
    """The balance, memory and pinning scenarios: each trace replayed under every policy, printed."""
    from llmvirt.bench import run as simbench

    as_json, plot = output
    results, bounds = [], {}
    for label, tr in loaded:
        if held_out:
            from llmvirt.sim.split import split

            tr, label = tr.select(split(tr.names)[1]), f"{label} (held out)"
        r, b = simbench.run_fleet(scenario.value, tr, label, names)
        results += r
        bounds.update(b)
    if plot is not None:
        simbench.plot_fleet(results, scenario.value, plot)
    if as_json:
        out.print_json(json.dumps({"scenario": scenario.value, "bound": bounds,
                                   "runs": [{"trace": r.trace, "policy": r.policy, **r.summary,
                                             "seconds": round(r.seconds, 3)} for r in results]}))
        return
    t = Table(title=f"{scenario.value}: policies side by side")
    cols = FLEET_COLUMNS[scenario]
    for col in ("trace", "policy", *cols, "s"):
        t.add_column(HEADERS.get(col, col), overflow="fold")
    for r in results:
        t.add_row(r.trace, r.policy, *(f"{r.summary[c]:.2f}" for c in cols), f"{r.seconds:.1f}")
    out.print(t)
    for label, b in bounds.items():
        out.print(f"bound for {label}: " + ", ".join(f"{k} {'none' if v is None else f'{v:.2f}'}"
                                                     for k, v in b.items()))


def _cloudsim(trace: list[Path], names: list[str], run: tuple[int, str], as_json: bool, plot: Path | None) -> None:
    """Every policy on every consolidation day of the traces (``run``: the seed, and the side of the VM split a usage
    trace's days take), printed."""
    from llmvirt.bench import run as simbench
    from llmvirt.model.score import COST_WEIGHTS, consolidation_cost

    results, bounds = simbench.run_cloudsim(trace, names, *run)
    if plot is not None:
        simbench.plot(results, bounds, plot)
    if as_json:
        out.print_json(json.dumps(simbench.results_json(results, bounds)))
        return
    t = Table(title="cloudsim: policies side by side")
    for col in ("trace", "policy", "cost", "energy kWh", "migrations", "unmet %", "overload h", "SLATAH %", "PDM %",
                "SLAV %", "ESV", "s"):
        t.add_column(col, justify="right" if col not in ("trace", "policy") else "left", overflow="fold")
    for r in results:
        s = r.summary
        t.add_row(r.trace, r.policy, f"{consolidation_cost(s):.2f}", f"{s['energy_kwh']:.2f}",
                  str(int(s["migrations"])), f"{s['unmet_demand_pct']:.4f}", f"{s['overload_host_h']:.2f}",
                  f"{s['slatah_pct']:.2f}", f"{s['pdm_pct']:.3f}", f"{s['slav_pct']:.5f}", f"{s['esv']:.5f}",
                  f"{r.seconds:.1f}")
    for tr, e in bounds.items():
        t.add_row(tr, "[italic]lower bound[/italic]", "-", f"{e:.2f}", *["-"] * 8)
    weights = " + ".join(f"{w:g} x {k}" for k, w in COST_WEIGHTS.items())
    out.print(f"cost ({weights}), unmet % and overload h are the honest metrics; SLATAH, PDM, SLAV and ESV are "
              "CloudSim's, which count a migration's destination as in violation (docs/metrics.md)", markup=False)
    out.print(t)


def tune(
    ctx: typer.Context,
    trace: Annotated[list[Path] | None, typer.Option("--trace", help="PlanetLab day directory of the training split "
                                                     "(repeatable). Never a day you report held-back results on.")]
    = None,
    family: Annotated[list[str] | None, typer.Option("--family", help="Baseline family (repeatable; default: all): "
                                                     "thr-mmt, iqr-mmt, mad-mmt, lr-mmt, gated-thr-mmt, "
                                                     "gated-wake-thr-mmt.")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="Where to write the tuned parameters (default: "
                                                  "policies/tuned.json; by --objective tail or relative-tail, "
                                                  "tuned_tail.json or tuned_relative_tail.json; --fleet F adds "
                                                  "F to the name, e.g. tuned_ibm.json; with --from-store, "
                                                  "nowhere unless given).")] = None,
    workers: Annotated[int, typer.Option(help="Simulations at once.")] = 2,
    fleet: Annotated[str, typer.Option(help="Host models of the simulated data centre: cloudsim (CloudSim's HP "
                                       "pair), ibm (CloudSim's older IBM pair) or mixed (2-, 4- and 12-core "
                                       "hosts), as much CPU per VM.")]
    = "cloudsim",
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the sweep's Pareto frontier (energy against "
                                              "unmet demand and against GiB moved) to this PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    usage_trace: Annotated[list[Path] | None, typer.Option(
        "--usage-trace", help="Also a Bitbrains or generic-format trace (repeatable): every day of its training VMs "
        "(the split's), each day in one of the two fleet shapes in turn.")] = None,
    objective: Annotated[str, typer.Option(help="What makes a point best: mean (its mean cost over the days), "
                                           "tail (per trace family the mean cost plus the mean of the costliest "
                                           "10 % of days, summed over the families) or relative-tail (each "
                                           "family's tail over CloudSim's untuned thr-mmt-0.8's, summed).")]
    = "mean",
    migration_slowdown: Annotated[float, typer.Option(
        "--migration-slowdown", help="Simulate live migrations this many times slower than the simulator's "
        "(a 1/X share of its bandwidth), as your network moves them: 10 for a tenth. Tune for your own migrations "
        "before relying on a tuned point.")] = 1.0,
    from_store: Annotated[bool, typer.Option(
        "--from-store", help="Tune on your own VMs' history in llmvirt's store, on your own hosts, instead of "
        "traces (at least a day of scans): every whole day but the latest, which is held back to check the tuned "
        "point against the default.")] = False,
    days: Annotated[int | None, typer.Option(
        "--days", help="With --from-store: read only the latest N days of the store's history (default: all of "
        "it), the latest --hold-back of them held back and the rest tuned on.")] = None,
    hold_back: Annotated[int, typer.Option(
        "--hold-back", help="With --from-store: how many of the latest whole days to hold back and check the tuned "
        "point on (their mean cost); the days before them are tuned on. More days make the check steadier.")] = 1,
) -> None:
    """Tune the cloudsim baselines by grid search on training days, by the honest cost; `tuned:FAMILY` runs them."""
    from llmvirt.bench import tune as tuner
    from llmvirt.strategies.tuned import tuned_fleet_file

    if workers < 1:
        raise UsageError("--workers must be at least 1")
    setting = tuner.Setting(fleet, objective, migration_slowdown)
    _refuse_mixed_sources(from_store, bool(trace), bool(usage_trace or fleet != "cloudsim"),
                          days is not None or hold_back != 1)
    if from_store:
        _tune_store((state(ctx).engine(), days, hold_back), list(family or []), (workers, setting),
                    (out_path, plot, as_json))
        return
    doc = _tuned(_tune_days(trace, usage_trace or []), list(family or []), (workers, setting), as_json)
    _show_tuning(doc, out_path or tuned_fleet_file(fleet, objective), plot, as_json)


def _refuse_mixed_sources(from_store: bool, trace: bool, other_trace_options: bool, store_split: bool) -> None:
    """One line for ``tune`` options that mix the store's history with traces (``--trace``; ``--usage-trace`` or
    ``--fleet``), split a history that is not there, or name no days at all."""
    if from_store and (trace or other_trace_options):
        raise UsageError("--from-store tunes on the store's history and your own hosts alone: drop --trace, "
                         "--usage-trace and --fleet")
    if not from_store and store_split:
        raise UsageError("--days and --hold-back split --from-store's history: give them with --from-store")
    if not from_store and not trace:
        raise UsageError("give at least one --trace (or --from-store)")


def _tuned(days: "list[Path | episodes.UsageDay]", families: list[str], run: "tuple[int, tuner.Setting]",
           quiet: bool) -> dict:
    """The tuning's document, with a progress bar on a terminal; one line and exit 2 for a bad option."""
    from rich.progress import Progress

    from llmvirt.bench import tune as tuner

    with Progress(disable=quiet or not out.is_terminal) as bar:
        task = bar.add_task("tuning", total=None)
        try:
            return tuner.tune_cloudsim(days, families or None, run[0],
                                       lambda i, n: bar.update(task, completed=i, total=n), run[1])
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def _tune_store(source: "tuple[Engine, int | None, int]", families: list[str], run: "tuple[int, tuner.Setting]",
                output: tuple[Path | None, Path | None, bool]) -> None:
    """``tune --from-store``: tune on the store's whole days (of the latest ``source[1]``, when given) but the
    latest ``source[2]``, then check the result on those."""
    import tempfile

    from llmvirt.bench import store_tuning

    with tempfile.TemporaryDirectory() as tmp:
        train, held = store_tuning.history_days(source[0], Path(tmp), source[1], source[2])
        doc = _tuned(train, families, run, output[2])
        doc["source"] = "store"
        if held:
            doc["check"] = store_tuning.check(doc, held, run[1], run[0])
    _show_tuning(doc, output[0], output[1], output[2])
    if not output[2]:
        _print_check(doc)


def _show_tuning(doc: dict, target: Path | None, plot: Path | None, as_json: bool) -> None:
    """Write the document to ``target`` (if any) and the frontier to ``plot`` (if any); print it."""
    if target is not None:
        target.write_text(json.dumps(doc, indent=1) + "\n")
    if plot is not None:
        from llmvirt.bench import frontier

        frontier.plot(doc, plot)
    if as_json:
        out.print_json(json.dumps(doc))
        return
    _print_tuned(doc)
    if target is not None:
        out.print(f"written to {target}", markup=False)


def _print_check(doc: dict) -> None:
    """``tune --from-store``'s check on the held-back days, or why there is none."""
    from llmvirt.bench import store_tuning

    check = doc.get("check")
    if check is None:
        out.print("one day of history: no day held back to check the tuned point on; tune again after another "
                  "day of scans", markup=False)
        return
    t = Table(title=f"check on {store_tuning.held_days(check)}, not tuned on ({', '.join(check['days'])}; "
                    "mean per day)")
    for col in ("strategy", "cost", "energy kWh", "unmet core-h", "GiB moved"):
        t.add_column(col, overflow="fold")
    for r in check["runs"]:
        label = r["name"] + (" (default)" if r["name"] == check["default"] else "") + \
            (" (tuned)" if r["name"] == check["recommended"] else "")
        t.add_row(label, f"{r['cost']:.2f}", f"{r['energy_kwh']:.2f}", f"{r['unmet_core_h']:.2f}",
                  f"{r['gib_migrated']:.0f}")
    out.print(t)
    out.print(store_tuning.verdict(check), markup=False)


def _tune_days(trace: list[Path], usage: list[Path]) -> "list[Path | episodes.UsageDay]":
    """The training days ``llmvirt tune`` runs on: PlanetLab day directories, then every day of each usage trace's
    training VMs (shapes in turn); one line and exit 2 for a path that is neither."""
    from llmvirt.sim import episodes

    missing = [p for p in trace if not p.is_dir()]
    if missing:
        raise UsageError(f"{missing[0]}: not a PlanetLab day directory")
    days: list[Path | episodes.UsageDay] = list(trace)
    for path in usage:
        try:
            days += episodes.usage_days(path, "train", episodes.days_in(path))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: not a usage trace ({exc})") from None
    return days


def _print_tuned(doc: dict) -> None:
    """Each family's best point and its mean figures over the days."""
    title = f"tuned on {len(doc['train_days'])} days" if len(doc["train_days"]) > 4 else \
        f"tuned on {', '.join(doc['train_days'])}"
    by = f" by the {doc['objective']} objective" if doc.get("objective") else ""
    by += f", migrations {doc['migration_slowdown']:g}x slower" if doc.get("migration_slowdown") else ""
    t = Table(title=f"{title}{by} (cost in kWh-equivalents per day, lower is better)")
    for col in ("family", "best", "cost", "energy kWh", "unmet core-h", "GiB moved"):
        t.add_column(col, overflow="fold")
    for fam, f in doc["families"].items():
        best = next(g for g in f["grid"] if g["name"] == f["best"])
        t.add_row(fam, f["best"], f"{best['cost']:.2f}", f"{best['energy_kwh']:.2f}", f"{best['unmet_core_h']:.2f}",
                  f"{best['gib_migrated']:.0f}")
    out.print(t)
