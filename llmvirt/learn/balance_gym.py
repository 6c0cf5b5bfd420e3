"""The batched balance scenario as a Gymnasium vector environment, so anyone can train their own agent on it.

Observation (per fleet, padded to the largest candidate set the configuration allows):

- ``candidates``: (N, F) features of each candidate move (:data:`~llmvirt.policy.balance_features.CANDIDATE_FEATURES`);
- ``globals``: (G,) fleet-wide figures (:data:`~llmvirt.policy.balance_features.GLOBAL_FEATURES`);
- ``action_mask``: (N + 1,) the allowed actions, "do nothing" (action 0, always allowed) first; use it
  as MaskablePPO's ``action_masks()`` or mask logits yourself: a masked action is refused by the
  simulator and counted (``info["refused"]``);
- ``prior``: (N + 1,) the heuristic fallback's logits (-inf where masked), for residual agents.

Action: ``Discrete(N + 1)`` per fleet: 0 does nothing, ``k`` makes candidate ``k - 1``'s move.
Reward: minus the step's balance cost in core-hours (:mod:`llmvirt.sim.balance_env`). Episodes are one
day; a finished fleet is redrawn at once (``autoreset_mode`` same-step: the observation returned with
``truncated`` is the new fleet's first), and ``info["episode_cost"]`` carries the finished one's cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from llmvirt.policy import balance_features as bf
from llmvirt.sim.balance_env import BalanceEnv, EnvConfig
from llmvirt.sim.traces import UsageTrace


@dataclass(frozen=True)
class Observation:
    """How the candidates are built: the demand forecaster (None: the last value as the forecast), the feature
    mode, and the fallback prior's trigger."""

    forecaster: bf.Forecaster | None = None  #: learned quantile forecaster
    mode: str = "full"  #: feature mode (ablations: no-forecast, no-history)
    prior_threshold: float = 1.0  #: the fallback prior's trigger, share of a host's cores


class BalanceVectorEnv(gymnasium.vector.VectorEnv):
    """``num_envs`` random fleets of ``trace``'s VMs (``eligible`` only: a training split) stepped together."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, trace: UsageTrace, num_envs: int, cfg: EnvConfig | None = None, seed: int = 0,
                 eligible: np.ndarray | None = None, obs: Observation | None = None) -> None:
        """The simulator and the spaces; ``obs`` says how candidates are built (default :class:`Observation`)."""
        self.cfg = cfg or EnvConfig()
        self.sim = BalanceEnv(trace, num_envs, self.cfg, seed=seed, eligible=eligible)
        self.num_envs = num_envs
        obs = obs or Observation()
        self.forecaster, self.mode, self.prior_threshold = obs.forecaster, obs.mode, obs.prior_threshold
        h = self.cfg.max_hosts
        self.n = min(bf.SOURCES, h) * bf.PER_SOURCE * min(bf.DESTINATIONS, h)
        f, g = len(bf.CANDIDATE_FEATURES), len(bf.GLOBAL_FEATURES)
        self.single_observation_space = spaces.Dict({
            "candidates": spaces.Box(-np.inf, np.inf, (self.n, f), np.float32),
            "globals": spaces.Box(-np.inf, np.inf, (g,), np.float32),
            "action_mask": spaces.MultiBinary(self.n + 1),
            "prior": spaces.Box(-np.inf, np.inf, (self.n + 1,), np.float32)})
        self.single_action_space = spaces.Discrete(self.n + 1)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._cand: bf.Candidates | None = None

    def _observe(self) -> dict[str, np.ndarray]:
        c = bf.candidates(self.sim.state(), self.forecaster, self.mode)
        self._cand = c
        pad = self.n - c.mask.shape[1]
        mask = np.pad(c.noop_mask, ((0, 0), (0, pad)))
        return {"candidates": np.pad(c.features, ((0, 0), (0, pad), (0, 0))),
                "globals": c.global_features,
                "action_mask": mask.astype(np.int8),
                "prior": np.pad(bf.prior_logits(c, self.prior_threshold), ((0, 0), (0, pad)),
                                constant_values=-np.inf)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Draw every fleet afresh (from ``seed`` if given)."""
        if seed is not None:
            self.sim = BalanceEnv(self.sim.trace, self.num_envs, self.cfg, seed=seed, eligible=self.sim.eligible)
        return self._observe(), {}

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray,
                                                 dict[str, Any]]:
        """One move (or none) per fleet, one 300 s step. A masked action does nothing and is counted in
        ``info["refused"]`` (the constraints dispose, whatever the agent proposes)."""
        if self._cand is None:
            self._observe()
        c = self._cand
        assert c is not None
        a = np.asarray(actions, dtype=np.int64)
        e = np.arange(self.num_envs)
        k = np.clip(a - 1, 0, c.mask.shape[1] - 1)
        move = (a >= 1) & (a <= c.mask.shape[1]) & c.mask[e, k]
        refused = (a != 0) & ~move
        cost, done = self.sim.step(np.where(move, c.vm[e, k], -1), np.where(move, c.dst[e, k], -1))
        self.sim.metrics.refused += refused
        info: dict[str, Any] = {"cost": cost, "refused": refused}
        if done.any():
            info["episode_cost"] = np.where(done, self.sim.finished.cost, np.nan)
        return self._observe(), -cost, np.zeros(self.num_envs, dtype=bool), done, info
