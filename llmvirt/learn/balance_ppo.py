"""Residual PPO in the CleanRL style over padded, masked candidate sets: rollouts with GAE, the clipped
objective, and the imitation warm start (``--method ppo``, the shipped recipe)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from llmvirt.learn.balance_eval import Run, capacity, make_env, meta, validate, validation_fleets
from llmvirt.learn.balance_model import ActorCritic, RlConfig, actor_arrays
from llmvirt.policy import balance_features as bf
from llmvirt.policy.balance_policy import BalanceActor
from llmvirt.sim.balance_env import BalanceEnv


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


def rollout(envs: list[BalanceEnv], model: ActorCritic, forecaster: bf.Forecaster, teacher: BalanceActor | None,
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
            cap = capacity(env)
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


def imitate(model: ActorCritic, opt: torch.optim.Optimizer, batch: dict[str, Any], cfg: RlConfig,
             rng: np.random.Generator) -> float:
    """One imitation update (cross-entropy on the teacher's choices, value loss) on a batch; the last loss."""

    def loss(logits: torch.Tensor, value: torch.Tensor, b: dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        vloss = ((value - b["ret"][idx]) ** 2).mean()
        return nn.functional.cross_entropy(logits, b["act"][idx].long()) + cfg.value_coef * vloss

    return _update(model, opt, batch, cfg, rng, loss)


def ppo_update(model: ActorCritic, opt: torch.optim.Optimizer, batch: dict[str, Any], cfg: RlConfig,
                rng: np.random.Generator) -> float:
    """One PPO update (clipped objective, value loss, entropy bonus) on a rollout batch; the last loss."""

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


def train_ppo(run: Run, fc_arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Residual PPO from the fallback's prior (the shipped recipe); keeps the iteration with the lowest greedy
    cost on the validation fleets and writes it with ``fc_arrays``'s forecaster. Returns the training record."""
    traces, cfg, env_cfg, log = run.traces, run.cfg, run.env_cfg, run.log
    forecaster = bf.Forecaster(fc_arrays)
    envs = make_env(traces, cfg, env_cfg)
    fallback = BalanceActor(fc_arrays, meta(cfg), fallback=True)
    model = ActorCritic()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    curve: list[dict[str, float]] = []
    steps = 0
    recent: list[float] = []  # episode costs since the last log line
    validation = validation_fleets(traces, cfg, env_cfg)
    best = (float("inf"), -1, actor_arrays(model))
    start_cost = validate(validation, model, fc_arrays, cfg)
    log(f"validation cost at the start (the fallback's prior, network at zero): {start_cost:.1f}")
    for it in range(cfg.bc_iters + cfg.iters):
        bc = it < cfg.bc_iters
        batch, roll_s = rollout(envs, model, forecaster, fallback if bc else None, cfg, rng)
        steps += batch["n"]
        if bc:
            loss = imitate(model, opt, batch, cfg, rng)
        else:
            loss = ppo_update(model, opt, batch, cfg, rng)
        recent += batch["episode_costs"]
        row = {**_row(it, bc, steps, loss, batch, roll_s), "wall_s": time.perf_counter() - run.t_start}
        since_bc = it + 1 - cfg.bc_iters  # PPO iterations done
        if since_bc >= 0 and since_bc % cfg.eval_every == 0 or it == cfg.bc_iters + cfg.iters - 1:
            row["validation_cost"] = validate(validation, model, fc_arrays, cfg)
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
    result = {"decision_steps": steps, "wall_s": time.perf_counter() - run.t_start,
              "start_validation_cost": start_cost,
              "kept": {"iter": best[1], "validation_cost": best[0],
                       "rule": "the iteration with the lowest greedy cost on the validation fleets (training VMs)"}}
    return run.finish(curve, {**fc_arrays, **best[2]}, result)


def _row(it: int, bc: bool, steps: int, loss: float, batch: dict[str, Any], roll_s: float) -> dict[str, float]:
    """One learning-curve row (the validation cost is added where it was measured)."""
    done_cost = batch["episode_costs"]
    return {"iter": it, "phase": 0.0 if bc else 1.0, "steps": float(steps), "loss": loss,
            "reward_mean": float(batch["rew"].mean()),
            "episode_cost": float(np.mean(done_cost)) if done_cost else float("nan"),
            "rollout_steps_per_s": batch["n"] / roll_s}
