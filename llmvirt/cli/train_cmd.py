"""``llmvirt train``: train a policy head in the simulator and write it into a checkpoint directory."""

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmvirt.cli.common import out
from llmvirt.errors import UsageError

if TYPE_CHECKING:
    from llmvirt.learn.balance_model import RlConfig
    from llmvirt.learn.train_consolidate_net import ConsolidateNetConfig


class Head(StrEnum):
    """Which head to train."""

    placement = "placement"
    balloon = "balloon"
    pin = "pin"
    consolidate = "consolidate"
    consolidate_net = "consolidate-net"
    balance_rl = "balance-rl"
    balance_forecast = "balance-forecast"
    scan_recovery = "scan-recovery"
    place_rl = "place-rl"


HeadOpt = Annotated[Head, typer.Option(help="placement (migration/placement scorer, balance scenario), place-rl "
    "(the placement scorer optimised on the placement scenario's cost; "
    "--trace and --extra-trace), balance-rl "
    "(the learned balance policy, PPO on the balance cost), balance-forecast "
    "(each VM's next-step change, for the balance loop), scan-recovery "
    "(each VM's next-step demand from the last hour of scans, for CP-SAT; llmvirt-scan:DIR), balloon "
    "(memory scenario), pin (pinning scenario), consolidate or consolidate-net "
    "(cloudsim scenario; --trace: the PlanetLab days).")]
ExtraTraceOpt = Annotated[list[Path] | None, typer.Option(
    "--extra-trace", help="balance-rl, balance-forecast, scan-recovery, place-rl and consolidate-net: more "
    "Bitbrains or generic traces to train on (their training VMs).")]
FleetOpt = Annotated[list[str] | None, typer.Option(
    "--fleet", help="consolidate-net: the servers the PlanetLab training days run on (repeatable): cloudsim "
    "(CloudSim's HP pair, the default), ibm (CloudSim's older IBM pair) or mixed (2-, 4- and 12-core hosts).")]
FallbackOpt = Annotated[str, typer.Option(
    "--fallback", help="consolidate-net: the gated point the network starts from and adds to, gated:T:E:B[:wake] "
    "or tuned:FAMILY (policies/tuned.json), e.g. tuned:gated-wake-thr-mmt.")]
ValidateDaysOpt = Annotated[int, typer.Option(
    "--validate-days", help="consolidate-net: keep the weights with the lowest cost on this many later days of "
    "the --extra-trace training VMs (and last days of each --validate-trace's), on each --fleet (early stopping; "
    "0: the lowest training cost).")]
ExtraOnFleetsOpt = Annotated[bool, typer.Option(
    "--extra-on-fleets", help="consolidate-net: run the --extra-trace training days on each --fleet's servers "
    "(without it, on CloudSim's only).")]
ValidateTraceOpt = Annotated[list[Path] | None, typer.Option(
    "--validate-trace", help="consolidate-net, with --validate-days N: a Bitbrains or generic trace it does not "
    "train on, whose training VMs' last N days also choose the kept weights (repeatable).")]

HorizonsOpt = Annotated[str, typer.Option(
    "--horizons", help="balance-forecast: steps ahead the forecast change may average over, comma-separated "
    "(one forecaster fitted per horizon; the loop's cost on the tuning fleets chooses).")]


