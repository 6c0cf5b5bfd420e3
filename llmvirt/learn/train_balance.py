"""Training the learned balance policy: a demand forecaster, then reinforcement learning on the balance cost.

Two methods, both in this file, neither from an RL library: the action set is variable (a fleet's
candidate moves, masked by the hard rules, plus "do nothing") and differs between fleets of different
sizes. Stable-Baselines3's MaskablePPO needs one fixed-size Discrete action space and flat
observations, and TorchRL's masked categorical would still need this set encoding; so each is written
out here over padded candidate sets.

- ``ppo`` (the shipped recipe): residual PPO in the CleanRL style (rollout, GAE, clipped objective).
  The network's logits are added to the heuristic fallback's prior logits, so training starts from the
  fallback's behaviour and learns where to depart from it; the prior is sharp (a move the fallback
  would not make starts at -10), so sampling explores little noise. A softer prior (act at +1 instead of
  +5) explored more and made the greedy policy worse on the validation fleets.
- ``api``: approximate policy iteration with simulated rollouts (:func:`_train_api`). The simulator is
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

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmvirt.policy import balance_features as bf
from llmvirt.policy.balance_policy import STEM, BalanceActor, feature_list
from llmvirt.policy.weights import FORMAT_VERSION, sha256
from llmvirt.sim.balance_env import HISTORY, BalanceEnv, EnvConfig, Fleet
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
    x = torch.from_numpy(np.concatenate(xs))
    y = torch.from_numpy(np.concatenate(ys))
    torch.manual_seed(cfg.seed)
    model = Forecast()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(cfg.forecast_epochs):
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


def make_env(traces: list[tuple[UsageTrace, np.ndarray]], cfg: RlConfig, env_cfg: EnvConfig) -> list[BalanceEnv]:
    """One batch of random fleets per trace (the batch size split between them)."""
    per = max(1, cfg.envs // len(traces))
    return [BalanceEnv(tr, per, env_cfg, seed=cfg.seed * 1000 + i, eligible=idx) for i, (tr, idx) in enumerate(traces)]


def _meta(cfg: RlConfig, **extra: Any) -> dict[str, Any]:
    """A checkpoint's decision settings: feature mode and the fallback prior's trigger and shape."""
    return {"mode": cfg.mode, "prior_threshold": cfg.prior_threshold, "prior_shape": list(cfg.prior_shape), **extra}


def _validation(traces: list[tuple[UsageTrace, np.ndarray]], cfg: RlConfig, env_cfg: EnvConfig
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


def _validate(validation: list[tuple[UsageTrace, list[Fleet]]], model: ActorCritic, fc_arrays: dict[str, np.ndarray],
              cfg: RlConfig, env_cfg: EnvConfig) -> float:
    """Total greedy cost of the current actor on the validation fleets."""
    return _validate_actor(validation, BalanceActor({**fc_arrays, **actor_arrays(model)}, _meta(cfg)), env_cfg)


def _capacity(env: BalanceEnv) -> np.ndarray:
    return env.cores * env.host_valid.sum(axis=1) * env.cfg.interval_s / 3600


def train(traces: list[tuple[UsageTrace, np.ndarray]], out: Path, cfg: RlConfig | None = None,
          env_cfg: EnvConfig | None = None, log: Any = print) -> dict[str, Any]:
    """Train a policy on the training VMs of ``traces`` and write it to ``out`` (see the module docstring).
    Returns the training record (also in the checkpoint's metadata and ``balance_rl_curve.csv``)."""
    cfg = cfg or RlConfig()
    env_cfg = env_cfg or EnvConfig()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t_start = time.perf_counter()
    fc_arrays = train_forecaster(traces, cfg)
    forecaster = bf.Forecaster(fc_arrays)
    if cfg.method == "api":
        return _train_api(traces, out, cfg, env_cfg, fc_arrays, log, t_start)
    envs = make_env(traces, cfg, env_cfg)
    fallback = BalanceActor(fc_arrays, _meta(cfg), fallback=True)
    model = ActorCritic()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    curve: list[dict[str, float]] = []
    steps = 0
    recent: list[float] = []  # episode costs since the last log line
    validation = _validation(traces, cfg, env_cfg)
    best = (float("inf"), -1, actor_arrays(model))
    start_cost = _validate(validation, model, fc_arrays, cfg, env_cfg)
    log(f"validation cost at the start (the fallback's prior, network at zero): {start_cost:.1f}")
    for it in range(cfg.bc_iters + cfg.iters):
        bc = it < cfg.bc_iters
        batch, roll_s = _rollout(envs, model, forecaster, fallback if bc else None, cfg, rng)
        steps += batch["n"]
        if bc:
            loss = _imitate(model, opt, batch, cfg, rng)
        else:
            loss = _ppo_update(model, opt, batch, cfg, rng)
        done_cost = batch["episode_costs"]
        recent += done_cost
        row = {"iter": it, "phase": 0.0 if bc else 1.0, "steps": float(steps), "loss": loss,
               "reward_mean": float(batch["rew"].mean()),
               "episode_cost": float(np.mean(done_cost)) if done_cost else float("nan"),
               "rollout_steps_per_s": batch["n"] / roll_s, "wall_s": time.perf_counter() - t_start}
        since_bc = it + 1 - cfg.bc_iters  # PPO iterations done
        if since_bc >= 0 and since_bc % cfg.eval_every == 0 or it == cfg.bc_iters + cfg.iters - 1:
            row["validation_cost"] = _validate(validation, model, fc_arrays, cfg, env_cfg)
            # the warm start's result is logged, never kept: the shipped actor is optimised on the cost
            if since_bc > 0 and row["validation_cost"] < best[0]:
                best = (row["validation_cost"], it, actor_arrays(model))
            log(f"iter {it:4d} validation cost {row['validation_cost']:.1f} (best {best[0]:.1f} at {best[1]})")
        else:
            row["validation_cost"] = float("nan")
        curve.append(row)
        if it % 10 == 0 or it == cfg.bc_iters + cfg.iters - 1:
            ep = f"{np.mean(recent):.2f}" if recent else "-"
            log(f"iter {it:4d} {'bc ' if bc else 'ppo'} reward {row['reward_mean']:.4f} "
                f"episode cost {ep} {row['rollout_steps_per_s']:.0f} steps/s")
            recent = []
    env_record = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(env_cfg).items()}
    record = {"config": asdict(cfg), "env": env_record,
              "decision_steps": steps, "wall_s": time.perf_counter() - t_start,
              "start_validation_cost": start_cost,
              "kept": {"iter": best[1], "validation_cost": best[0],
                       "rule": "the iteration with the lowest greedy cost on the validation fleets (training VMs)"},
              "traces": [{"vms": int(idx.size), "steps": int(tr.cpu_mhz.shape[1])} for tr, idx in traces]}
    save(out, {**fc_arrays, **best[2]}, _meta(cfg, training=record))
    with (out / f"{STEM}_curve.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(curve[0]))
        w.writeheader()
        w.writerows(curve)
    return record


def _train_api(traces: list[tuple[UsageTrace, np.ndarray]], out: Path, cfg: RlConfig, env_cfg: EnvConfig,
               fc_arrays: dict[str, np.ndarray], log: Any, t_start: float) -> dict[str, Any]:
    """Approximate policy iteration with simulated rollouts (Lagoudakis & Parr 2003; Bertsekas' rollout).

    Each round: run the current policy (first the fallback) on random fleets of training VMs and sample
    decision states; at each, play out "do nothing" and ``api_candidates`` moves for ``api_horizon`` steps
    with the current policy deciding afterwards (the trace is fixed, so each counterfactual is exact and
    they share the same future demand); regress each move's advantage over doing nothing (cost saved,
    per fleet capacity) on its features. The greedy policy on the fitted advantages is the next round's
    policy: it moves only where a move is predicted to save cost. Optimised on the cost alone; the
    fallback is only where the first round starts and which moves it tries first."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    validation = _validation(traces, cfg, env_cfg)
    base = BalanceActor(fc_arrays, _meta(cfg), fallback=True)
    start_cost = _validate_actor(validation, base, env_cfg)
    log(f"validation cost of the fallback (round 0): {start_cost:.1f}")
    curve: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, np.ndarray] | None, float] = (start_cost, 0, None, 0.0)
    parts: dict[str, list[np.ndarray]] = {"x_moves": [], "y_moves": [], "x_noop": [], "y_noop": []}
    model = ActorCritic()
    for rnd in range(1, cfg.api_rounds + 1):
        t0 = time.perf_counter()
        for ti, (tr, idx) in enumerate(traces):
            snaps = _sample_states(tr, idx, base, cfg, env_cfg, rng, seed=cfg.seed * 1000 + 100 * rnd + ti,
                                   want=cfg.api_states // len(traces))
            for i in range(0, len(snaps), 256):
                for key, v in zip(parts, _counterfactuals(tr, snaps[i:i + 256], base, cfg, env_cfg, rng), strict=True):
                    parts[key].append(v)
        sample_s = time.perf_counter() - t0
        model = ActorCritic()  # refit from scratch on every round's samples so far
        data = {k: np.concatenate(v) for k, v in parts.items()}
        n_eval = int(data["y_moves"].size + data["y_noop"].size)
        loss = _fit_advantage(model, data, cfg)
        arrays = {**fc_arrays, **actor_arrays(model)}
        costs = {}
        for margin in cfg.api_margins:  # the least predicted saving to depart from the fallback, on validation
            actor = BalanceActor(arrays, _meta(cfg, head="advantage", margin=margin))
            costs[margin] = _validate_actor(validation, actor, env_cfg)
        margin = min(costs, key=lambda m: costs[m])
        cost = costs[margin]
        log(f"round {rnd}: validation cost by margin: " + ", ".join(f"{m}: {c:.1f}" for m, c in costs.items()))
        base = BalanceActor(arrays, _meta(cfg, head="advantage", margin=margin))
        curve.append({"round": rnd, "samples": float(n_eval), "fit_loss": loss,
                      "validation_cost": cost, "sample_s": sample_s, "wall_s": time.perf_counter() - t_start})
        log(f"round {rnd}: {n_eval} evaluated alternatives, fit loss {loss:.4f}, "
            f"validation cost {cost:.1f} (fallback {start_cost:.1f}), {sample_s:.0f} s of rollouts")
        if cost < best[0] or best[2] is None:
            best = (cost, rnd, arrays, margin)
    env_record = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(env_cfg).items()}
    record = {"config": asdict(cfg), "env": env_record, "wall_s": time.perf_counter() - t_start,
              "decision_steps": int(sum(r["samples"] for r in curve[-1:]) * (cfg.api_horizon + 1)),
              "start_validation_cost": start_cost,
              "kept": {"round": best[1], "validation_cost": best[0], "margin": best[3],
                       "rule": "the round with the lowest greedy cost on the validation fleets (training VMs)"},
              "traces": [{"vms": int(idx.size), "steps": int(tr.cpu_mhz.shape[1])} for tr, idx in traces]}
    assert best[2] is not None
    save(out, best[2], _meta(cfg, head="advantage", margin=best[3], training=record))
    with (out / f"{STEM}_curve.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(curve[0]))
        w.writeheader()
        w.writerows(curve)
    return record


def _sample_states(trace: UsageTrace, idx: np.ndarray, policy: BalanceActor, cfg: RlConfig, env_cfg: EnvConfig,
                   rng: np.random.Generator, seed: int, want: int) -> list[Fleet]:
    """Decision states met while ``policy`` runs random fleets of the VMs ``idx``: mostly where a host is
    busy (85 % of its cores now, or forecast above them), some calm ones (where the answer is to wait)."""
    env = BalanceEnv(trace, 64, env_cfg, seed=seed, eligible=idx)
    last = env_cfg.episode_steps - cfg.api_horizon - 1
    out: list[Fleet] = []
    while len(out) < want:
        for t in range(env_cfg.episode_steps):
            vm, dst, cand, _ = policy.act(env.state())
            if t <= last:
                g = cand.global_features
                busy = (g[:, 0] >= 0.85) | (g[:, 1] >= 1.0)
                take = (rng.uniform(size=busy.size) < 0.05) & (busy | (rng.uniform(size=busy.size) < 0.15))
                out.extend(env.snapshot(int(e)) for e in np.flatnonzero(take))
            env.step(vm, dst)
    return out[:want]


def _counterfactuals(trace: UsageTrace, snaps: list[Fleet], policy: BalanceActor, cfg: RlConfig,
                     env_cfg: EnvConfig, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each state: the fallback's choice and up to ``api_candidates`` alternatives (doing nothing when
    the fallback would move; the prior's next-best moves; random allowed ones), each played out for
    ``api_horizon`` steps with ``policy`` deciding afterwards. Returns the alternative moves' features and
    their saving over the fallback's choice, and the same for "do nothing" (fleet figures, saving); savings
    in cost per 100 core-hours of fleet capacity per step."""
    from dataclasses import replace

    h_cfg = replace(env_cfg, episode_steps=cfg.api_horizon)
    s_n, k = len(snaps), cfg.api_candidates
    env0 = BalanceEnv(trace, s_n, h_cfg, fleets=snaps)
    cand = bf.candidates(env0.state(), policy.forecaster, cfg.mode, cfg.prior_threshold)
    prior = bf.prior_logits(cand, cfg.prior_threshold, *cfg.prior_shape)
    base = prior.argmax(axis=1)  # 0: do nothing, c + 1: candidate c
    noise = rng.uniform(size=cand.mask.shape)
    order = np.argsort(-np.where(cand.mask, prior[:, 1:] + noise * 1e-3, -np.inf), axis=1)
    rand = np.argsort(-np.where(cand.mask, noise, -np.inf), axis=1)
    # option 0 is the fallback's choice; options 1..k the alternatives (as indices into [noop, candidates])
    options = np.full((s_n, k + 1), -1, dtype=np.int64)
    options[:, 0] = base
    for s in range(s_n):
        alts: list[int] = [0] if base[s] != 0 else []
        pool = [*order[s, : k - cfg.api_random], *rand[s, : k]]
        for c in pool:
            o = int(c) + 1
            if cand.mask[s, c] and o != base[s] and o not in alts and len(alts) < k:
                alts.append(o)
        options[s, 1:1 + len(alts)] = alts
    rows = np.arange(s_n)[:, None]
    pick = np.maximum(options - 1, 0)
    moves = options >= 1
    vm = np.where(moves, cand.vm[rows, pick], -1)
    dst = np.where(moves, cand.dst[rows, pick], -1)
    env = BalanceEnv(trace, s_n * (k + 1), h_cfg, fleets=[snaps[s] for s in range(s_n) for _ in range(k + 1)])
    env.step(vm.ravel(), dst.ravel())
    for _ in range(cfg.api_horizon - 1):
        v, d, _, _ = policy.act(env.state())
        env.step(v, d)
    q = env.metrics.cost.reshape(s_n, k + 1)
    cap = np.array([f.cores * f.n_hosts for f in snaps]) * env_cfg.interval_s / 3600
    saving = ((q[:, :1] - q) / cap[:, None] * 100 / cfg.api_horizon).astype(np.float32)
    alt_move = moves.copy()
    alt_move[:, 0] = False
    alt_noop = options == 0
    alt_noop[:, 0] = False
    x_moves = cand.features[rows, pick][alt_move]
    x_noop = np.broadcast_to(cand.global_features[:, None, :], (s_n, k + 1, cand.global_features.shape[1]))[alt_noop]
    return x_moves, saving[alt_move], x_noop, saving[alt_noop]


def _fit_advantage(model: ActorCritic, data: dict[str, np.ndarray], cfg: RlConfig) -> float:
    """Regress the savings on the options' features (Huber loss): moves with the candidate scorer, doing
    nothing with the fleet-figures scorer. Returns the last epoch's mean loss."""
    last = 0.0
    for head, x, y in ((model.cand, data["x_moves"], data["y_moves"]), (model.noop, data["x_noop"], data["y_noop"])):
        if x.shape[0] == 0:
            continue
        opt = torch.optim.Adam(head.parameters(), lr=2e-3)
        xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
        gen = torch.Generator().manual_seed(cfg.seed)
        for _ in range(cfg.api_epochs):
            perm = torch.randperm(xt.shape[0], generator=gen)
            total = 0.0
            for i in range(0, xt.shape[0], 512):
                b = perm[i:i + 512]
                loss = nn.functional.huber_loss(head(xt[b])[:, 0], yt[b], delta=1.0)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * b.numel()
        last += total / xt.shape[0]
    return last


def _validate_actor(validation: list[tuple[UsageTrace, list[Fleet]]], actor: BalanceActor, env_cfg: EnvConfig) -> float:
    total = 0.0
    for tr, fl in validation:
        env = BalanceEnv(tr, len(fl), env_cfg, fleets=fl)
        for _ in range(env_cfg.episode_steps):
            vm, dst, _, _ = actor.act(env.state())
            env.step(vm, dst)
        total += float(env.metrics.cost.sum())
    return total


def load_trace(path: Path) -> UsageTrace:
    """A Bitbrains directory or .tar.gz, or a generic .csv/.parquet."""
    from llmvirt.sim import traces

    return traces.load_generic(path) if path.suffix in (".csv", ".parquet") else traces.load_bitbrains(path)


def train_files(paths: list[Path], out: Path, cfg: RlConfig | None = None, log: Any = print) -> dict[str, Any]:
    """:func:`train` on the training VMs (``sha256(name) < 0.6``, as every head) of the traces at ``paths``."""
    from llmvirt.errors import UsageError
    from llmvirt.learn.train import split

    cfg = cfg or RlConfig()
    if cfg.mode not in bf.MODES:
        raise UsageError(f"unknown --mode {cfg.mode!r}: use {', '.join(bf.MODES)}")
    if cfg.iters < 1:
        raise UsageError("--iters must be at least 1")
    pairs = []
    for p in paths:
        tr = load_trace(p)
        pairs.append((tr, split(tr.names, TRAIN_FRACTION)[0]))
        log(f"{p.name}: {pairs[-1][1].size} training VMs of {len(tr.names)}")
    record = train(pairs, out, cfg, log=log)
    return record


TRAIN_FRACTION = 0.6  #: the split every head uses: VMs with sha256(name) < 0.6 train, the rest is held back


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


def _inputs(envs: list[BalanceEnv], forecaster: bf.Forecaster, cfg: RlConfig
            ) -> tuple[list[tuple[BalanceEnv, bf.Candidates]], dict[str, np.ndarray]]:
    """Every fleet's candidates, and the network's padded inputs: features, fleet figures, mask, prior."""
    parts = [(env, bf.candidates(env.state(), forecaster, cfg.mode, cfg.prior_threshold)) for env in envs]
    n = _n(parts)
    x = {"feats": np.concatenate([_pad(c.features, n) for _, c in parts]),
         "glob": np.concatenate([c.global_features for _, c in parts]),
         "mask": np.concatenate([_pad(c.noop_mask, n + 1) for _, c in parts]),
         "prior": np.concatenate([_pad(bf.prior_logits(c, cfg.prior_threshold, *cfg.prior_shape), n + 1, -np.inf)
                                  for _, c in parts])}
    return parts, x


def _forward(model: ActorCritic, x: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    t = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(v) for k, v in x.items()}
    return model(t["feats"], t["glob"], t["mask"], t["prior"])


KEYS = ("feats", "glob", "mask", "prior")  #: the network's inputs, as stored per step


def _rollout(envs: list[BalanceEnv], model: ActorCritic, forecaster: bf.Forecaster, teacher: BalanceActor | None,
             cfg: RlConfig, rng: np.random.Generator) -> tuple[dict[str, Any], float]:
    """``cfg.rollout`` steps of every fleet; sampled from the policy, or the teacher's choices (warm start)."""
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: one thread beats two contending with numpy
    # (2,100-2,600 decision steps/s against 1,100-1,400 with two)
    store: dict[str, list[np.ndarray]] = {k: [] for k in (*KEYS, "act", "logp", "val", "rew", "done")}
    episode_costs: list[float] = []
    for _ in range(cfg.rollout):
        parts, x = _inputs(envs, forecaster, cfg)
        with torch.no_grad():
            logits, value = _forward(model, x)
        if teacher is not None:
            act = np.concatenate([teacher.logits(c).argmax(axis=1) for _, c in parts])
        else:
            g = rng.gumbel(size=logits.shape).astype(np.float32)
            act = (logits.numpy() + g).argmax(axis=1)
        logp = torch.log_softmax(logits, dim=1).numpy()[np.arange(act.size), act]
        rews, dones, off = [], [], 0
        for env, c in parts:
            n = c.mask.shape[0]
            a = act[off:off + n]
            e = np.arange(n)
            pick = np.maximum(a - 1, 0)
            vm = np.where(a > 0, c.vm[e, pick], -1)
            dst = np.where(a > 0, c.dst[e, pick], -1)
            cap = _capacity(env)
            cost, done = env.step(vm, dst)
            if done.any():
                episode_costs += env.finished.cost[done].tolist()
            rews.append(-cost / cap * cfg.reward_scale / 12)
            dones.append(done)
            off += n
        for k, v in (*x.items(), ("act", act), ("logp", logp), ("val", value.numpy()),
                     ("rew", np.concatenate(rews)), ("done", np.concatenate(dones))):
            store[k].append(v)
    with torch.no_grad():
        last_v = _forward(model, _inputs(envs, forecaster, cfg)[1])[1].numpy()
    n_max = max(x.shape[1] for x in store["feats"])
    batch = {"feats": np.stack([_pad(x, n_max) for x in store["feats"]]),
             "mask": np.stack([_pad(x, n_max + 1) for x in store["mask"]]),
             "prior": np.stack([_pad(x, n_max + 1, -np.inf) for x in store["prior"]]),
             **{k: np.stack(store[k]) for k in ("glob", "act", "logp", "val", "rew", "done")}}
    adv = np.zeros_like(batch["rew"])
    gae = np.zeros(batch["rew"].shape[1])
    for t in reversed(range(cfg.rollout)):
        nxt = last_v if t == cfg.rollout - 1 else batch["val"][t + 1]
        nonterm = 1.0 - batch["done"][t]
        delta = batch["rew"][t] + cfg.gamma * nxt * nonterm - batch["val"][t]
        gae = delta + cfg.gamma * cfg.lam * nonterm * gae
        adv[t] = gae
    batch["adv"] = adv
    batch["ret"] = adv + batch["val"]
    batch["n"] = int(batch["act"].size)
    batch["episode_costs"] = episode_costs
    torch.set_num_threads(threads)
    return batch, time.perf_counter() - t0


def _n(parts: list[tuple[BalanceEnv, bf.Candidates]]) -> int:
    return max(c.mask.shape[1] for _, c in parts)


def _pad(a: np.ndarray, n: int, value: float = 0.0) -> np.ndarray:
    """Pad axis 1 to ``n`` with ``value`` (zeros, False for masks)."""
    if a.shape[1] == n:
        return a
    width = [(0, 0)] * a.ndim
    width[1] = (0, n - a.shape[1])
    return np.pad(a, width, constant_values=value)


def _flat(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    out = {}
    for k in (*KEYS, "act", "logp", "adv", "ret"):
        v = batch[k]
        out[k] = torch.from_numpy(v.reshape(-1, *v.shape[2:]))
    return out


def _update(model: ActorCritic, opt: torch.optim.Optimizer, batch: dict[str, Any], cfg: RlConfig,
            rng: np.random.Generator, loss_fn: Any) -> float:
    """``cfg.epochs`` passes of minibatch steps on ``loss_fn(logits, value, batch, idx)``; the last loss."""
    b = _flat(batch)
    total = 0.0
    for _ in range(cfg.epochs):
        for idx in _minibatches(b["act"].shape[0], cfg.minibatch, rng):
            logits, value = _forward(model, {k: b[k][idx] for k in KEYS})
            loss = loss_fn(logits, value, b, idx)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            total = float(loss.detach())
    return total


def _imitate(model: ActorCritic, opt: torch.optim.Optimizer, batch: dict[str, Any], cfg: RlConfig,
             rng: np.random.Generator) -> float:
    def loss(logits: torch.Tensor, value: torch.Tensor, b: dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        vloss = ((value - b["ret"][idx]) ** 2).mean()
        return nn.functional.cross_entropy(logits, b["act"][idx].long()) + cfg.value_coef * vloss

    return _update(model, opt, batch, cfg, rng, loss)


def _ppo_update(model: ActorCritic, opt: torch.optim.Optimizer, batch: dict[str, Any], cfg: RlConfig,
                rng: np.random.Generator) -> float:
    def loss(logits: torch.Tensor, value: torch.Tensor, b: dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        logp_all = torch.log_softmax(logits, dim=1)
        logp = logp_all.gather(1, b["act"][idx].long()[:, None])[:, 0]
        adv = b["adv"][idx]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        ratio = torch.exp(logp - b["logp"][idx])
        pg = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv).mean()
        ent = -(logp_all.exp() * logp_all.clamp(min=-30)).sum(1).mean()
        vloss = ((value - b["ret"][idx]) ** 2).mean()
        return pg + cfg.value_coef * vloss - cfg.entropy * ent

    return _update(model, opt, batch, cfg, rng, loss)


def _minibatches(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    perm = rng.permutation(n)
    return [torch.from_numpy(perm[i:i + size]) for i in range(0, n, size)]
