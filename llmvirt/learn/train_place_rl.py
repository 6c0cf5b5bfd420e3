"""``llmvirt train --head place-rl``: the placement scorer, optimised on the placement scenario's cost.

The network is ``place``'s own (:class:`llmvirt.policy.model.PlacementScorer`: shared weights score each
candidate host from :data:`llmvirt.policy.features.FEATURES`, so it runs on 3 hosts or 10,000), and the
checkpoint is ``place``'s (``model.safetensors`` + ``policy.json``). Training:

1. **start**: the network is fitted to the scores of a baseline (``init``: the tuned placement baseline,
   ``policies/tuned_placement.json``) on the arrivals of training fleets (imitation only starts it);
2. **optimise on the cost**: evolution strategies (antithetic Gaussian perturbations of every weight,
   centred-rank fitness, Adam; Salimans et al. 2017), the fitness being the unmet core-hours of the
   placement scenario (:mod:`llmvirt.sim.placement_env`) per core-hour of capacity, on fresh fleets of
   training VMs each iteration (every perturbation on the same ones), fleets of one host size and mixed;
3. **keep**: the weights with the lowest cost on fixed validation fleets of training VMs (never held-back
   ones), the start included.

Why evolution strategies and not PPO: a placement's cost shows hours later and only through the other
placements, the network has a few hundred weights, and an episode costs milliseconds, so a direct search
on the episode's cost is simpler and less noisy than per-decision credit assignment.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.errors import UsageError
from llmvirt.learn.evolution import EsAdam
from llmvirt.policy.arrivals import chooser
from llmvirt.policy.decide import LearnedScorer, load_scorer
from llmvirt.policy.features import FEATURES
from llmvirt.policy.weights import NumpyMLP
from llmvirt.sim.balance_env import EnvConfig, draw_fleet, trace_pool
from llmvirt.sim.placement_env import PlacementEpisode
from llmvirt.sim.traces import UsageTrace

LAYERS = (("trunk.0", True), ("trunk.2", False), ("place", False))  #: (layer, takes the features)


@dataclass(frozen=True)
class PlaceRlConfig:
    """The recipe."""

    seed: int = 0  #: everything is drawn from it
    hidden: int = 16  #: the network's width
    iterations: int = 120  #: evolution-strategies steps
    pairs: int = 16  #: antithetic perturbation pairs a step
    episodes: int = 24  #: training fleets a step (split over traces and shapes)
    sigma: float = 0.1  #: perturbation scale (at 0.03 a step changes almost no placement: RESULTS)
    lr: float = 0.02  #: Adam's step
    val_episodes: int = 48  #: fixed validation fleets of training VMs
    val_every: int = 10  #: steps between validations
    shapes: tuple[str, ...] = ("identical", "mixed")  #: fleet shapes (llmvirt.sim.fleet_shapes)
    init: str = "baseline:least-loaded"  #: the scorer imitated to start the search


class _Net:
    """The scorer as one flat weight vector (what the search moves) and as ``place``'s numpy inference, deciding
    arrivals expected to use ``util`` of their vCPUs."""

    def __init__(self, hidden: int, util: float) -> None:
        self.util = util
        n = len(FEATURES)
        self.shapes = {"trunk.0": (hidden, n), "trunk.2": (hidden, hidden), "place": (1, hidden)}
        self.size = sum(a * b + a for a, b in self.shapes.values())

    def arrays(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """The weights by state-dict name."""
        out, i = {}, 0
        for name, (a, b) in self.shapes.items():
            out[f"{name}.weight"] = theta[i:i + a * b].reshape(a, b).astype(np.float32)
            i += a * b
            out[f"{name}.bias"] = theta[i:i + a].astype(np.float32)
            i += a
        return out

    def flat(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The flat vector of state-dict arrays."""
        return np.concatenate([np.concatenate([arrays[f"{n}.weight"].ravel(), arrays[f"{n}.bias"].ravel()])
                               for n in self.shapes]).astype(np.float64)

    def scorer(self, theta: np.ndarray) -> LearnedScorer:
        """A ``place`` scorer with these weights."""
        return LearnedScorer(NumpyMLP(self.arrays(theta), len(FEATURES), self.shapes["trunk.2"][0]), {}, "place-rl")

    def choose(self, theta: np.ndarray) -> Callable:
        """The placement scenario's callback for these weights."""
        return chooser(self.scorer(theta), self.util)


Episodes = list[tuple[PlacementEpisode, float]]  #: (episode, its capacity in core-hours)


