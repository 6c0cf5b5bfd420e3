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


def make_env(traces: list[tuple[UsageTrace, np.ndarray]], cfg: RlConfig, env_cfg: EnvConfig) -> list[BalanceEnv]:
    """One batch of random fleets per trace (the batch size split between them)."""
    per = max(1, cfg.envs // len(traces))
    return [BalanceEnv(tr, per, env_cfg, seed=cfg.seed * 1000 + i, eligible=idx) for i, (tr, idx) in enumerate(traces)]


def meta(cfg: RlConfig, **extra: Any) -> dict[str, Any]:
    """A checkpoint's decision settings: feature mode and the fallback prior's trigger and shape."""
    return {"mode": cfg.mode, "prior_threshold": cfg.prior_threshold, "prior_shape": list(cfg.prior_shape), **extra}


def validation_fleets(traces: list[tuple[UsageTrace, np.ndarray]], cfg: RlConfig, env_cfg: EnvConfig
                ) -> list[tuple[UsageTrace, list[Fleet]]]:
    """Fixed fleets of the training VMs of each trace (seed ``cfg.seed + 7919``) for checkpoint selection."""
    from llmvirt.sim.balance_env import draw_fleet, trace_pool

    rng = np.random.default_rng(cfg.seed + 7919)
    out = []
    for tr, idx in traces:
        pool_cpu, vcpus, mcap, _ = trace_pool(tr, env_cfg.mhz_per_core)
        n = max(1, cfg.eval_fleets // len(traces))
        out.append((tr, [draw_fleet(rng, pool_cpu, vcpus, mcap, env_cfg, idx) for _ in range(n)]))
    return out


def validate(validation: list[tuple[UsageTrace, list[Fleet]]], model: ActorCritic, fc_arrays: dict[str, np.ndarray],
              cfg: RlConfig, env_cfg: EnvConfig) -> float:
    """Total greedy cost of the current actor on the validation fleets."""
    return validate_actor(validation, BalanceActor({**fc_arrays, **actor_arrays(model)}, meta(cfg)), env_cfg)


def capacity(env: BalanceEnv) -> np.ndarray:
    """Each fleet's core-hours per step (what the reward is a share of)."""
    return (env.cores * env.host_valid).sum(axis=1) * env.cfg.interval_s / 3600


def validate_actor(validation: list[tuple[UsageTrace, list[Fleet]]], actor: BalanceActor, env_cfg: EnvConfig) -> float:
    """Total greedy cost of ``actor`` on the validation fleets."""
    total = 0.0
    for tr, fl in validation:
        env = BalanceEnv(tr, len(fl), env_cfg, fleets=fl)
        for _ in range(env_cfg.episode_steps):
            vm, dst, _, _ = actor.act(env.state())
            env.step(vm, dst)
        total += float(env.metrics.cost.sum())
    return total
