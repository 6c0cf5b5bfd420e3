"""Learning the consolidation head by policy search in the ``cloudsim`` scenario.

Method: the cross-entropy method over the head's three parameters. Each candidate policy runs the
training days; its reward is :func:`llmvirt.model.score.reward` with goal ``consolidate`` (energy,
SLA violation and migration cost), summed over the days. The best fifth of each generation
re-fits the sampling distribution. Seeded, so a run is reproducible.

Honest split: the policy is learned on :data:`TRAIN_DAYS` only; the other PlanetLab days are held
back for the benchmark.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llmvirt.model.score import Score, consolidation_cost, reward
from llmvirt.policy import checkpoint
from llmvirt.policy.checkpoint import HeadSpec
from llmvirt.policy.consolidate_head import BOUNDS, PARAMS, SPEC_NAME, SPEC_VERSION, clip, policy
from llmvirt.sim.cloudsim_policies import run_policy
from llmvirt.sim.datacenter import cloudsim_datacenter, planetlab_day
from llmvirt.sim.engine import Simulation
from llmvirt.sim.split import TRAIN_DAYS
from llmvirt.sim.traces import load_planetlab


class ConsolidateParams(nn.Module):
    """The head's learned numbers, as a module so they are stored and verified like weights."""

    def __init__(self, n_params: int = len(PARAMS)) -> None:
        """A vector of ``n_params`` values."""
        super().__init__()
        self.n_params = n_params
        self.values = nn.Parameter(torch.zeros(n_params), requires_grad=False)

    def config(self) -> dict[str, int]:
        """Constructor parameters, stored in the checkpoint metadata."""
        return {"n_params": self.n_params}


SPEC = HeadSpec(SPEC_NAME, SPEC_VERSION, PARAMS, lambda c: ConsolidateParams(int(c["n_params"])))


@dataclass
class ConsolidateTrainConfig:
    """Hyper-parameters of the policy search, one place."""

    seed: int = 0  #: everything random derives from this
    generations: int = 8  #: CEM iterations
    population: int = 12  #: candidates per generation
    elite: int = 3  #: best candidates that re-fit the distribution
    days: tuple[str, ...] = field(default=TRAIN_DAYS)  #: training days (directory names)
    objective: str = "cost"  #: "cost": the honest cost the tuned baselines use; "slav": the old CloudSim reward
    workers: int = 2  #: simulations at once (candidates x days run in worker processes)


def day_reward(values: np.ndarray, dc_factory, objective: str = "cost") -> tuple[float, dict[str, float]]:  # noqa: ANN001
    """Reward of one parameter vector on one day (higher is better), and the run's figures.

    ``cost``: minus :func:`llmvirt.model.score.consolidation_cost`, the cost the baselines are tuned by
    (so the head and the tuned baselines optimise the same thing). ``slav``: the first sessions'
    reward on CloudSim's SLAV, which rewards migrating less through CloudSim's artefact."""
    r = run_policy(Simulation(dc_factory()), policy(values))
    if objective == "cost":
        return -consolidation_cost(r), r
    score = Score(migrations=r["migrations"], energy_kwh=r["energy_kwh"], slav_pct=r["slav_pct"])
    return reward(score, "consolidate"), r


def _candidate_day(args: tuple[tuple[float, ...], str, str]) -> float:
    values, day, objective = args
    return day_reward(np.array(values), lambda: planetlab_day(day), objective)[0]


def train(planetlab: Path, out: Path, cfg: ConsolidateTrainConfig) -> dict:
    """Search on the training days of ``planetlab`` and write ``consolidate.safetensors`` + JSON to ``out``."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    traces = [load_planetlab(planetlab / d) for d in cfg.days]
    factories = [lambda tr=tr: cloudsim_datacenter(tr) for tr in traces]
    lo, hi = np.array([b[0] for b in BOUNDS]), np.array([b[1] for b in BOUNDS])
    mean, std = (lo + hi) / 2, (hi - lo) / 3
    curve, best = [], (-np.inf, mean)
    for g in range(cfg.generations):
        cands = [clip(rng.normal(mean, std)) for _ in range(cfg.population)]
        jobs = [(tuple(float(x) for x in c), str(planetlab / d), cfg.objective) for c in cands for d in cfg.days]
        with ProcessPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
            per = list(pool.map(_candidate_day, jobs))
        scores = [sum(per[i * len(cfg.days):(i + 1) * len(cfg.days)]) for i in range(len(cands))]
        order = np.argsort(scores)[::-1]
        elite = np.array([cands[i] for i in order[:cfg.elite]])
        mean, std = elite.mean(axis=0), np.maximum(elite.std(axis=0), (hi - lo) * 0.02)
        if scores[order[0]] > best[0]:
            best = (float(scores[order[0]]), cands[order[0]])
        curve.append((g + 1, float(scores[order[0]]), float(np.mean(scores))))
    values = clip(best[1])
    model = ConsolidateParams()
    with torch.no_grad():
        model.values.copy_(torch.tensor(values, dtype=torch.float32))
    per_day = {d: day_reward(values, f, cfg.objective)[1] for d, f in zip(cfg.days, factories, strict=True)}
    metrics = {"reward_train": best[0], "params": dict(zip(PARAMS, values.tolist(), strict=True)),
               "train_days": per_day, "train_seconds": round(time.perf_counter() - t0, 1)}
    checkpoint.save_head(model, out, SPEC, model.config(), {
        "scenario": "cloudsim", "goal": "consolidate",
        "method": "cross-entropy policy search over a gated PABFD consolidation policy",
        "training_data": {"trace": "PlanetLab", "train_days": list(cfg.days)},
        "config": asdict(cfg), "seed": cfg.seed, "metrics": metrics})
    with (out / "consolidate_curve.csv").open("w") as f:
        f.write("generation,best_reward,mean_reward\n")
        f.writelines(f"{g},{b:.4f},{m:.4f}\n" for g, b, m in curve)
    return metrics
