"""Training the scan recovery: each VM's next-step demand from the last hour of scans, judged by CP-SAT's cost.

Recipe (``train_files``; reproducible from its seed):

1. **Samples**: the balance default (:data:`DEFAULT_POINT`, tuned CP-SAT deciding on the scan) runs on fleets of
   training VMs (``sim.split``; seeds :data:`SAMPLE_SEEDS`, one host size and mixed sizes, every trace given).
   Each step gives every VM's inputs (:data:`llmvirt.policy.scan_recovery.FEATURES`, from the scans only) and its
   true demand at the next step, which the simulator knows and a scan does not.
2. **Fit**: the MLP of :mod:`llmvirt.learn.train_balance_forecast` (64x64 ReLU, squared error, Adam) on the next
   step's demand minus the reading now. Squared error's minimiser is the mean, which adds up over a host's VMs.
3. **Judged by the balancer**: CP-SAT's trigger and the estimate's gain are chosen from :data:`GRID` by the
   balance cost summed on the benchmarks' tuning fleets (seeds 1000 and 1001, both shapes, every trace), the
   same fleets every balance baseline was tuned on.

With ``--quantiles`` (e.g. 0.5,0.75,0.9) the MLP has one output per quantile of the difference, fitted by pinball
loss; the quantile it decides on is chosen with the gain on the tuning fleets (:data:`QUANTILE_GRID` each).

Writes ``scan_recovery.safetensors`` and ``.json`` (the choice, every grid point's cost, the data) and the
learning curve ``scan_recovery_curve.csv`` (epoch, training loss, R2 of the difference on the training samples).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.learn.train_balance_forecast import SHAPES, ChangeNet, ForecastConfig, fit, training_traces
from llmvirt.policy import scan_recovery as sr
from llmvirt.policy.checkpoint import HeadSpec, save_head
from llmvirt.sim.balance_env import BalanceEnv, EnvConfig, Fleet, draw_fleet, trace_pool
from llmvirt.sim.scan_window import ScanTracker, ScanWindow, next_demand
from llmvirt.sim.traces import UsageTrace
from llmvirt.strategies.registry import make_balancer

DEFAULT_POINT = "cp-sat:2:0.1:0.95"  #: what the samples are drawn under: the balance default's point
SAMPLE_SEEDS = (2000, 2001)  #: fleets of training VMs the samples come from (not the tuning fleets)
GRID = tuple((trigger, gain) for trigger in (0.95, 1.0) for gain in (0.5, 1.0))  #: (CP-SAT trigger, gain)
QUANTILE_GRID = tuple((0.95, gain) for gain in (0.5, 1.0))
"""Each quantile's (trigger, gain) points: every grid of the mean chose trigger 0.95 (1.0 was 4-8 % dearer)."""

Recorder = Callable[[ScanWindow, np.ndarray, np.ndarray], None]  #: (window, valid VMs, next demand - reading)


@dataclass(frozen=True)
class RecoveryConfig(ForecastConfig):
    """The recipe's settings: the forecaster's fit (seed, epochs, width, step, tuning seeds) and where the samples
    come from."""

    sample_seeds: tuple[int, ...] = SAMPLE_SEEDS  #: fleets of training VMs the samples come from
    shapes: tuple[str, ...] = tuple(SHAPES)  #: fleet shapes (of ``SHAPES``) sampled and tuned on
    fleets_per_seed: int = 0  #: fleets a seed and shape (0: the benchmarks' 16 of one size, 8 mixed)
    feature_spec: int = 1  #: 1: each VM's own inputs (the shipped default's); 2: and its host's as a whole
    quantiles: tuple[float, ...] = ()  #: (): the mean (squared error); else one output per quantile (pinball loss)

    def features(self) -> tuple[str, ...]:
        """The inputs of :attr:`feature_spec`."""
        return sr.FEATURES if self.feature_spec == sr.FEATURE_SPEC_VERSION else sr.OLDER_SPECS[self.feature_spec]


