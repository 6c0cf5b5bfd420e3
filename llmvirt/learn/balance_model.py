"""The learned balance policy's training recipe and networks: :class:`RlConfig`, the quantile demand
forecaster and its training, the actor-critic over candidate sets, and the checkpoint writer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmvirt.policy import balance_features as bf
from llmvirt.policy.balance_policy import STEM, feature_list
from llmvirt.policy.weights import FORMAT_VERSION, sha256
from llmvirt.sim.balance_env import HISTORY
from llmvirt.sim.traces import UsageTrace

F = len(bf.CANDIDATE_FEATURES)
G = len(bf.GLOBAL_FEATURES)


@dataclass
class RlConfig:
    """The training recipe (defaults: the shipped policy)."""

    seed: int = 0  #: every random draw
    mode: str = "full"  #: feature mode (ablations: no-forecast, no-history)
    envs: int = 32  #: fleets stepped together
    rollout: int = 48  #: steps per fleet per iteration
    iters: int = 300  #: PPO iterations
    bc_iters: int = 0  #: warm-start iterations imitating the fallback (0: none; the prior already starts there)
    prior_threshold: float = 1.0  #: the fallback prior's trigger, share of a host's cores
    prior_shape: tuple[float, float] = (bf.PRIOR_ACT, bf.PRIOR_GAIN)  #: the prior's act logit and logit per gain
    epochs: int = 4  #: PPO epochs per iteration
    minibatch: int = 256  #: transitions per gradient step
    lr: float = 3e-4  #: Adam
    gamma: float = 0.9  #: discount per 300 s step (a move's effect lasts about as long as the spike it meets)
    lam: float = 0.9  #: GAE
    clip: float = 0.2  #: PPO ratio clip
    entropy: float = 0.003  #: entropy bonus
    value_coef: float = 0.5  #: value loss weight
    reward_scale: float = 100.0  #: reward = -cost / (fleet core-hours of the step) x this
    method: str = "ppo"  #: ppo (residual PPO, shipped) or api (policy iteration with simulated rollouts)
    api_rounds: int = 1  #: policy-improvement rounds (each: states, rollouts, fit); the fallback stays the base
    api_states: int = 8192  #: decision states sampled per round, shared out over the traces
    api_horizon: int = 24  #: steps each counterfactual is played out (2 hours)
    api_candidates: int = 8  #: moves evaluated per state besides "do nothing": the prior's best, then random
    api_random: int = 3  #: of which drawn at random among the allowed (so rarely-tried moves are learned too)
    api_epochs: int = 40  #: regression passes
    api_margins: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1)  #: departure margins tried on validation
    shapes: tuple[str, ...] = ("identical",)  #: fleet shapes trained and validated on (fleet_shapes.SHAPES)
    eval_every: int = 10  #: iterations between greedy evaluations on the validation fleets
    eval_fleets: int = 16  #: validation fleets: training VMs, a seed of their own (never held-back VMs)
    forecast_samples: int = 200_000  #: (VM, step) samples for the forecaster
    forecast_epochs: int = 4  #: forecaster passes


class Forecast(nn.Module):
    """Torch twin of :class:`llmvirt.policy.balance_features.Forecaster` (same layer names)."""

    def __init__(self) -> None:
        """HISTORY + 1 inputs, two outputs."""
        super().__init__()
        self.forecast = nn.Sequential(nn.Linear(HISTORY + 1, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                                      nn.Linear(32, 2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q50, q90) as shares of the VM's vCPUs (unclipped q50)."""
        h = self.forecast(x)
        return h[:, 0], h[:, 0] + nn.functional.softplus(h[:, 1])


