"""Fine-tuning the active policy on outcomes recorded on real hosts (``llmvirt train --from-store``).

Offline, from the store only:

- **placement head**: every scored migration carries the candidates and features it was chosen
  from. Its reward minus the mean reward of the recorded migrations is the advantage; the loss
  raises the log-probability of better-than-average choices and lowers the others.
- **balloon head**: every VM's recorded memory use is an outcome of the head's forecast: the
  pinball loss on (features at a scan, use at the next scan). Its operating point is then chosen
  again by replaying the recorded history in the memory scenario, with the training rule.
- **regularisation**, so that a handful of samples cannot wreck the policy: the store's own
  history replayed in the simulator gives imitation targets for the placement head (the
  look-ahead planner of :mod:`llmvirt.learn.train`) and the base head's own forecasts for the
  balloon head; and an L2 pull toward the base weights.

The result is a new checkpoint directory (the pinning head is copied unchanged), registered as an
inactive version; ``llmvirt policy promote`` decides whether it becomes active.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from torch import nn

from llmvirt.errors import UsageError
from llmvirt.learn.train import TrainConfig, collect
from llmvirt.learn.train_balloon import BalloonTrainConfig, calibrate, pinball, trace_features
from llmvirt.policy import balloon_head, checkpoint
from llmvirt.policy.balloon_head import OperatingPoint
from llmvirt.sim.traces import UsageTrace
from llmvirt.store.schema import ActionRow, OutcomeRow


@dataclass
class FinetuneConfig:
    """Hyper-parameters of fine-tuning, one place."""

    seed: int = 0  #: everything random derives from this
    steps: int = 200  #: gradient steps per head
    lr: float = 1e-3  #: Adam learning rate
    anchor: float = 1.0  #: weight of the L2 pull toward the base weights
    replay: float = 1.0  #: weight of the simulator-replay regulariser
    replay_samples: int = 200  #: placement imitation samples from the replay


def _anchor(model: nn.Module, base: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(((p - base[n]) ** 2).sum() for n, p in model.named_parameters())  # type: ignore[return-value]


def _padded(feats: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate lists of different lengths as one (N, C, F) tensor and its (N, C) validity mask."""
    n, c = len(feats), max(f.shape[0] for f in feats)
    x = np.zeros((n, c, feats[0].shape[1]), dtype=np.float32)
    mask = np.zeros((n, c), dtype=bool)
    for i, f in enumerate(feats):
        x[i, :f.shape[0]], mask[i, :f.shape[0]] = f, True
    return torch.from_numpy(x), torch.from_numpy(mask)