def run_on_scans(balancer: Any, decide_on: Callable[[ScanWindow], np.ndarray], trace: UsageTrace,
                 fleets: list[Fleet], cfg: EnvConfig, record: Recorder | None = None) -> list[dict[str, float]]:
    """``balancer`` (``decide(ClusterArrays)``) on every fleet for a day, deciding on ``decide_on(window)`` (E, V)
    cores; each fleet's metrics row. ``record(window, valid, target)`` gets each step's window, which VMs are
    real, and every VM's next-step demand minus the reading now."""
    env = BalanceEnv(trace, len(fleets), cfg, fleets=fleets)
    tracker = ScanTracker(env)
    for _ in range(cfg.episode_steps):
        w = tracker.window()
        if record is not None:
            record(w, env.vm_valid, (next_demand(env) - w.seen[..., -1])[env.vm_valid].astype(np.float32))
        seen = decide_on(w) * cfg.mhz_per_core
        views = [env.fleet_view(e) for e in range(len(fleets))]
        plans = [balancer.decide(replace(v, vm_cpu_mhz=seen[e, : v.vm_host.size])) for e, v in enumerate(views)]
        for k in range(max((len(p) for p in plans), default=0)):
            vm = np.array([p[k][0] if k < len(p) else -1 for p in plans])
            dst = np.array([p[k][1] if k < len(p) else -1 for p in plans])
            env.move(vm, dst)
        env.advance()
    return [env.metrics.row(e) for e in range(len(fleets))]


def reading(w: ScanWindow) -> np.ndarray:
    """The reading now: what the default decides on."""
    return w.seen[..., -1]


def seeded_fleets(traces: list[tuple[UsageTrace, np.ndarray]], seeds: tuple[int, ...],
                  rc: RecoveryConfig = RecoveryConfig()) -> list[tuple[Any, ...]]:
    """(trace, config, fleets) for every trace, fleet shape of ``rc`` and seed."""
    out = []
    for trace, vms in traces:
        for cfg, n_default in (SHAPES[s] for s in rc.shapes):
            n = rc.fleets_per_seed or n_default
            pool_cpu, vcpus, mcap, _ = trace_pool(trace, cfg.mhz_per_core)
            for seed in seeds:
                rng = np.random.default_rng(seed)
                out.append((trace, cfg, [draw_fleet(rng, pool_cpu, vcpus, mcap, cfg, vms) for _ in range(n)]))
    return out


def samples(runs: list[tuple[Any, ...]], n: int = len(sr.FEATURES)) -> tuple[np.ndarray, np.ndarray]:
    """(the first ``n`` inputs, next-step demand minus the reading) of every VM and step while the default runs on
    ``runs``."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for trace, cfg, fl in runs:
        run_on_scans(make_balancer(DEFAULT_POINT), reading, trace, fl, cfg,
                     record=lambda w, valid, y: (xs.append(sr.inputs(w, n)[valid]), ys.append(y)))
    return np.concatenate(xs), np.concatenate(ys)


def grid_costs(recovery: sr.ScanRecovery, runs: list[tuple[Any, ...]],
               grid: tuple[tuple[float, float], ...] = GRID) -> dict[str, float]:
    """Each (trigger, gain)'s cost summed over ``runs``, keyed ``TRIGGER:GAIN``."""
    costs = {}
    for trigger, gain in grid:
        rec = replace(recovery, gain=gain, trigger=trigger)
        balancer = make_balancer(f"cp-sat:{sr.CPSAT_MOVES}:{sr.CPSAT_PRICE}:{trigger}")
        costs[f"{trigger}:{gain}"] = sum(r["cost"] for tr, cfg, fl in runs
                                         for r in run_on_scans(balancer, rec.demand, tr, fl, cfg))
    return costs