def train(
    ctx: typer.Context,
    trace: Annotated[Path | None, typer.Option("--trace", help="Bitbrains directory or .tar.gz, or a generic "
                                               ".csv/.parquet.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Checkpoint directory to write, e.g. "
                                                 "policies/mine (--from-store: default beside the database).")]
    = None,
    from_store: Annotated[bool, typer.Option("--from-store", help="Fine-tune the active policy on the outcomes "
                                             "and history recorded in the store; registers a new, inactive "
                                             "version.")] = False,
    head: HeadOpt = Head.placement,
    scenario: Annotated[str, typer.Option(help="Scenario to learn the placement head in (balance).")] = "balance",
    seed: Annotated[int, typer.Option(help="Seed: the run is reproducible from it.")] = 0,
    samples: Annotated[int, typer.Option(help="Placement: decisions sampled from the training replay.")] = 3000,
    epochs: Annotated[int, typer.Option(help="Placement: training epochs.")] = 60,
    extra_trace: ExtraTraceOpt = None,
    iters: Annotated[int | None, typer.Option(help="balance-rl --method ppo: PPO iterations (default 300); "
                                              "place-rl: evolution strategies steps (default 120); "
                                              "consolidate-net: the same (default 60).")] = None,
    mode: Annotated[str, typer.Option(help="balance-rl: full, or an ablation: no-forecast, no-history.")] = "full",
    method: Annotated[str, typer.Option(help="balance-rl: ppo (residual PPO, the shipped recipe) or api "
                                        "(policy iteration with simulated rollouts).")] = "ppo",
    shapes: Annotated[str, typer.Option(help="balance-rl: fleet shapes to train on, comma-separated: identical "
                                        "(one host size a fleet), mixed (8-32 cores in a fleet, memory "
                                        "binding).")] = "identical",
    fleet: FleetOpt = None,
    validate_days: ValidateDaysOpt = 0,
    validate_trace: ValidateTraceOpt = None,
    extra_on_fleets: ExtraOnFleetsOpt = False,
    horizons: HorizonsOpt = "1",
    fallback: FallbackOpt = "gated:0.95:1:0.5",
) -> None:
    """Train one head on the training split; write safetensors + JSON and a learning curve.
    With --from-store: fine-tune the active policy on recorded outcomes into a new version."""
    if from_store:
        _from_store(ctx, out_dir, seed)
        return
    if trace is None or out_dir is None:
        raise UsageError("give --trace and --out (or --from-store)")

    if scenario != "balance":
        raise UsageError(f"scenario {scenario!r} has no trainer yet: use balance")
    if samples < 10 or epochs < 1:
        raise UsageError("--samples must be at least 10 and --epochs at least 1")
    if head is Head.consolidate_net:
        cfg = _net_config(seed, 60 if iters is None else iters, fleet or [], validate_days, extra_on_fleets,
                          fallback)
        _consolidate_net(trace, out_dir, cfg, extra_trace or [], validate_trace or [])
    elif head is Head.place_rl:
        _place_rl([trace, *(extra_trace or [])], out_dir, seed, 120 if iters is None else iters)
    elif head is Head.balance_rl:
        _balance_rl([trace, *(extra_trace or [])], out_dir, _rl_config(seed, iters, mode, method, shapes))
    elif head is Head.balance_forecast:
        _balance_forecast([trace, *(extra_trace or [])], out_dir, seed, _horizons(horizons))
    elif head is Head.scan_recovery:
        _scan_recovery([trace, *(extra_trace or [])], out_dir, seed)
    else:
        _head(head, trace, out_dir, seed, (samples, epochs))


def _rl_config(seed: int, iters: int | None, mode: str, method: str, shapes: str) -> "RlConfig":
    """``--head balance-rl``'s recipe from its options; a bad one is refused in one line."""
    if method not in ("api", "ppo"):
        raise UsageError(f"unknown --method {method!r}: use api or ppo")
    from llmvirt.learn.balance_model import RlConfig
    from llmvirt.sim.fleet_shapes import SHAPES

    shape_names = tuple(s.strip() for s in shapes.split(",") if s.strip())
    if not shape_names or any(s not in SHAPES for s in shape_names):
        raise UsageError(f"unknown --shapes {shapes!r}: use {', '.join(SHAPES)}, comma-separated")
    return RlConfig(seed=seed, iters=300 if iters is None else iters, mode=mode, method=method, shapes=shape_names)


def _balance_rl(paths: list[Path], out_dir: Path, cfg: "RlConfig") -> None:
    """``--head balance-rl``: the learned balance policy on the training VMs of every trace given."""
    from llmvirt.learn import train_balance

    record = train_balance.train_files(paths, out_dir, cfg, log=lambda line: out.print(line, markup=False))
    out.print(f"wrote {out_dir}/balance_rl.safetensors, balance_rl.json, balance_rl_curve.csv "
              f"({record['decision_steps']} decision steps in {record['wall_s']:.0f} s)", markup=False)


def _horizons(text: str) -> tuple[int, ...]:
    """``--horizons`` as whole steps, each 1 to 288 (a day); a bad list is refused in one line."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(not 1 <= v <= 288 for v in values) or len(set(values)) != len(values):
        raise UsageError(f"bad --horizons {text!r}: give distinct whole steps from 1 to 288, comma-separated")
    return values


def _balance_forecast(paths: list[Path], out_dir: Path, seed: int, horizons: tuple[int, ...]) -> None:
    """``--head balance-forecast``: the change forecaster, and the loop's trigger, gain and horizon."""
    from llmvirt.learn import train_balance_forecast as tbf

    record = tbf.train_files(paths, out_dir, tbf.ForecastConfig(seed=seed, horizons=horizons),
                             log=lambda line: out.print(line, markup=False))
    out.print(f"wrote {out_dir}/balance_forecast.safetensors, balance_forecast.json, balance_forecast_curve.csv "
              f"(trigger {record['threshold']}, gain {record['gain']}, horizon {record['horizon']}; "
              f"{record['wall_s']:.0f} s)", markup=False)


