"""Training the learned balance policy: a demand forecaster, then reinforcement learning on the balance cost.

Two methods (:mod:`llmvirt.learn.balance_ppo`, :mod:`llmvirt.learn.balance_api`), neither from an RL
library: the action set is variable (a fleet's candidate moves, masked by the hard rules, plus "do
nothing") and differs between fleets of different sizes. Stable-Baselines3's MaskablePPO needs one
fixed-size Discrete action space and flat observations, and TorchRL's masked categorical would still
need this set encoding; so each is written out over padded candidate sets.

- ``ppo`` (the shipped recipe): residual PPO in the CleanRL style (rollout, GAE, clipped objective).
  The network's logits are added to the heuristic fallback's prior logits, so training starts from the
  fallback's behaviour and learns where to depart from it; the prior is sharp (a move the fallback
  would not make starts at -10), so sampling explores little noise. A softer prior (act at +1 instead of
  +5) explored more and made the greedy policy worse on the validation fleets.
- ``api``: approximate policy iteration with simulated rollouts (:func:`train_api`). The simulator is
  deterministic given the trace, so each alternative to the fallback's choice is measured exactly by
  playing both out on the same future demand; a network regresses the saving on what is known now.
  On Bitbrains its greedy departures cost more than they saved on the validation fleets at every margin
  tried (bench/RESULTS.md), so it is not the recipe.

Common to both (:class:`RlConfig`, everything from one seed): a quantile forecaster (pinball loss,
50 % and 90 %) of each training VM's next-step CPU use from its last hour; fleets of 3 to 10 hosts of
8 to 24 cores at 45 % to 80 % load, drawn from the training VMs of every trace given; the policy kept
is the one with the lowest greedy cost on validation fleets of training VMs (never held-back VMs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmvirt.learn.balance_api import train_api
from llmvirt.learn.balance_eval import Run
from llmvirt.learn.balance_model import (  # noqa: F401 - the training recipe's public names, in one place
    ActorCritic,
    Forecast,
    RlConfig,
    actor_arrays,
    save,
    train_forecaster,
)
from llmvirt.learn.balance_ppo import train_ppo
from llmvirt.policy import balance_features as bf
from llmvirt.sim.balance_env import EnvConfig
from llmvirt.sim.split import TRAIN_FRACTION, split
from llmvirt.sim.traces import UsageTrace, load_usage


def train(traces: list[tuple[UsageTrace, np.ndarray]], out: Path, cfg: RlConfig | None = None,
          env_cfg: EnvConfig | None = None, log: Any = print) -> dict[str, Any]:
    """Train a policy on the training VMs of ``traces`` and write it to ``out`` (see the module docstring).
    Returns the training record (also in the checkpoint's metadata and ``balance_rl_curve.csv``)."""
    cfg = cfg or RlConfig()
    env_cfg = env_cfg or EnvConfig()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run = Run(traces, out, cfg, env_cfg, log)
    fc_arrays = train_forecaster(traces, cfg)
    return train_api(run, fc_arrays) if cfg.method == "api" else train_ppo(run, fc_arrays)


def train_files(paths: list[Path], out: Path, cfg: RlConfig | None = None, log: Any = print) -> dict[str, Any]:
    """:func:`train` on the training VMs (``sha256(name) < 0.6``, as every head) of the traces at ``paths``."""
    from llmvirt.errors import UsageError

    cfg = cfg or RlConfig()
    if cfg.mode not in bf.MODES:
        raise UsageError(f"unknown --mode {cfg.mode!r}: use {', '.join(bf.MODES)}")
    if cfg.iters < 1:
        raise UsageError("--iters must be at least 1")
    pairs = []
    for p in paths:
        tr = load_usage(p)
        pairs.append((tr, split(tr.names, TRAIN_FRACTION)[0]))
        log(f"{p.name}: {pairs[-1][1].size} training VMs of {len(tr.names)}")
    record = train(pairs, out, cfg, log=log)
    return record
