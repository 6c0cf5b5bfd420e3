"""The second training method, approximate policy iteration with exact simulated counterfactuals (``--method
api``; see :mod:`llmvirt.learn.train_balance`)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from llmvirt.learn.balance_eval import Run, meta, validate_actor, validation_fleets
from llmvirt.learn.balance_model import ActorCritic, RlConfig, actor_arrays
from llmvirt.policy import balance_features as bf
from llmvirt.policy.balance_policy import BalanceActor
from llmvirt.sim.balance_env import BalanceEnv, EnvConfig, Fleet
from llmvirt.sim.traces import UsageTrace


def train_api(run: Run, fc_arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Approximate policy iteration with simulated rollouts (Lagoudakis & Parr 2003; Bertsekas' rollout).

    Each round: run the current policy (first the fallback) on random fleets of training VMs and sample
    decision states; at each, play out "do nothing" and ``api_candidates`` moves for ``api_horizon`` steps
    with the current policy deciding afterwards (the trace is fixed, so each counterfactual is exact and
    they share the same future demand); regress each move's advantage over doing nothing (cost saved,
    per fleet capacity) on its features. The greedy policy on the fitted advantages is the next round's
    policy: it moves only where a move is predicted to save cost. Optimised on the cost alone; the
    fallback is only where the first round starts and which moves it tries first."""
    traces, cfg, env_cfg, log = run.traces, run.cfg, run.env_cfg, run.log
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    validation = validation_fleets(traces, cfg, env_cfg)
    base = BalanceActor(fc_arrays, meta(cfg), fallback=True)
    start_cost = validate_actor(validation, base)
    log(f"validation cost of the fallback (round 0): {start_cost:.1f}")
    curve: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, np.ndarray] | None, float] = (start_cost, 0, None, 0.0)
    parts: dict[str, list[np.ndarray]] = {"x_moves": [], "y_moves": [], "x_noop": [], "y_noop": []}
    model = ActorCritic()
    for rnd in range(1, cfg.api_rounds + 1):
        t0 = time.perf_counter()
        for ti, (tr, idx) in enumerate(traces):
            snaps = _sample_states(run, (tr, idx), base, rng, seed=cfg.seed * 1000 + 100 * rnd + ti,
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
            actor = BalanceActor(arrays, meta(cfg, head="advantage", margin=margin))
            costs[margin] = validate_actor(validation, actor)
        margin = min(costs, key=lambda m: costs[m])
        cost = costs[margin]
        log(f"round {rnd}: validation cost by margin: " + ", ".join(f"{m}: {c:.1f}" for m, c in costs.items()))
        base = BalanceActor(arrays, meta(cfg, head="advantage", margin=margin))
        curve.append({"round": rnd, "samples": float(n_eval), "fit_loss": loss,
                      "validation_cost": cost, "sample_s": sample_s, "wall_s": time.perf_counter() - run.t_start})
        log(f"round {rnd}: {n_eval} evaluated alternatives, fit loss {loss:.4f}, "
            f"validation cost {cost:.1f} (fallback {start_cost:.1f}), {sample_s:.0f} s of rollouts")
        if cost < best[0] or best[2] is None:
            best = (cost, rnd, arrays, margin)
    assert best[2] is not None
    result = {"wall_s": time.perf_counter() - run.t_start,
              "decision_steps": int(sum(r["samples"] for r in curve[-1:]) * (cfg.api_horizon + 1)),
              "start_validation_cost": start_cost,
              "kept": {"round": best[1], "validation_cost": best[0], "margin": best[3],
                       "rule": "the round with the lowest greedy cost on the validation fleets (training VMs)"}}
    return run.finish(curve, best[2], result, head="advantage", margin=best[3])


def _sample_states(run: Run, pool: tuple[UsageTrace, np.ndarray], policy: BalanceActor, rng: np.random.Generator,
                   seed: int, want: int) -> list[Fleet]:
    """Decision states met while ``policy`` runs random fleets of the VMs ``idx``: mostly where a host is
    busy (85 % of its cores now, or forecast above them), some calm ones (where the answer is to wait)."""
    (trace, idx), cfg, env_cfg = pool, run.cfg, run.env_cfg
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
    cap = np.array([float(np.sum(f.cores)) for f in snaps]) * env_cfg.interval_s / 3600
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