def _scan_recovery(paths: list[Path], out_dir: Path, seed: int) -> None:
    """``--head scan-recovery``: the estimate of what saturated hosts hide, and CP-SAT's trigger and gain."""
    from llmvirt.learn import train_scan_recovery as tsr

    meta = tsr.train_files(paths, out_dir, tsr.RecoveryConfig(seed=seed),
                           log=lambda line: out.print(line, markup=False))
    out.print(f"wrote {out_dir}/scan_recovery.safetensors, scan_recovery.json, scan_recovery_curve.csv "
              f"(trigger {meta['trigger']}, gain {meta['gain']}; {meta['wall_s']:.0f} s)", markup=False)


def _check_validation(cfg: "ConsolidateNetConfig", extra: list[Path], validate: list[Path]) -> None:
    """Refuse, in one line, validation days ``cfg`` cannot have: ``--validate-days`` with no trace to draw them
    from, ``--validate-trace`` without ``--validate-days``, or a trace that both trains and validates."""
    if cfg.validate_days and not (extra or validate):
        raise UsageError("--validate-days must be 0, or at least 1 with --extra-trace (its later training days) "
                         "or --validate-trace")
    if validate and not cfg.validate_days:
        raise UsageError("--validate-trace needs --validate-days N: how many of its last days choose")
    if both := {p.resolve() for p in extra} & {p.resolve() for p in validate}:
        raise UsageError(f"{sorted(both)[0]}: given as --extra-trace and --validate-trace; a trace it trains on "
                         "validates with its later days already")


def _net_config(seed: int, iterations: int, fleets: list[str], validate_days: int,
                extra_on_fleets: bool = False, fallback: str = "gated:0.95:1:0.5") -> "ConsolidateNetConfig":
    """``--head consolidate-net``'s recipe from its options (``fleets``: the servers the PlanetLab days run on,
    CloudSim's by default; ``validate_days``: later days of the extra traces' training VMs that choose the kept
    weights; ``extra_on_fleets``: the extra traces' days on those servers too; ``fallback``: a gated point or
    ``tuned:FAMILY``); a bad one is refused in one line."""
    from llmvirt.learn.train_consolidate_net import ConsolidateNetConfig
    from llmvirt.policy.consolidate_head import gated_point
    from llmvirt.sim.datacenter import FLEETS
    from llmvirt.strategies.tuned import tuned_name

    try:
        point = tuned_name(fallback.removeprefix("tuned:")) if fallback.startswith("tuned:") else fallback
        gated_point(point)
    except ValueError as exc:
        raise UsageError(f"--fallback: {exc}") from None

    if iterations < 1:
        raise UsageError("--iters must be at least 1")
    if validate_days < 0:
        raise UsageError("--validate-days must be 0, or at least 1 with --extra-trace (its later training days)")
    if unknown := [f for f in fleets if f not in FLEETS]:
        raise UsageError(f"unknown --fleet {unknown[0]!r}: use {', '.join(FLEETS)}")
    return ConsolidateNetConfig(seed=seed, iterations=iterations, validate_days=validate_days,
                                fleets=tuple(dict.fromkeys(fleets)) or ("cloudsim",), extra_on_fleets=extra_on_fleets,
                                fallback=point)


def _consolidate_net(planetlab: Path, out_dir: Path, cfg: "ConsolidateNetConfig", extra: list[Path],
                     validate: list[Path]) -> None:
    """``--head consolidate-net``: the neural consolidation policy on the training days' consolidation cost
    (``extra``: usage traces whose training VMs it also learns on, in two fleet shapes; ``validate``: traces whose
    training VMs' last days only choose the kept weights)."""
    from llmvirt.learn import train_consolidate_net
    from llmvirt.sim import episodes
    from llmvirt.sim.split import TRAIN_DAYS

    _check_validation(cfg, extra, validate)
    if cfg.extra_on_fleets and not extra:
        raise UsageError("--extra-on-fleets needs an --extra-trace: its training days are what runs on each --fleet")
    missing = [d for d in TRAIN_DAYS if not (planetlab / d).is_dir()]
    if missing:
        raise UsageError(f"{planetlab}: not a PlanetLab directory of days (missing {', '.join(missing)})")
    short = [p for p in [*extra, *validate] if episodes.days_in(p) < 1]  # loads each: a bad one fails in one line
    if short:
        raise UsageError(f"{short[0]}: covers less than one day")
    if cfg.validate_days and not train_consolidate_net.validation_episodes(cfg, extra, validate):
        raise UsageError(f"--validate-days: no --extra-trace covers more than the {cfg.extra_days} days it trains on")
    record = train_consolidate_net.train(planetlab, out_dir, cfg, log=lambda line: out.print(line, markup=False),
                                         extra=extra, validate=validate)
    family = ", ".join(f"{g} {c:.4f}" for g, c in record["kept_relative_cost_by_family"].items())
    if "validation" in record:
        val = record["validation"]
        family += f"; validation {val['kept_relative_cost']:.4f}, kept from step {val['kept_iteration']}"
    out.print(f"wrote {out_dir}/consolidate_net.safetensors, consolidate_net.json, consolidate_net_curve.csv "
              f"({record['kept_relative_cost']:.4f} of the fallback's cost on the training days: {family}; "
              f"{record['wall_s']:.0f} s)", markup=False)