def train_forecaster(traces: list[tuple[UsageTrace, np.ndarray]], cfg: RlConfig) -> dict[str, np.ndarray]:
    """Fit the forecaster on (trace, training VMs) pairs; returns its ``forecast.*`` arrays."""
    rng = np.random.default_rng(cfg.seed)
    xs, ys = [], []
    per = cfg.forecast_samples // len(traces)
    for trace, idx in traces:
        cpu = trace.cpu_mhz[idx] / 2600.0
        vc = trace.vcpus[idx].astype(np.float64)
        v = rng.integers(0, idx.size, per)
        t = rng.integers(HISTORY, cpu.shape[1] - 1, per)
        hist = cpu[v[:, None], t[:, None] + np.arange(-HISTORY + 1, 1)]
        xs.append(bf.Forecaster.inputs(hist, vc[v]))
        ys.append((cpu[v, t + 1] / np.maximum(vc[v], 1.0)).astype(np.float32))
    return fit_forecaster(np.concatenate(xs), np.concatenate(ys), cfg.seed, cfg.forecast_epochs)


def fit_forecaster(inputs: np.ndarray, targets: np.ndarray, seed: int, epochs: int) -> dict[str, np.ndarray]:
    """Fit :class:`Forecast` by pinball loss (50 % and 90 % quantiles) on (inputs as
    :meth:`~llmvirt.policy.balance_features.Forecaster.inputs` builds them, next-step use as a share of the
    VM's capacity); returns its ``forecast.*`` arrays. Deterministic for a seed."""
    x = torch.from_numpy(np.asarray(inputs, dtype=np.float32))
    y = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    torch.manual_seed(seed)
    model = Forecast()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], 1024):
            b = perm[i:i + 1024]
            q50, q90 = model(x[b])
            loss = (_pinball(q50, y[b], 0.5) + _pinball(q90, y[b], 0.9)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _pinball(q: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    d = y - q
    return torch.maximum(tau * d, (tau - 1) * d)


class ActorCritic(nn.Module):
    """The actor (candidate and "do nothing" scorers, as :class:`BalanceActor` runs them) and a critic
    over the pooled candidate set and the fleet-wide figures."""

    def __init__(self) -> None:
        """Shared-weight scorers; sizes fixed by the feature spec. The scorers' last layers start at zero,
        so the untrained policy is the fallback's prior (residual learning)."""
        super().__init__()
        self.cand = nn.Sequential(nn.Linear(F, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
        self.noop = nn.Sequential(nn.Linear(G, 32), nn.ReLU(), nn.Linear(32, 1))
        for last in (self.cand[4], self.noop[2]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.critic_enc = nn.Sequential(nn.Linear(F, 32), nn.ReLU())
        self.critic = nn.Sequential(nn.Linear(64 + G, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, feats: torch.Tensor, glob: torch.Tensor, mask: torch.Tensor, prior: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked logits (B, N + 1), value (B,)); ``mask`` (B, N + 1) includes "do nothing"; ``prior``: the
        fallback's logits (finite where allowed)."""
        s = self.cand(feats)[..., 0]
        prior = torch.nan_to_num(prior, neginf=0.0)
        logits = (torch.cat([self.noop(glob), s], dim=1) + prior).masked_fill(~mask, -1e9)
        m = mask[:, 1:, None].float()
        enc = self.critic_enc(feats)
        mean = (enc * m).sum(1) / m.sum(1).clamp(min=1.0)
        mx = (enc * m - (1 - m) * 1e4).max(1).values.clamp(min=0.0)
        value = self.critic(torch.cat([mean, mx, glob], dim=1))[:, 0]
        return logits, value


def actor_arrays(model: ActorCritic) -> dict[str, np.ndarray]:
    """The actor's weights under the names :class:`BalanceActor` reads."""
    return {f"actor.{k}": v.detach().numpy().copy() for k, v in model.state_dict().items()
            if k.startswith(("cand.", "noop."))}


def save(out: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write weights (safetensors) and metadata (JSON with the weights' SHA-256)."""
    from safetensors.numpy import save_file

    from llmvirt.policy.checkpoint import git_commit

    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{STEM}.safetensors"
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}, str(weights))
    full = {"format_version": FORMAT_VERSION, "kind": "balance-rl", "git_commit": git_commit(),
            "feature_spec": {"version": bf.FEATURE_SPEC_VERSION, "features": feature_list()},
            "weights_sha256": sha256(weights), **meta}
    (out / f"{STEM}.json").write_text(json.dumps(full, indent=1) + "\n")
    return weights
