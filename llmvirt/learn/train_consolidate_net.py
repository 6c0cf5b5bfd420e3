"""``llmvirt train --head consolidate-net``: the neural consolidation policy, optimised on the consolidation cost.

The network is :class:`llmvirt.policy.consolidate_net.GateNet` (shared weights over host tokens). Training:

1. **forecast**: the demand forecaster (50 % and 90 % quantiles of each VM's next-step use from its last
   hour, :func:`llmvirt.learn.balance_model.fit_forecaster`, pinball loss) is fitted on the VMs of the
   training days, as the simulator shows them to the policy (the fallback's runs), and then kept fixed;
2. **start**: output layer at zero, so the policy is exactly its fallback, the tuned gated THR-MMT;
3. **optimise on the cost**: evolution strategies (antithetic Gaussian perturbations of every weight,
   centred-rank fitness, Adam; Salimans et al. 2017). The fitness of a weight vector is the consolidation
   cost (:func:`llmvirt.model.score.consolidation_cost`: kWh + 10 x unmet core-hours + 0.001 x GiB
   migrated, the cost the baselines were tuned by) of whole PlanetLab days in the cloudsim scenario, each
   day divided by the fallback's cost on it, averaged within each trace family and then over families, so
   every family weighs the same;
4. **keep**: the weights with the lowest cost on the training days, the start included; or, with
   :attr:`ConsolidateNetConfig.validate_days` (``--validate-days``), the lowest cost on validation days: later days
   of the extra traces' *training* VMs, which the search never fits, on each training fleet's servers, and the
   last days of the training VMs of traces it does not train on (``--validate-trace``; :func:`validation_episodes`).
   That is early stopping on training-side data; held-back VMs and days stay unread.

**Across traces and fleet shapes** (``--extra-trace``, :func:`train`'s ``extra``): each extra usage trace
(Bitbrains, the generic format) adds its first :attr:`ConsolidateNetConfig.extra_days` days, with only its
training VMs (:func:`llmvirt.sim.split.split`), each day in one of the fleet shapes of
:attr:`ConsolidateNetConfig.shapes` in turn (:mod:`llmvirt.sim.episodes`). The forecaster learns from their
VMs too. **Across servers** (``--fleet``, :attr:`ConsolidateNetConfig.fleets`): the PlanetLab training days
run on each fleet's host models (:data:`llmvirt.sim.datacenter.FLEETS`), with CloudSim's CPU capacity per VM.

Only :data:`llmvirt.sim.split.TRAIN_DAYS` and training VMs are read; the rest is for the benchmark. The
simulator is deterministic, so a run is reproducible from its seed. Why evolution strategies and not PPO:
a consolidation decision pays off (in switched-off hosts) or costs (in overload) hours later and only
through the fleet, an episode is a whole day of 800 hosts in under a second, and the network has about a
hundred weights: a direct search on the day's cost is simpler and less noisy than per-step credit.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.learn.evolution import EsAdam
from llmvirt.model.score import COST_WEIGHTS, consolidation_cost
from llmvirt.policy import consolidate_net as cn
from llmvirt.sim import episodes
from llmvirt.sim.cloudsim_policies import run_policy
from llmvirt.sim.engine import Simulation
from llmvirt.sim.episodes import Episode
from llmvirt.sim.split import TRAIN_DAYS


@dataclass(frozen=True)
class ConsolidateNetConfig:
    """The recipe."""

    seed: int = 0  #: everything random is drawn from it
    hidden: int = 8  #: the network's width
    iterations: int = 60  #: evolution-strategies steps
    pairs: int = 8  #: antithetic perturbation pairs a step
    sigma: float = 0.05  #: perturbation scale
    lr: float = 0.03  #: Adam's step
    keep_every: int = 2  #: steps between evaluations of the current weights (for keeping the best)
    days: tuple[str, ...] = field(default=TRAIN_DAYS)  #: PlanetLab days (directory names) to learn on
    workers: int = 2  #: simulations at once
    forecast_samples: int = 200_000  #: (VM, step) samples the forecaster is fitted on
    forecast_epochs: int = 4  #: the forecaster's passes over them
    extra_days: int = 4  #: days of each extra usage trace (its training VMs) to learn on
    shapes: tuple[float, ...] = episodes.SHAPES  #: hosts per VM of the extra traces' days, in turn
    fleets: tuple[str, ...] = ("cloudsim",)  #: the servers the PlanetLab days run on, each day on every one
    #: days of each extra trace's training VMs after the ``extra_days`` it learns on, each on every fleet of
    #: ``fleets``, that only choose which weights to keep (0: keep the lowest training cost)
    validate_days: int = 0
    #: run each extra trace's training days on every fleet of ``fleets``, not on CloudSim's servers alone
    #: (``--extra-on-fleets``; the same CPU capacity per VM, :func:`llmvirt.sim.episodes.on_fleet`)
    extra_on_fleets: bool = False
    #: the gated point the network starts from and adds to (its output at zero), e.g. ``gated:0.95:1:0.4:wake``
    fallback: str = cn.FALLBACK


SHAPES = {"hidden.weight": lambda h: (h, len(cn.FEATURES)), "hidden.bias": lambda h: (h,),
          "out.weight": lambda h: (2, h), "out.bias": lambda h: (2,)}


def arrays(theta: np.ndarray, hidden: int) -> dict[str, np.ndarray]:
    """The weights by name from the flat vector, as float32 (what the checkpoint stores and deciding reads)."""
    out, i = {}, 0
    for name, shape_of in SHAPES.items():
        shape = shape_of(hidden)
        n = int(np.prod(shape))
        out[name] = theta[i:i + n].reshape(shape).astype(np.float32)
        i += n
    return out


def flat(weights: dict[str, np.ndarray]) -> np.ndarray:
    """The flat vector of named weights."""
    return np.concatenate([np.asarray(weights[name], dtype=np.float64).ravel() for name in SHAPES])


def training_episodes(planetlab: Path, cfg: ConsolidateNetConfig, extra: Sequence[Path] = ()) -> list[Episode]:
    """The days ``cfg`` trains on: its PlanetLab days on each of its fleets' servers, then each extra trace's days
    of training VMs, on CloudSim's servers (with :attr:`ConsolidateNetConfig.extra_on_fleets`: on each fleet's)."""
    out: list[Episode] = [episodes.on_fleet(planetlab / d, f) for f in cfg.fleets for d in cfg.days]
    fleets = cfg.fleets if cfg.extra_on_fleets else ("cloudsim",)
    for path in extra:
        days = episodes.usage_days(path, "train", cfg.extra_days, cfg.shapes)
        out += [episodes.on_fleet(day, f) for f in fleets for day in days]
    return out


def validation_episodes(cfg: ConsolidateNetConfig, extra: Sequence[Path] = (),
                        others: Sequence[Path] = ()) -> list[Episode]:
    """The days that choose the kept weights (:attr:`ConsolidateNetConfig.validate_days`): each extra trace's
    training VMs on the ``validate_days`` days after the ``extra_days`` it trains on (as many as it covers), and
    each of ``others``' (traces it does not train on) training VMs on its *last* ``validate_days`` days, away from
    the first days that training and the benchmark read; day ``d`` in shape ``shapes[d % len(shapes)]`` as in
    training, each on every fleet of ``cfg.fleets``: workloads the search never fits, on the servers it trains on.
    Empty when ``validate_days`` is 0."""
    if not cfg.validate_days:
        return []
    ranges = [(path, range(cfg.extra_days, min(cfg.extra_days + cfg.validate_days, episodes.days_in(path))))
              for path in extra]
    ranges += [(path, range(max(0, episodes.days_in(path) - cfg.validate_days), episodes.days_in(path)))
               for path in others]
    out: list[Episode] = []
    for path, span in ranges:
        days = [episodes.UsageDay(str(path), d, "train", cfg.shapes[d % len(cfg.shapes)]) for d in span]
        out += [episodes.on_fleet(day, f) for f in cfg.fleets for day in days]
    return out


def forecast_samples(args: tuple[Episode, str]) -> tuple[np.ndarray, np.ndarray]:
    """The forecaster's (inputs, next-step use) for every placed VM at every step of the fallback's run of
    a day (``args``: the day and the fallback): the histories exactly as
    :func:`llmvirt.policy.consolidate_net.vm_history` shows them."""
    from llmvirt.policy.balance_features import Forecaster

    day, fallback = args
    sim, policy = Simulation(episodes.datacenter(day)), cn.policy(None, fallback=fallback)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    last: tuple[np.ndarray, np.ndarray] | None = None  # the previous step's (placed VMs, their histories)

    def recording(s: Simulation, t: float) -> list[tuple[int, int]]:
        nonlocal last
        placed, _, hist = cn.vm_history(s)
        if last is not None:
            xs.append(last[1])
            ys.append(s.req[last[0]] / s.dc.vm_mips[last[0]])
        last = (placed, hist)
        return policy.decide(s, t)

    sim.place_initial(policy.initial_chooser(sim))
    sim.run(recording)
    x = np.concatenate(xs)
    return Forecaster.inputs(x, np.ones(x.shape[0])), np.concatenate(ys)


def fit_forecast(days: list[Episode], cfg: ConsolidateNetConfig, pool: ProcessPoolExecutor) -> dict[str, np.ndarray]:
    """The demand forecaster, fitted on :attr:`ConsolidateNetConfig.forecast_samples` samples of the training
    days (drawn with the seed)."""
    from llmvirt.learn.balance_model import fit_forecaster

    parts = list(pool.map(forecast_samples, [(d, cfg.fallback) for d in days]))
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    pick = np.random.default_rng([cfg.seed, 2]).choice(x.shape[0], min(cfg.forecast_samples, x.shape[0]),
                                                       replace=False)
    return fit_forecaster(x[np.sort(pick)], y[np.sort(pick)], cfg.seed, cfg.forecast_epochs)


def day_cost(args: tuple[np.ndarray | None, ConsolidateNetConfig, Episode, str, dict[str, np.ndarray]]
             ) -> dict[str, float]:
    """One day's run of the policy with flat weights ``theta`` (None: the fallback), the recipe's width and
    fallback, and forecaster arrays ``fc``: its summary and cost."""
    theta, cfg, day, mode, fc = args
    policy = cn.policy(None if theta is None else {**arrays(theta, cfg.hidden), **fc}, mode=mode,
                       fallback=cfg.fallback)
    summary = run_policy(Simulation(episodes.datacenter(day)), policy)
    return {**{k: float(summary[k]) for k in COST_WEIGHTS}, "migrations": float(summary["migrations"]),
            "cost": consolidation_cost(summary)}


class _Days:
    """Runs weight vectors over the training days, several simulations at once."""

    def __init__(self, days: list[Episode], cfg: ConsolidateNetConfig, pool: ProcessPoolExecutor,
                 fc: dict[str, np.ndarray]) -> None:
        self.days, self.cfg, self.pool, self.fc = days, cfg, pool, fc
        self.base = [r["cost"] for r in pool.map(day_cost, [(None, cfg, d, "full", fc) for d in self.days])]
        families = [episodes.family(d) for d in days]
        #: each trace family's days, by index
        self.members = {g: np.array([f == g for f in families]) for g in sorted(set(families))}

    def relative(self, thetas: list[np.ndarray]) -> np.ndarray:
        """(vectors, days): each vector's cost on each day relative to the fallback's."""
        jobs = [(t, self.cfg, d, "full", self.fc) for t in thetas for d in self.days]
        per = np.array([r["cost"] for r in self.pool.map(day_cost, jobs)]).reshape(len(thetas), len(self.days))
        return per / np.array(self.base)

    def costs(self, thetas: list[np.ndarray]) -> np.ndarray:
        """Each vector's cost: per day relative to the fallback's, averaged within families, then over them (with
        one family, exactly the mean over its days)."""
        rel = self.relative(thetas)
        return np.mean([rel[:, days].mean(axis=1) for days in self.members.values()], axis=0)

    def by_family(self, costs: list[float]) -> dict[str, float]:
        """The mean over each family's days of ``costs`` (one a day) relative to the fallback's."""
        rel = np.array(costs) / np.array(self.base)
        return {g: float(rel[days].mean()) for g, days in self.members.items()}


def search(theta: np.ndarray, days: _Days, cfg: ConsolidateNetConfig, log: Callable[[str], None],
           validation: _Days | None = None) -> tuple[np.ndarray, list[dict[str, float]], dict[str, float]]:
    """Evolution strategies from ``theta``; returns the kept weights, the curve and the kept weights' curve row.
    Kept: the lowest training cost, or with ``validation`` the lowest validation cost (its days only choose, they
    never enter a step)."""
    rng = np.random.default_rng([cfg.seed, 1])
    es = EsAdam(theta.size, cfg.sigma, cfg.lr)
    nan = float("nan")
    # the start is the fallback: cost 1 relative to itself, on training and validation days alike
    kept = {"iteration": 0, "population_cost": nan, "cost": 1.0, **({"validation_cost": 1.0} if validation else {})}
    best, curve = theta.copy(), [kept]
    key = "validation_cost" if validation else "cost"
    for it in range(1, cfg.iterations + 1):
        noise = rng.standard_normal((cfg.pairs, theta.size))
        f = days.costs([theta + s * cfg.sigma * e for e in noise for s in (1, -1)])
        theta = es.step(theta, noise, f)
        row = {"iteration": it, "population_cost": float(f.mean()), "cost": nan,
               **({"validation_cost": nan} if validation else {})}
        if it % cfg.keep_every == 0 or it == cfg.iterations:
            row["cost"] = float(days.costs([theta])[0])
            if validation:
                row["validation_cost"] = float(validation.costs([theta])[0])
            if row[key] < kept[key]:
                best, kept = theta.copy(), row
            shown = f", validation {row['validation_cost']:.4f}" if validation else ""
            log(f"iteration {it}: population {row['population_cost']:.4f}, weights {row['cost']:.4f}{shown} of "
                f"the fallback's cost (kept: iteration {kept['iteration']}, {kept[key]:.4f})")
        curve.append(row)
    return best, curve, kept


def train(planetlab: Path, out: Path, cfg: ConsolidateNetConfig, log: Callable[[str], None] = print,
          extra: Sequence[Path] = (), validate: Sequence[Path] = ()) -> dict[str, Any]:
    """Train on the training days in ``planetlab`` (and the training VMs of each ``extra`` usage trace) and write
    ``consolidate_net.safetensors`` + JSON to ``out``; ``validate``: traces whose training VMs' last days also
    choose the kept weights (:func:`validation_episodes`)."""
    t0 = time.perf_counter()
    theta0 = flat(cn.zero_net(cfg.hidden, np.random.default_rng(cfg.seed)))
    todo, checking = training_episodes(planetlab, cfg, extra), validation_episodes(cfg, extra, validate)
    if cfg.validate_days and not checking:
        raise ValueError("validate_days needs an extra trace that covers more days than extra_days, or a "
                         "validation trace")
    with ProcessPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
        fc = fit_forecast(todo, cfg, pool)  # the training days only: validation days stay unseen
        log(f"forecaster fitted on {cfg.forecast_samples} VM-steps of the training days")
        days = _Days(todo, cfg, pool, fc)
        val = _Days(checking, cfg, pool, fc) if checking else None
        best, curve, kept = search(theta0, days, cfg, log, val)
        per_day = list(pool.map(day_cost, [(best, cfg, d, "full", fc) for d in days.days]))
    by_family = days.by_family([r["cost"] for r in per_day])
    labels = [episodes.label(d) for d in todo]
    validation = {"validation": {"days": [episodes.label(d) for d in checking], "traces": [p.name for p in validate],
                                 "kept_iteration": kept["iteration"],
                                 "kept_relative_cost": kept["validation_cost"],
                                 "fallback_cost": dict(zip([episodes.label(d) for d in checking], val.base,
                                                           strict=True))}} if val else {}
    record = {"config": {**asdict(cfg), "days": list(cfg.days), "shapes": list(cfg.shapes),
                         "fleets": list(cfg.fleets)},
              **validation,
              "extra_traces": [p.name for p in extra],
              "fallback_cost": dict(zip(labels, days.base, strict=True)),
              "kept_cost": dict(zip(labels, per_day, strict=True)),
              "kept_relative_cost": kept["cost"],
              "kept_relative_cost_by_family": by_family,
              "wall_s": round(time.perf_counter() - t0, 1)}
    _save({**arrays(best, cfg.hidden), **fc}, cfg, out, record)
    _write_curve(curve, out)
    return record


def _save(weights: dict[str, np.ndarray], cfg: ConsolidateNetConfig, out: Path, record: dict[str, Any]) -> None:
    import torch

    from llmvirt.policy import checkpoint
    from llmvirt.policy.checkpoint import HeadSpec

    spec = HeadSpec(cn.SPEC_NAME, cn.SPEC_VERSION, cn.FEATURES, lambda c: GateModule(int(c["hidden"])))
    model = GateModule(cfg.hidden)
    model.load_state_dict({k: torch.tensor(a) for k, a in weights.items()})
    checkpoint.save_head(model, out, spec, {"hidden": cfg.hidden}, {
        "scenario": "cloudsim", "goal": "consolidate", "fallback": cfg.fallback, "fallback_point": cfg.fallback,
        "method": "evolution strategies on the consolidation cost, from the tuned gate (output layer at zero); "
                  "quantile demand forecaster fitted first by pinball loss, then fixed",
        "training_data": {"trace": "PlanetLab", "train_days": list(cfg.days), "fleets": list(cfg.fleets),
                          **({"extra_traces": [{"trace": name, "vms": "training side of the sha256 split",
                                                "days": cfg.extra_days, "hosts_per_vm": list(cfg.shapes),
                                                "fleets": list(cfg.fleets) if cfg.extra_on_fleets else ["cloudsim"]}
                                               for name in record["extra_traces"]]} if record["extra_traces"]
                             else {}),
                          **({"validation": {"vms": "training side of the sha256 split", "days_after_training":
                                             cfg.validate_days, "fleets": list(cfg.fleets),
                                             "last_days_of": record["validation"]["traces"],
                                             "chooses": "the kept weights (lowest validation cost)"}}
                             if "validation" in record else {})}, "seed": cfg.seed,
        "training": record})


def _write_curve(curve: list[dict[str, float]], out: Path) -> None:
    with (out / "consolidate_net_curve.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(curve[0]))
        w.writeheader()
        w.writerows(curve)
    plot_curve(out / "consolidate_net_curve.csv", out / "consolidate_net_curve.png")


def plot_curve(csv_path: Path, png: Path) -> None:
    """The learning curve of ``csv_path`` as a PNG: the population's and the current weights' cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as fh:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    kept = [r for r in rows if r["cost"] == r["cost"]]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([r["iteration"] for r in rows[1:]], [r["population_cost"] for r in rows[1:]], label="perturbed weights")
    ax.plot([r["iteration"] for r in kept], [r["cost"] for r in kept], marker="o", label="current weights")
    if "validation_cost" in rows[0]:
        ax.plot([r["iteration"] for r in kept], [r["validation_cost"] for r in kept], marker="s",
                label="current weights, validation days")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="fallback (tuned gate)")
    ax.set(xlabel="evolution-strategies step", ylabel="cost / fallback's")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def GateModule(hidden: int) -> Any:  # noqa: N802 - a module factory, named like the class it builds
    """The network as a torch module (for the checkpoint): ``hidden`` and ``out`` linear layers and the
    ``forecast`` MLP."""
    from torch import nn

    from llmvirt.learn.balance_model import Forecast

    module = Forecast()
    module.hidden = nn.Linear(len(cn.FEATURES), hidden)
    module.out = nn.Linear(hidden, 2)
    return module