def _place_rl(paths: list[Path], out_dir: Path, seed: int, iterations: int) -> None:
    """``--head place-rl``: the placement scorer on the placement scenario's cost, started from the tuned placement
    baseline (policies/tuned_placement.json, ``bench/placement_rl.py --tune``)."""
    import json

    from llmvirt.learn import train_place_rl
    from llmvirt.paths import DEFAULT_POLICY
    from llmvirt.sim.split import split
    from llmvirt.sim.traces import load_usage

    if iterations < 1:
        raise UsageError("--iters must be at least 1")
    tuned = DEFAULT_POLICY.parent / "tuned_placement.json"
    init = json.loads(tuned.read_text())["strategy"] if tuned.is_file() else "baseline:least-loaded"
    traces = []
    for p in paths:
        tr = load_usage(p)
        traces.append((tr, split(tr.names)[0]))
    cfg = train_place_rl.PlaceRlConfig(seed=seed, iterations=iterations, init=init)
    record = train_place_rl.train(traces, out_dir, cfg, [p.name for p in paths],
                                  log=lambda line: out.print(line, markup=False))
    out.print(f"wrote {out_dir}/model.safetensors, policy.json, place_rl_curve.csv (validation cost "
              f"{record['validation_cost_start']:.4f} at the start, {record['validation_cost_kept']:.4f} kept; "
              f"{record['wall_s']:.0f} s)", markup=False)


def _head(head: Head, trace: Path, out_dir: Path, seed: int, placement: tuple[int, int]) -> None:
    """One head from one trace: consolidate (PlanetLab days), balloon, pin, or placement (``placement``: decisions
    sampled, epochs)."""
    from llmvirt.sim import traces

    if head is Head.consolidate:
        from llmvirt.learn import train_consolidate

        metrics = train_consolidate.train(trace, out_dir, train_consolidate.ConsolidateTrainConfig(seed=seed))
        out.print(f"wrote {out_dir}/consolidate.safetensors, consolidate.json: {metrics['params']}", markup=False)
        return
    tr = traces.load_usage(trace)
    if head is Head.balloon:
        from llmvirt.learn import train_balloon

        metrics = train_balloon.train(tr, out_dir, train_balloon.BalloonTrainConfig(seed=seed), trace.name)
        out.print(f"wrote {out_dir}/balloon.safetensors, balloon.json, balloon_curve.csv: {metrics}", markup=False)
        return
    if head is Head.pin:
        from llmvirt.learn import train_pin

        metrics = train_pin.train(tr, out_dir, train_pin.PinTrainConfig(seed=seed), trace_label=trace.name)
        out.print(f"wrote {out_dir}/pin.safetensors, pin.json, pin_curve.csv: {metrics}", markup=False)
        return
    from llmvirt.learn.train import TrainConfig
    from llmvirt.learn.train import train as run

    samples, epochs = placement
    metrics = run(tr, out_dir, TrainConfig(seed=seed, samples=samples, epochs=epochs), "balance", trace.name)
    out.print(f"wrote {out_dir}/model.safetensors, policy.json, learning_curve.csv/.png: {metrics}", markup=False)


def _from_store(ctx: typer.Context, out_dir: Path | None, seed: int) -> None:
    from llmvirt.cli.common import state
    from llmvirt.learn.finetune import FinetuneConfig, from_store
    from llmvirt.store import policy_versions as versions

    st = state(ctx)
    engine = st.engine()
    base = versions.active(engine)
    name = versions.next_name(engine)
    from llmvirt.store.database import resolve_url

    target = out_dir or versions.versions_dir(resolve_url(st.db_url)) / name
    metrics = from_store(engine, Path(base["path"]), target, FinetuneConfig(seed=seed), base["name"])
    versions.register(engine, name, target.resolve(), "fine-tuned", base["name"], {"finetune": metrics})
    out.print(f"{name}: fine-tuned from {base['name']} into {target}: {metrics}; "
              f"`llmvirt policy promote {name}` to evaluate and activate it", markup=False)