def episodes(traces: list[tuple[UsageTrace, np.ndarray]], shapes: list[EnvConfig], n: int,
             rng: np.random.Generator) -> Episodes:
    """``n`` placement episodes of training VMs, split over traces and shapes, with their capacity."""
    out: Episodes = []
    per = max(1, n // (len(traces) * len(shapes)))
    for tr, idx in traces:
        for shape in shapes:
            pool = trace_pool(tr, shape.mhz_per_core)[:3]
            for _ in range(per):
                ep = PlacementEpisode.draw(rng, draw_fleet(rng, *pool, shape, idx), pool, shape)
                out.append((ep, float(ep.cores.sum()) * shape.episode_steps * shape.interval_s / 3600))
    return out


def cost(eps: Episodes, choose: Callable) -> float:
    """Unmet core-hours per core-hour of capacity, summed over the episodes."""
    return sum(ep.run(choose)["cost"] / cap for ep, cap in eps)


def expected_util(traces: list[tuple[UsageTrace, np.ndarray]], mhz_per_core: float) -> float:
    """The CPU use to expect of a new VM, as a share of its vCPUs: the training VMs' mean (a prior)."""
    used = sum(float((tr.cpu_mhz[idx] / mhz_per_core).mean(axis=1).sum()) for tr, idx in traces)
    vcpus = sum(float(np.maximum(tr.vcpus[idx], 1).sum()) for tr, idx in traces)
    return used / vcpus


def imitate(net: _Net, eps: Episodes, cfg: PlaceRlConfig) -> np.ndarray:
    """Weights fitted to ``cfg.init``'s scores on the arrivals of ``eps`` (the search's start)."""
    import torch

    from llmvirt.policy.model import PlacementScorer

    rows: list[np.ndarray] = []
    rule = load_scorer(cfg.init)
    if rule.name == "baseline:first-fit":
        raise UsageError("baseline:first-fit ranks hosts by their order, not their features: it cannot start "
                         "the search; start from another scorer")

    class _Record:
        name = "record"

        def scores(self, feats: np.ndarray, hosts: Any) -> np.ndarray:
            rows.append(feats.copy())
            return rule.scores(feats, hosts)

    for ep, _ in eps:
        ep.run(chooser(_Record(), net.util))
    x = torch.tensor(np.concatenate(rows))
    y = torch.tensor(rule.scores(x.numpy(), None))
    torch.manual_seed(cfg.seed)
    model = PlacementScorer(len(FEATURES), net.shapes["trunk.2"][0])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(600):
        opt.zero_grad()
        loss = torch.mean((model(x) - y) ** 2)
        loss.backward()
        opt.step()
    return net.flat({k: v.detach().numpy() for k, v in model.state_dict().items()})



def search(net: _Net, theta: np.ndarray, run: Callable[[int], Episodes], val: Episodes, cfg: PlaceRlConfig,
           log: Callable[[str], None]) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Evolution strategies from ``theta``; returns the kept weights (lowest validation cost) and the curve."""
    rng = np.random.default_rng(cfg.seed + 1)
    es = EsAdam(theta.size, cfg.sigma, cfg.lr)
    best, best_val = theta.copy(), cost(val, net.choose(theta))
    curve = [{"iteration": 0, "train_cost": float("nan"), "val_cost": best_val}]
    log(f"start (imitation of {cfg.init}): validation cost {best_val:.4f}")
    for it in range(1, cfg.iterations + 1):
        eps = run(it)
        noise = rng.standard_normal((cfg.pairs, theta.size))
        f = np.array([cost(eps, net.choose(theta + s * cfg.sigma * e)) for e in noise for s in (1, -1)])
        theta = es.step(theta, noise, f)
        row = {"iteration": it, "train_cost": float(f.mean()), "val_cost": float("nan")}
        if it % cfg.val_every == 0 or it == cfg.iterations:
            row["val_cost"] = cost(val, net.choose(theta))
            if row["val_cost"] < best_val:
                best, best_val = theta.copy(), row["val_cost"]
            log(f"iteration {it}: train {row['train_cost']:.4f}, validation {row['val_cost']:.4f} "
                f"(best {best_val:.4f})")
        curve.append(row)
    return best, curve


def train(traces: list[tuple[UsageTrace, np.ndarray]], out: Path, cfg: PlaceRlConfig,
          labels: list[str], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train on the training VMs of ``traces`` and write the checkpoint to ``out``; returns the record."""
    import torch

    from llmvirt.policy import checkpoint
    from llmvirt.policy.model import PlacementScorer
    from llmvirt.sim.fleet_shapes import SHAPES

    t0 = time.perf_counter()
    shapes = [SHAPES[s] for s in cfg.shapes]
    util = expected_util(traces, shapes[0].mhz_per_core)
    net = _Net(cfg.hidden, util)
    val = episodes(traces, shapes, cfg.val_episodes, np.random.default_rng(cfg.seed + 7919))
    theta0 = imitate(net, episodes(traces, shapes, cfg.episodes, np.random.default_rng(cfg.seed + 17)), cfg)
    best, curve = search(net, theta0, lambda it: episodes(traces, shapes, cfg.episodes,
                                                          np.random.default_rng([cfg.seed, it])), val, cfg, log)
    model = PlacementScorer(len(FEATURES), cfg.hidden)
    model.load_state_dict({k: torch.tensor(a) for k, a in net.arrays(best).items()})
    record = {"config": {**asdict(cfg), "shapes": list(cfg.shapes)}, "expected_cpu": util,
              "validation_cost_start": curve[0]["val_cost"],
              "validation_cost_kept": min(r["val_cost"] for r in curve if r["val_cost"] == r["val_cost"]),
              "wall_s": time.perf_counter() - t0}
    data = {"traces": labels, "split": "sha256(name) < 0.6", "train_vms": [int(i.size) for _, i in traces]}
    checkpoint.save(model, out, {
        "name": out.name, "scenario": "placement", "goal": "placement", "expected_cpu": util,
        "method": f"evolution strategies on the placement scenario's unmet demand, started by imitating {cfg.init}",
        "training_data": data, "training": record})
    with (out / "place_rl_curve.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(curve[0]))
        w.writeheader()
        w.writerows(curve)
    return record