def choose(estimator: sr.DemandEstimator, traces: list[tuple[UsageTrace, np.ndarray]], cfg: RecoveryConfig,
           log: Any = print) -> tuple[float, float, dict[str, float]]:
    """(trigger, gain, every grid point's cost): the point with the lowest cost on the tuning fleets
    (``cfg.tune_seeds``) of ``traces``' VMs: of :data:`GRID`, or with ``cfg.quantiles`` of each quantile's
    :data:`QUANTILE_GRID` (keys ``QUANTILE:TRIGGER:GAIN``; ``estimator.output`` is left on the chosen quantile)."""
    runs = seeded_fleets(traces, cfg.tune_seeds, cfg)
    if not cfg.quantiles:
        costs = grid_costs(sr.ScanRecovery(estimator), runs)
    else:
        costs = {}
        for i, q in enumerate(cfg.quantiles):
            estimator.output = i
            costs.update({f"{q}:{k}": v for k, v in grid_costs(sr.ScanRecovery(estimator), runs,
                                                                QUANTILE_GRID).items()})
    best = min(costs, key=costs.__getitem__)
    *quantile, trigger, gain = (float(v) for v in best.split(":"))
    if quantile:
        estimator.output = cfg.quantiles.index(quantile[0])
    log(f"chose {best}: cost {costs[best]:.1f} on the tuning fleets; grid {costs}")
    return trigger, gain, costs


def _arrays(net: ChangeNet) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}


def train(traces: list[tuple[UsageTrace, np.ndarray]], out: Path, cfg: RecoveryConfig, labels: list[str],
          log: Any = print) -> dict[str, Any]:
    """Draw the samples, fit, choose (trigger, gain) on the tuning fleets, write the checkpoint and curve."""
    t0 = time.perf_counter()
    features = cfg.features()
    x, y = samples(seeded_fleets(traces, cfg.sample_seeds, cfg), len(features))
    log(f"{y.size} samples in {time.perf_counter() - t0:.0f} s")
    net, curve = fit(x, y, cfg, cfg.quantiles)
    for row in curve:
        log(f"epoch {row['epoch']}: loss {row['loss']:.4f}, R2 of the difference {row['r2']:.4f}")
    estimator = sr.DemandEstimator(_arrays(net))
    trigger, gain, costs = choose(estimator, traces, cfg, log)
    spec = HeadSpec(sr.STEM, cfg.feature_spec, features,
                    lambda m: ChangeNet(m["n_in"], m["hidden"], m.get("n_out", 1)))
    chosen = {"quantiles": list(cfg.quantiles), "quantile": cfg.quantiles[estimator.output]} if cfg.quantiles else {}
    meta = {"trigger": trigger, "gain": gain, **chosen, "grid_costs": costs, "config": asdict(cfg), "curve": curve,
            "sampled_under": DEFAULT_POINT, "samples": int(y.size),
            "training_data": [{"trace": label, "split": "sha256(name) < train_fraction", "train_vms": int(v.size)}
                              for label, (_, v) in zip(labels, traces, strict=True)],
            "wall_s": time.perf_counter() - t0}
    model = {"n_in": len(features), "hidden": cfg.hidden, **({"n_out": len(cfg.quantiles)} if cfg.quantiles else {})}
    save_head(net, out, spec, model, meta)
    with (out / f"{sr.STEM}_curve.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "loss", "r2"])
        w.writeheader()
        w.writerows(curve)
    return meta


def train_files(paths: list[Path], out: Path, cfg: RecoveryConfig, log: Any = print) -> dict[str, Any]:
    """:func:`train` on the training VMs of each trace file."""
    return train(training_traces(paths), out, cfg, [p.name for p in paths], log)


def main() -> None:
    """``python -m llmvirt.learn.train_scan_recovery OUT TRACE...`` [--seed N] [--feature-spec 1|2]
    [--quantiles Q,...]."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("traces", type=Path, nargs="+")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--feature-spec", type=int, choices=(1, 2), default=RecoveryConfig.feature_spec)
    ap.add_argument("--quantiles", type=_quantiles, default=(), help="e.g. 0.5,0.75,0.9: one output per quantile")
    args = ap.parse_args()
    train_files(args.traces, args.out, RecoveryConfig(seed=args.seed, feature_spec=args.feature_spec,
                                                      quantiles=args.quantiles))


def _quantiles(text: str) -> tuple[float, ...]:
    """``--quantiles``: comma-separated, each strictly between 0 and 1."""
    import argparse

    try:
        qs = tuple(float(v) for v in text.split(","))
    except ValueError:
        qs = ()
    if not qs or not all(0.0 < q < 1.0 for q in qs) or len(set(qs)) != len(qs):
        raise argparse.ArgumentTypeError(f"{text!r}: distinct numbers between 0 and 1, comma-separated")
    return qs


if __name__ == "__main__":
    main()
