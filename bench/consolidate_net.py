"""The neural consolidation policy against the tuned baselines, on held-back PlanetLab days (issue 15).

Rows: the tuned gated THR-MMT (the best tuned baseline; also ablation (a), the network's output at zero),
the shipped network from each training seed (``net:S``), ablations (b) (``net:S:no-forecast``: the
forecast replaced by the value now) and (c) (``net:S:no-history``: every past sample replaced by the value
now, the forecaster's input too), same weights, the older three-number head, and the best ungated tuned
family. ``--also DIR``: the checkpoints ``DIR/seedS`` as rows ``NAME:S`` (another version of the network).
``--mix bitbrains``: another workload mix, which the baselines were not tuned on: the first seven days of the
Bitbrains Rnd July week and of August, every VM, each VM's CPU use as a share of its provisioned CPU, in
CloudSim's data centre with as many hosts per VM as the lightest PlanetLab day (800 for 1,052 VMs); the VM
sizes are CloudSim's, as for PlanetLab (:mod:`llmvirt.sim.episodes`). ``--mix bitbrains-held``: only the
held-back VMs (:mod:`llmvirt.sim.split`) of the same days, each day in both fleet shapes (CloudSim's hosts per
VM, and half a host per VM): what a network trained with ``--extra-trace`` on the July training VMs never saw.
``--mix bitbrains-train``: the July training VMs' days that ``--extra-trace`` trains on (training data);
``--mix bitbrains-8-train``: the same for August. ``--mix held-fresh``: PlanetLab's four held-back days and the
held-back VMs of August's days 8-30 (each day in one fleet shape in turn), which no consolidation policy ran on
before the tail rule (bench/RESULTS.md, "A consolidation default judged by its bad days too").
Every run also prints each policy's tail objective (:func:`llmvirt.bench.tune.objective`): per trace family the
mean cost a day plus the mean of the costliest 10 % of days, summed over the families.
Each policy is deterministic, so the spread is over days and training seeds. ``--production``: the same
runs with migrations 10x slower (a tenth of the bandwidth), the sim-to-production gap. Training days are
listed separately and marked; nothing here was chosen on the held-back days.

``--frontier``: also every point of the tuning sweep's Pareto frontier (on the training days, from
policies/tuned.json), run on the held-back days, and whether any of them dominates a network (at least as
good on energy, unmet demand and GiB migrated over the held-back days, better on one).

``--fleet ibm|mixed``: every day on other servers (:data:`llmvirt.sim.datacenter.FLEETS`: CloudSim's older IBM
x3250 / x3550 pair, 4 and 12 cores, 8 and 12 GB, another power curve; or a mixed fleet of 2-, 4- and 12-core
hosts), with the CPU capacity per VM of the day's own fleet, which no baseline in policies/tuned.json was tuned
on. The baselines are then re-tuned on the PlanetLab training days on these servers (``llmvirt tune --fleet
FLEET``, policies/tuned_FLEET.json; rows ``FLEET-tuned:FAMILY``), and costs are relative to that re-tuned gated
THR-MMT: what an operator with such servers would run. The networks keep their own fallback, the gated
THR-MMT tuned on CloudSim's servers (row ``tuned:gated-thr-mmt``).

``--base NAME [NAME ...]``: costs relative to the first instead (it becomes the first row; the others are added as
baseline rows), e.g. ``tuned:gated-wake-thr-mmt``, the best tuned family since PABFD learned what waking a host
costs, or on another fleet ``mixed-tuned:gated-wake-thr-mmt tuned:gated-wake-thr-mmt``.

Usage: python bench/consolidate_net.py [--workers 2] [--production] [--frontier] [--mix bitbrains] [--also DIR ...]
                                      [--fleet ibm|mixed] [--base NAME ...] [--json bench/consolidate_net.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

from llmvirt.bench import tune
from llmvirt.bench.run import energy_lower_bound_kwh
from llmvirt.learn.train_consolidate_net import ConsolidateNetConfig
from llmvirt.model.score import consolidation_cost
from llmvirt.policy import consolidate_net
from llmvirt.sim import episodes
from llmvirt.sim.cloudsim_policies import run_policy
from llmvirt.sim.datacenter import FLEETS
from llmvirt.sim.engine import Simulation
from llmvirt.sim.episodes import Episode
from llmvirt.sim.split import HELD_DAYS, TRAIN_DAYS
from llmvirt.strategies.registry import make_policy
from llmvirt.strategies.tuned import tuned_fleet_file, tuned_name

ROOT = Path(__file__).resolve().parents[1]
PLANETLAB = ROOT.parent / "shared" / "traces" / "planetlab"
SEEDS = {"0": ROOT / "policies" / "default",  # training seed -> checkpoint (the later seeds where committed)
         **{str(s): d for s in (1, 2) if (d := ROOT / "policies" / f"consolidate-net-seed{s}").is_dir()}}
BASELINES = ("tuned:gated-thr-mmt", "llmvirt-head", "tuned:lr-mmt", "thr-mmt-0.8")
BITBRAINS = {"bitbrains-7": ROOT.parent / "shared" / "traces" / "bitbrains-rnd" / "rnd_2013-7_week1.tar.gz",
             "bitbrains-8": ROOT.parent / "shared" / "traces" / "bitbrains-rnd" / "rnd_2013-8.tar.gz"}
MIXES: dict[str, list[Episode | Path]] = {
    "bitbrains": [episodes.UsageDay(str(p), d, "all", episodes.CLOUDSIM_HOSTS_PER_VM)
                  for p in BITBRAINS.values() for d in range(7)],
    "bitbrains-held": [episodes.UsageDay(str(p), d, "held", shape)
                       for p in BITBRAINS.values() for d in range(7) for shape in episodes.SHAPES],
    "bitbrains-train": episodes.usage_days(BITBRAINS["bitbrains-7"], "train", ConsolidateNetConfig.extra_days,
                                           ConsolidateNetConfig.shapes),  # what --extra-trace trains on
    "bitbrains-8-train": episodes.usage_days(BITBRAINS["bitbrains-8"], "train", ConsolidateNetConfig.extra_days,
                                             ConsolidateNetConfig.shapes),  # the same for August
    "held-fresh": [*(PLANETLAB / d for d in HELD_DAYS),  # the tail rule's decision set
                   *(episodes.UsageDay(str(BITBRAINS["bitbrains-8"]), d, "held", episodes.SHAPES[d % 2])
                     for d in range(7, episodes.days_in(BITBRAINS["bitbrains-8"])))],
}


def _days(mix: str | None, production: bool, fleet: str) -> list[Episode]:
    """The episodes a run covers: a ``--mix``'s days, or PlanetLab's (held-back only with ``--production``),
    on ``fleet``'s servers with the CPU capacity per VM of the day's own fleet."""
    if mix:
        return [episodes.on_fleet(e, fleet) for e in MIXES[mix]]
    names = list(HELD_DAYS) if production else [*HELD_DAYS, *TRAIN_DAYS]
    return [episodes.on_fleet(PLANETLAB / d, fleet) for d in names]


def _baselines(fleet: str) -> tuple[str, ...]:
    """The baseline rows, the one costs are relative to first: on another fleet, the baselines re-tuned there
    come first, and the CloudSim-tuned gated THR-MMT (the networks' fallback) stays as ablation (a)."""
    if fleet == "cloudsim":
        return BASELINES
    return (f"{fleet}-tuned:gated-thr-mmt", BASELINES[0], f"{fleet}-tuned:lr-mmt", *BASELINES[1:2])


def _policy(label: str) -> Any:
    """A baseline row's policy; ``FLEET-tuned:FAMILY`` is the family's best as tuned on that fleet's servers."""
    fleet, sep, family = label.partition("-tuned:")
    if sep and fleet in FLEETS:
        return make_policy(tuned_name(family, tuned_fleet_file(fleet)))
    return make_policy(label)


def _rows(also: list[Path]) -> dict[str, tuple[str, str]]:
    """Network rows: label -> (checkpoint directory, mode); the ablations' rows after each version's own (no
    ``no-forecast`` row for a checkpoint without a forecast: it would be the same run)."""
    versions = [{f"net:{s}": d for s, d in SEEDS.items()}]
    versions += [{f"{root.name}:{d.name.removeprefix('seed')}": d for d in sorted(root.glob("seed*"))} for root in also]
    rows: dict[str, tuple[str, str]] = {}
    for nets in versions:
        rows.update({label: (str(d), "full") for label, d in nets.items()})
        for mode in consolidate_net.MODES[1:]:
            rows.update({f"{label}:{mode}": (str(d), mode) for label, d in nets.items()
                         if mode != "no-forecast" or _has_forecast(d)})
    return rows


def _has_forecast(checkpoint: Path) -> bool:
    meta = json.loads((checkpoint / f"{consolidate_net.SPEC_NAME}.json").read_text())
    return "forecast_q90" in meta["feature_spec"]["features"]


def _job(args: tuple[Episode, str, bool, tuple[str, str] | None]) -> tuple[str, str, dict[str, float]]:
    episode, label, production, net = args
    dc = episodes.datacenter(episode)
    policy = _policy(label) if net is None else consolidate_net.load(net[0], label, net[1])[0]
    sim = Simulation(dc)
    summary = run_policy(sim, policy, 10.0 if production else 1.0)  # slower after the initial placement
    out = {k: float(v) for k, v in summary.items() if isinstance(v, int | float)}
    out["cost"] = consolidation_cost(summary)
    out["bound_kwh"] = energy_lower_bound_kwh(dc, sim.metrics.per_step_demand_mips)
    return episodes.label(episode), label, out


def _split(e: Episode) -> str:
    """Which side of the split a day is on: a PlanetLab day's by its date, a usage day's by its VMs."""
    if isinstance(e, str) or episodes.family(e) == "planetlab":
        return "train" if Path(e if isinstance(e, str) else e.path).name in TRAIN_DAYS else "held back"
    return {"train": "train", "held": "held-back VMs", "all": "other mix"}[e.side]


def _by_group(runs: dict, days: list[episodes.UsageDay], policies: list[str], base: str) -> None:
    """Each policy's mean cost relative to ``base`` over the days of each trace, side and fleet shape (a
    ``--mix`` day's label without its day index), and its worst day there."""
    groups: dict[str, list[str]] = {}
    for e in days:
        groups.setdefault(f"{Path(e.path).name} {e.side} VMs, {e.hosts_per_vm:.2f} hosts per VM", []).append(e.label)
    print(f"\nBy trace, VMs and fleet shape: mean (worst day) cost relative to {base}:\n")
    print(f"| policy | {' | '.join(groups)} |\n|---|{'---|' * len(groups)}")
    for p in policies:
        cells = []
        for members in groups.values():
            rel = [runs[(d, p)]["cost"] / runs[(d, base)]["cost"] for d in members]
            cells.append(f"{statistics.mean(rel):.3f} ({max(rel):.2f})")
        print(f"| {p} | {' | '.join(cells)} |")


def _tail(runs: dict, days: list[Episode], labels: list[str]) -> None:
    """Each policy's tail objective over ``days``, with each trace family's mean day and mean of its costliest
    10 % of days (:func:`llmvirt.bench.tune.objective`), the lowest score first; and its scale-free version
    (``relative-tail``, each family over :data:`llmvirt.bench.tune.REFERENCE`'s) where that is a row."""
    fams: dict[str, list[str]] = {}
    for e in days:
        fams.setdefault(episodes.family(e), []).append(episodes.label(e))

    def costs(p: str) -> dict[str, list[float]]:
        return {f: [runs[(d, p)]["cost"] for d in ds] for f, ds in fams.items()}

    score = {p: tune.objective(costs(p), "tail") for p in labels}
    ref = costs(tune.REFERENCE) if tune.REFERENCE in labels else None
    rel = {p: f" {tune.objective(costs(p), 'relative-tail', ref):.4f} |" if ref else "" for p in labels}
    print("\nThe tail objective over these days (per family: mean day + mean of the costliest 10 %):\n")
    print(f"| policy | {' | '.join(f'{f} ({len(ds)} days): mean + worst' for f, ds in fams.items())} | tail score |"
          + (f" relative to {tune.REFERENCE} |" if ref else ""))
    print(f"|---|{'---|' * len(fams)}---|" + ("---|" if ref else ""))
    for p in sorted(labels, key=score.__getitem__):
        parts = (tune.tail_parts(c) for c in costs(p).values())
        cells = [f"{mean:.2f} + {worst:.2f}" for mean, worst in parts]
        print(f"| {p} | {' | '.join(cells)} | {score[p]:.2f} |{rel[p]}")


def _frontier(fleet: str) -> list[str]:
    """The tuning sweep's frontier points on the training days (policies/tuned.json, or the fleet's own tuning),
    as policy names."""
    from llmvirt.bench import frontier

    doc = json.loads(tuned_fleet_file(fleet).read_text())
    return [r["name"] for r in frontier.frontier_rows(doc) if r["on_frontier"]]


def _dominance(runs: dict, held: list[str], front: list[str], nets: list[str]) -> None:
    """Print each network's and each frontier point's held-back means, and which points dominate a network."""
    keys = ("energy_kwh", "unmet_core_h", "gib_migrated")
    mean = {p: [statistics.mean(runs[(d, p)][k] for d in held) for k in keys] for p in [*nets, *front]}
    print("\nHeld-back means (kWh, unmet core-h, GiB migrated a day) of the tuned frontier and the networks:\n")
    print("| policy | energy kWh | unmet core-h | GiB migrated | dominates |\n|---|---|---|---|---|")
    for p in [*nets, *front]:
        beaten = [n for n in nets if p not in nets and all(a <= b for a, b in zip(mean[p], mean[n], strict=True))
                  and mean[p] != mean[n]]
        e, u, g = mean[p]
        print(f"| {p} | {e:.2f} | {u:.3f} | {g:.0f} | {', '.join(beaten) or '-'} |")


def _print_runs(runs: dict, days: list[Episode], labels: list[str], base: str) -> None:
    """Every run's row: cost, relative to ``base`` on the same day and to the energy bound, and its parts."""
    print("| day | split | policy | cost | x tuned | x bound | energy kWh | unmet core-h | migrations | GiB moved |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for e in days:
        d = episodes.label(e)
        for p in labels:
            s = runs[(d, p)]
            print(f"| {d} | {_split(e)} | {p} | {s['cost']:.2f} | "
                  f"{s['cost'] / runs[(d, base)]['cost']:.3f} | {s['cost'] / s['bound_kwh']:.2f} | "
                  f"{s['energy_kwh']:.2f} | {s['unmet_core_h']:.2f} | {int(s['migrations'])} | "
                  f"{s['gib_migrated']:.0f} |")


def _print_relative(runs: dict, held: list[str], labels: list[str], base: str, trained: bool) -> None:
    """Each row's cost relative to ``base`` on the same day, over the ``held`` days: min, mean, max, days better."""
    print(f"\n{'Training days' if trained else 'Days not trained on'}, cost relative to {base} on the same day:\n")
    print("| policy | min | mean | max | days better |\n|---|---|---|---|---|")
    for p in labels:
        rel = [runs[(d, p)]["cost"] / runs[(d, base)]["cost"] for d in held]
        print(f"| {p} | {min(rel):.3f} | {statistics.mean(rel):.3f} | {max(rel):.3f} | "
              f"{sum(r < 1 for r in rel)} of {len(rel)} |")


def main() -> None:
    """Run every row on every day; print the tables and write the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--production", action="store_true", help="migrations 10x slower (held-back days only)")
    ap.add_argument("--frontier", action="store_true", help="add the tuned frontier's points; check dominance")
    ap.add_argument("--mix", choices=list(MIXES), help="another workload mix instead of PlanetLab's days")
    ap.add_argument("--fleet", choices=list(FLEETS), default="cloudsim", help="the servers every day runs on")
    ap.add_argument("--also", type=Path, nargs="*", default=[], help="directories of seedS checkpoints to add")
    ap.add_argument("--base", nargs="+", default=[], help="the baseline costs are relative to (default: the gated "
                    "THR-MMT, ablation (a)), added as the first row; any further names are added as baseline rows")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "consolidate_net.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    nets = _rows(args.also)
    baselines = _baselines(args.fleet)
    if args.base:
        baselines = (*args.base, *(b for b in baselines if b not in args.base))
    labels = [*baselines[:1], *nets, *baselines[1:]]
    front = _frontier(args.fleet) if args.frontier else []
    labels += [p for p in front if p not in labels]
    days = _days(args.mix, args.production, args.fleet)
    held_days = [e for e in days if _split(e) != "train"] or days  # --mix bitbrains-train: its (training) days
    held = [episodes.label(e) for e in held_days]
    jobs = [(e, p, args.production, nets.get(p)) for e in days for p in labels]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = {(d, p): s for d, p, s in pool.map(_job, jobs)}
    tag = ("migrations 10x slower" if args.production else "as simulated") + (f", {args.mix} mix" if args.mix else "")
    tag += f", {args.fleet} servers" if args.fleet != "cloudsim" else ""
    print(f"# neural consolidation, {tag}; {platform.machine()}, {date.today()}, "
          f"{time.perf_counter() - t0:.0f} s\n")
    _print_runs(runs, days, labels, baselines[0])
    _print_relative(runs, held, labels, baselines[0], all(_split(e) == "train" for e in days))
    if args.mix:
        usage = [e for e in held_days if isinstance(e, episodes.UsageDay)]
        _by_group(runs, usage, [p for p in labels if p in nets], baselines[0])
    _tail(runs, held_days, labels)
    if front and not args.mix:
        _dominance(runs, held, front, [p for p in nets if nets[p][1] == "full"])
    doc = {"date": str(date.today()), "production": args.production, "mix": args.mix,
           "runs": {f"{d}|{p}": s for (d, p), s in runs.items()}}
    if args.fleet != "cloudsim":
        doc["fleet"] = args.fleet
    stem = args.json.stem + ("_production" if args.production else "") + (f"_{args.mix}" if args.mix else "")
    stem += f"_{args.fleet}" if args.fleet != "cloudsim" else ""
    args.json.with_name(stem + ".json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