def _log_probs(model: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(model(x).masked_fill(~mask, float("-inf")), dim=1)


def finetune_placement(model: nn.Module, recorded: list[tuple[np.ndarray, int, float]],
                       replay: list[tuple[np.ndarray, np.ndarray]], cfg: FinetuneConfig) -> dict[str, float]:
    """Advantage-weighted update on ``recorded`` (features, chosen, reward) plus imitation of ``replay``."""
    torch.manual_seed(cfg.seed)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    rewards = np.array([r for _, _, r in recorded], dtype=np.float64)
    adv = torch.tensor(rewards - rewards.mean() if rewards.size else rewards, dtype=torch.float32)
    rec = _padded([f.astype(np.float32) for f, _, _ in recorded]) if recorded else None
    chosen = torch.tensor([c for _, c, _ in recorded], dtype=torch.long)
    rep = _padded([f.astype(np.float32) for f, _ in replay]) if replay else None
    if rep is not None:
        target = torch.zeros(rep[1].shape)
        for i, (_, t) in enumerate(replay):
            target[i, :len(t)] = torch.from_numpy(t).float()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    loss_val = 0.0
    for _ in range(cfg.steps if (recorded or replay) else 0):
        loss = cfg.anchor * _anchor(model, base)
        if rec is not None:
            logp = _log_probs(model, *rec).gather(1, chosen[:, None]).squeeze(1)
            loss = loss - (adv * logp).mean()
        if rep is not None:
            logp = _log_probs(model, *rep).masked_fill(~rep[1], 0.0)
            loss = loss - cfg.replay * (target * logp).sum(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_val = float(loss.detach())
    model.eval()
    return {"placement_recorded": len(recorded), "placement_replay": len(replay), "placement_loss": loss_val}


def finetune_balloon(model: nn.Module, recorded: tuple[np.ndarray, np.ndarray],
                     replay_x: np.ndarray | None, cfg: FinetuneConfig) -> dict[str, float]:
    """Pinball loss on recorded (features, next use), held near the base head's own forecasts on ``replay_x``."""
    torch.manual_seed(cfg.seed)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    teacher = copy.deepcopy(model).eval()
    x, y = (torch.from_numpy(recorded[0].astype(np.float32)), torch.from_numpy(recorded[1].astype(np.float32)))
    rx = torch.from_numpy(replay_x.astype(np.float32)) if replay_x is not None and len(replay_x) else None
    with torch.no_grad():
        rt = teacher(rx) if rx is not None else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    model.train()
    loss_val = 0.0
    for _ in range(cfg.steps if len(x) else 0):
        b = torch.from_numpy(rng.integers(0, len(x), min(len(x), 1024)))
        loss = pinball(model(x[b]), y[b]) + cfg.anchor * 1e-3 * _anchor(model, base)
        if rx is not None and rt is not None:
            loss = loss + cfg.replay * ((model(rx) - rt) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_val = float(loss.detach())
    model.eval()
    return {"balloon_recorded": int(len(x)), "balloon_loss": loss_val}


def recalibrate(model: nn.Module, replay: UsageTrace, cfg: FinetuneConfig) -> tuple[OperatingPoint, dict]:
    """Choose the balloon head's operating point again on the replayed history (the rule of training:
    the most memory reclaimed at no more than 0.7x MOM's guest pressure on the same VMs)."""
    return calibrate(model, replay, BalloonTrainConfig(seed=cfg.seed))  # type: ignore[arg-type]


def recorded_migrations(engine: Engine) -> list[tuple[np.ndarray, int, float]]:
    """(candidate features, chosen index, reward) of every scored migration that carries its decision."""
    with Session(engine) as s:
        rows = s.execute(select(ActionRow.params, OutcomeRow.reward)
                         .join(OutcomeRow, OutcomeRow.action_id == ActionRow.id)
                         .where(ActionRow.kind == "migrate", OutcomeRow.success.is_(True))).all()
    out = []
    for params, r in rows:
        d = (params or {}).get("decision")
        if d and d.get("features"):
            out.append((np.asarray(d["features"], dtype=np.float32), int(d["chosen"]), float(r)))
    return out


def from_store(engine: Engine, base: Path, out: Path, cfg: FinetuneConfig, parent: str) -> dict[str, Any]:
    """Fine-tune the policy in ``base`` on the store's outcomes and history; write it to ``out``."""
    from llmvirt.sim.store_history import scan_interval, store_trace

    model, meta = checkpoint.load(base)
    bhead = balloon_head.load(base)
    trace = store_trace(engine, scan_interval(engine))  # a clear UsageError with fewer than two scans
    recorded = recorded_migrations(engine)
    replay: list[tuple[np.ndarray, np.ndarray]] = []
    steps = trace.cpu_mhz.shape[1]
    if steps >= 4:
        horizon = max(1, min(24, steps // 2))
        replay = collect(trace, TrainConfig(seed=cfg.seed, samples=cfg.replay_samples, horizon=horizon))
    feats, use = trace_features(trace)
    x, y = feats[:, :-1].reshape(-1, feats.shape[2]), use[:, 1:].reshape(-1)
    if len(x) == 0 and not recorded:
        raise UsageError("the store has no recorded outcomes or history to learn from yet: scan, apply, scan")
    n = model.n_features  # a checkpoint of an older feature spec reads the first n columns of today's features
    recorded = [(f[:, :n], c, r) for f, c, r in recorded if f.shape[1] >= n]
    replay = [(f[:, :n], target) for f, target in replay]
    metrics = {**finetune_placement(model, recorded, replay, cfg),
               **finetune_balloon(bhead.model, (x, y), x, cfg)}
    point, calib = recalibrate(bhead.model, trace, cfg)
    bhead.meta["operating_point"] = asdict(point)
    metrics["balloon_operating_point"] = asdict(point)
    metrics["balloon_replay"] = calib
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base, out)
    lineage = {"parent": parent, "method": "fine-tuned on recorded outcomes (llmvirt train --from-store)",
               "finetune": {**asdict(cfg), **metrics}}
    checkpoint.save(model, out, checkpoint.user_meta(meta) | lineage)
    checkpoint.save_head(bhead.model, out, balloon_head.SPEC, bhead.model.config(),
                         checkpoint.user_meta(bhead.meta) | lineage)
    return metrics
