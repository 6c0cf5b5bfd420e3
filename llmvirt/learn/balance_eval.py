"""What both training methods share: the batches of training fleets, the validation fleets of training
VMs (checkpoint selection; never held-back VMs), greedy evaluation, and the training record and curve."""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.learn.balance_model import ActorCritic, RlConfig, actor_arrays, save
from llmvirt.policy.balance_policy import STEM, BalanceActor
from llmvirt.sim.balance_env import BalanceEnv, EnvConfig, Fleet
from llmvirt.sim.traces import UsageTrace


@dataclass
class Run:
    """One training run: the traces with their training VMs, the recipe, the scenario, where the policy goes,
    and where progress is logged."""

    traces: list[tuple[UsageTrace, np.ndarray]]  #: (trace, indices of its training VMs)
    out: Path  #: the policy directory written
    cfg: RlConfig = field(default_factory=RlConfig)  #: the recipe
    env_cfg: EnvConfig = field(default_factory=EnvConfig)  #: the balance scenario
    log: Any = print  #: progress lines
    t_start: float = field(default_factory=time.perf_counter)  #: when the run started

    def finish(self, curve: list[dict[str, float]], arrays: dict[str, np.ndarray], result: dict[str, Any],
               **decision: Any) -> dict[str, Any]:
        """Write the kept policy (``arrays``, with its decision settings and the training record) and the learning
        curve; returns the record: recipe, scenario, ``result`` (what the method measured) and the traces."""
        env_record = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.env_cfg).items()}
        record = {"config": asdict(self.cfg), "env": env_record, **result,
                  "traces": [{"vms": int(idx.size), "steps": int(tr.cpu_mhz.shape[1])} for tr, idx in self.traces]}
        save(self.out, arrays, meta(self.cfg, **decision, training=record))
        with (self.out / f"{STEM}_curve.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(curve[0]))
            w.writeheader()
            w.writerows(curve)
        return record


def shape_configs(cfg: RlConfig, env_cfg: EnvConfig) -> list[EnvConfig]:
    """The fleet shapes a run trains and validates on: ``env_cfg`` stands for "identical" (the scenario the caller
    gave), the others are :data:`llmvirt.sim.fleet_shapes.SHAPES`'."""
    from llmvirt.errors import UsageError
    from llmvirt.sim.fleet_shapes import SHAPES

    unknown = [s for s in cfg.shapes if s not in SHAPES]
    if unknown or not cfg.shapes:
        raise UsageError(f"unknown fleet shape(s) {', '.join(unknown) or '(none)'}: use {', '.join(SHAPES)}")
    return [env_cfg if s == "identical" else SHAPES[s] for s in cfg.shapes]


def make_env(traces: list[tuple[UsageTrace, np.ndarray]], cfg: RlConfig, env_cfg: EnvConfig) -> list[BalanceEnv]:
    """One batch of random fleets per trace and fleet shape (the batch size split between them)."""
    shapes = shape_configs(cfg, env_cfg)
    per = max(1, cfg.envs // (len(traces) * len(shapes)))
    pairs = [(tr, idx, shape) for tr, idx in traces for shape in shapes]
    return [BalanceEnv(tr, per, shape, seed=cfg.seed * 1000 + i, eligible=idx)
            for i, (tr, idx, shape) in enumerate(pairs)]


def meta(cfg: RlConfig, **extra: Any) -> dict[str, Any]:
    """A checkpoint's decision settings: feature mode and the fallback prior's trigger and shape."""
    return {"mode": cfg.mode, "prior_threshold": cfg.prior_threshold, "prior_shape": list(cfg.prior_shape), **extra}


Validation = list[tuple[UsageTrace, list[Fleet], EnvConfig]]  #: (trace, fixed fleets, their shape)


def validation_fleets(traces: list[tuple[UsageTrace, np.ndarray]], cfg: RlConfig, env_cfg: EnvConfig) -> Validation:
    """Fixed fleets of the training VMs of each trace and shape (seed ``cfg.seed + 7919``) for checkpoint
    selection."""
    from llmvirt.sim.balance_env import draw_fleet, trace_pool

    rng = np.random.default_rng(cfg.seed + 7919)
    shapes = shape_configs(cfg, env_cfg)
    out = []
    for tr, idx in traces:
        for shape in shapes:
            pool_cpu, vcpus, mcap, _ = trace_pool(tr, shape.mhz_per_core)
            n = max(1, cfg.eval_fleets // (len(traces) * len(shapes)))
            out.append((tr, [draw_fleet(rng, pool_cpu, vcpus, mcap, shape, idx) for _ in range(n)], shape))
    return out


def validate(validation: Validation, model: ActorCritic, fc_arrays: dict[str, np.ndarray], cfg: RlConfig) -> float:
    """Total greedy cost of the current actor on the validation fleets."""
    return validate_actor(validation, BalanceActor({**fc_arrays, **actor_arrays(model)}, meta(cfg)))


def capacity(env: BalanceEnv) -> np.ndarray:
    """Each fleet's core-hours per step (what the reward is a share of)."""
    return (env.cores * env.host_valid).sum(axis=1) * env.cfg.interval_s / 3600


def validate_actor(validation: Validation, actor: BalanceActor) -> float:
    """Total greedy cost of ``actor`` on the validation fleets."""
    total = 0.0
    for tr, fl, shape in validation:
        env = BalanceEnv(tr, len(fl), shape, fleets=fl)
        for _ in range(shape.episode_steps):
            vm, dst, _, _ = actor.act(env.state())
            env.step(vm, dst)
        total += float(env.metrics.cost.sum())
    return total
