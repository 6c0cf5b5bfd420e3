"""Training the balance forecaster: each VM's next-step change, fitted on training VMs, judged by the loop's cost.

Recipe (``llmvirt train --head balance-forecast``), reproducible from its seed:

1. **Samples**: every step of every training VM (``sim.split``) of every trace given, with a full hour behind it:
   the inputs of :data:`llmvirt.policy.balance_forecast.FEATURES` and the next step's change in CPU demand.
2. **Fit**: a 64x64 ReLU MLP on squared error (Adam, ``epochs`` passes of 4,096-sample batches), inputs divided
   by their standard deviation (stored as ``scale``). The squared error's minimiser is the mean change, which
   is what a sum over a host's VMs needs (a quantile of each VM does not add up to the host's).
3. **Judged by the loop**: the loop's trigger and the forecast's gain are chosen from :data:`GRID` by the summed
   balance cost on fleets of training VMs (seeds :data:`TUNE_SEEDS`; one host size and mixed sizes; every
   trace). Gain 0 is the fallback itself, so the recipe can choose not to use the forecast.

Writes ``balance_forecast.safetensors`` and ``.json`` (the choice, every grid point's cost, the data) and the
learning curve ``balance_forecast_curve.csv`` (epoch, training loss, R2 of the change on the training samples) and
``balance_forecast_curve.png`` (the fit per epoch, and the loop's cost per gain and trigger).
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmvirt.policy import balance_forecast as bfc
from llmvirt.policy.checkpoint import HeadSpec, save_head
from llmvirt.sim.balance_env import HISTORY, BalanceEnv, EnvConfig, Fleet, draw_fleet, trace_pool
from llmvirt.sim.fleet_shapes import MIXED
from llmvirt.sim.split import TRAIN_FRACTION, split
from llmvirt.sim.traces import UsageTrace, load_usage

TUNE_SEEDS = (1000, 1001)  #: fleets of training VMs the choice is made on (the benchmarks' tuning seeds)
SHAPES = {"identical": (EnvConfig(), 16), "mixed": (MIXED, 8)}  #: fleet shape -> (config, fleets a seed)
GRID = tuple((th, g) for th in (0.9, 1.0, 1.1) for g in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0))  #: (trigger, gain) choices


@dataclass(frozen=True)
class ForecastConfig:
    """The recipe's settings."""

    seed: int = 0  #: torch and sampling seed
    epochs: int = 4  #: passes over the samples
    hidden: int = 64  #: units per hidden layer
    lr: float = 1e-3  #: Adam's step
    tune_seeds: tuple[int, ...] = TUNE_SEEDS  #: fleets the trigger and gain are chosen on
    horizons: tuple[int, ...] = (1,)  #: steps ahead the forecast change may average over; chosen like the gain


class ChangeNet(nn.Module):
    """The MLP :class:`llmvirt.policy.balance_forecast.ChangeForecaster` runs, with its input scale."""

    def __init__(self, n_in: int, hidden: int, n_out: int = 1) -> None:
        """``n_in`` inputs, two hidden layers of ``hidden``, ``n_out`` outputs (more than one: quantiles)."""
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_out))
        self.register_buffer("scale", torch.ones(n_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted change per row of unscaled inputs: (rows,), or (rows, n_out) with several outputs."""
        out = self.net(x / self.scale)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def samples(trace: UsageTrace, vms: np.ndarray, mhz_per_core: float = 2600.0,
            horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, change in cores) of every step of ``vms`` with an hour behind it and ``horizon`` steps after; the
    change is the mean demand over the next ``horizon`` steps minus the demand now (1: the next step's change)."""
    cpu = trace.cpu_mhz[vms].astype(np.float64) / mhz_per_core
    steps = np.arange(HISTORY - 1, cpu.shape[1] - horizon)
    hist = np.stack([cpu[:, steps - k] for k in range(HISTORY - 1, -1, -1)], axis=-1)
    vcpus = np.broadcast_to(trace.vcpus[vms].astype(np.float64)[:, None], hist.shape[:2])
    x = bfc.inputs(hist, vcpus).reshape(-1, len(bfc.FEATURES))
    ahead = np.mean([cpu[:, steps + k] for k in range(1, horizon + 1)], axis=0)
    return x, (ahead - cpu[:, steps]).ravel().astype(np.float32)


def fit(x: np.ndarray, y: np.ndarray, cfg: ForecastConfig,
        quantiles: tuple[float, ...] = ()) -> tuple[ChangeNet, list[dict[str, float]]]:
    """The MLP fitted to ``y`` (squared error, or with ``quantiles`` one output per quantile by pinball loss); the
    curve: per epoch, mean training loss and R2 on every sample afterwards (of the quantile nearest the median)."""
    if quantiles:
        return _fit_quantiles(x, y, cfg, quantiles)
    torch.manual_seed(cfg.seed)
    net = ChangeNet(x.shape[1], cfg.hidden)
    net.scale.copy_(torch.as_tensor(x.std(axis=0) + 1e-6))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(cfg.seed)
    curve = []
    for epoch in range(cfg.epochs):
        losses = []
        for idx in torch.randperm(len(xt), generator=gen).split(4096):
            loss = ((net(xt[idx]) - yt[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        with torch.no_grad():
            r2 = 1.0 - float(((net(xt) - yt) ** 2).mean() / (yt ** 2).mean())
        curve.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "r2": r2})
    return net, curve


def _fit_quantiles(x: np.ndarray, y: np.ndarray, cfg: ForecastConfig,
                   quantiles: tuple[float, ...]) -> tuple[ChangeNet, list[dict[str, float]]]:
    """:func:`fit` with one output per quantile, by pinball loss summed over them."""
    torch.manual_seed(cfg.seed)
    net = ChangeNet(x.shape[1], cfg.hidden, len(quantiles))
    net.scale.copy_(torch.as_tensor(x.std(axis=0) + 1e-6))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    tau = torch.as_tensor(quantiles, dtype=xt.dtype)
    mid = int(np.argmin(np.abs(np.asarray(quantiles) - 0.5)))
    gen = torch.Generator().manual_seed(cfg.seed)
    curve = []
    for epoch in range(cfg.epochs):
        losses = []
        for idx in torch.randperm(len(xt), generator=gen).split(4096):
            d = yt[idx, None] - net(xt[idx])
            loss = torch.maximum(tau * d, (tau - 1) * d).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        with torch.no_grad():
            r2 = 1.0 - float(((net(xt)[:, mid] - yt) ** 2).mean() / (yt ** 2).mean())
        curve.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "r2": r2})
    return net, curve


def tuning_fleets(traces: list[tuple[UsageTrace, np.ndarray]], seeds: tuple[int, ...]) -> list[tuple[Any, ...]]:
    """(trace, config, fleets) for every trace, fleet shape and seed: the fleets the choice is made on."""
    out = []
    for trace, vms in traces:
        for cfg, n in SHAPES.values():
            pool_cpu, vcpus, mcap, _ = trace_pool(trace, cfg.mhz_per_core)
            for seed in seeds:
                rng = np.random.default_rng(seed)
                out.append((trace, cfg, [draw_fleet(rng, pool_cpu, vcpus, mcap, cfg, vms) for _ in range(n)]))
    return out


def loop_cost(loop: Any, trace: UsageTrace, cfg: EnvConfig, fleets: list[Fleet]) -> float:
    """The balance cost of ``loop`` (anything with ``act``) summed over ``fleets``, one day each."""
    env = BalanceEnv(trace, len(fleets), cfg, fleets=fleets)
    for _ in range(cfg.episode_steps):
        vm, dst, _, _ = loop.act(env.state())
        env.step(vm, dst)
    return float(env.metrics.cost.sum())


def choose(forecaster: bfc.ChangeForecaster,
           runs: list[tuple[Any, ...]]) -> tuple[tuple[float, float], dict[str, float]]:
    """The (trigger, gain) of :data:`GRID` with the lowest summed cost on ``runs``, and every point's cost."""
    costs = {}
    for th, gain in GRID:
        loop = bfc.ForecastLoop(forecaster, th, gain)
        costs[f"{th}:{gain}"] = sum(loop_cost(loop, tr, cfg, fl) for tr, cfg, fl in runs)
    best = min(costs, key=costs.__getitem__)
    th, gain = (float(v) for v in best.split(":"))
    return (th, gain), costs


def _arrays(net: ChangeNet) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}


def fit_and_choose(traces: list[tuple[UsageTrace, np.ndarray]], cfg: ForecastConfig, horizon: int,
                   log: Any = print) -> dict[str, Any]:
    """One horizon's forecaster fitted, and its (trigger, gain) chosen on the tuning fleets."""
    parts = [samples(tr, vms, horizon=horizon) for tr, vms in traces]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    net, curve = fit(x, y, cfg)
    for row in curve:
        log(f"horizon {horizon}, epoch {row['epoch']}: loss {row['loss']:.4f}, R2 of the change {row['r2']:.4f}")
    (th, gain), costs = choose(bfc.ChangeForecaster(_arrays(net)), tuning_fleets(traces, cfg.tune_seeds))
    log(f"horizon {horizon}: chose trigger {th}, gain {gain}: cost {costs[f'{th}:{gain}']:.1f} on the tuning "
        f"fleets (fallback at trigger 1.0: {costs['1.0:0.0']:.1f})")
    return {"net": net, "curve": curve, "threshold": th, "gain": gain, "grid_costs": costs, "samples": int(y.size),
            "cost": costs[f"{th}:{gain}"]}


def train(traces: list[tuple[UsageTrace, np.ndarray]], out: Path, cfg: ForecastConfig, labels: list[str],
          log: Any = print) -> dict[str, Any]:
    """Fit one forecaster per horizon, keep the one whose loop costs least on the tuning fleets (the first on a
    tie), write the checkpoint and curve into ``out``; returns the training record."""
    t0 = time.perf_counter()
    fits = {h: fit_and_choose(traces, cfg, h, log) for h in cfg.horizons}
    horizon = min(fits, key=lambda h: fits[h]["cost"])
    best = fits[horizon]
    net, curve, th, gain, costs = (best[k] for k in ("net", "curve", "threshold", "gain", "grid_costs"))
    record = {"threshold": th, "gain": gain, "horizon": horizon, "grid_costs": costs, "curve": curve,
              "samples": best["samples"], "horizon_costs": {str(h): f["cost"] for h, f in fits.items()},
              "wall_s": time.perf_counter() - t0}
    spec = HeadSpec(bfc.STEM, bfc.FEATURE_SPEC_VERSION, bfc.FEATURES, lambda m: ChangeNet(m["n_in"], m["hidden"]))
    meta = {"threshold": th, "gain": gain, "horizon": horizon, "horizon_costs": record["horizon_costs"],
            "config": asdict(cfg), "grid_costs": costs,
            "training_data": [{"trace": label, "split": "sha256(name) < train_fraction", "train_vms": int(v.size)}
                              for label, (_, v) in zip(labels, traces, strict=True)],
            "tuning": {"seeds": list(cfg.tune_seeds), "shapes": {k: n for k, (_, n) in SHAPES.items()}},
            "samples": record["samples"], "wall_s": record["wall_s"]}
    save_head(net, out, spec, {"n_in": len(bfc.FEATURES), "hidden": cfg.hidden}, meta)
    with (out / f"{bfc.STEM}_curve.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "loss", "r2"])
        w.writeheader()
        w.writerows(curve)
    plot(out)
    return record


def plot(out: Path) -> Path:
    """``balance_forecast_curve.png`` from a checkpoint's curve and grid: the fit per epoch, and the loop's cost
    on the tuning fleets per gain and trigger (gain 0: the fallback)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (out / f"{bfc.STEM}_curve.csv").open() as fh:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    grid = json.loads((out / f"{bfc.STEM}.json").read_text())["grid_costs"]
    fig, (fit_ax, loop_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    fit_ax.plot([r["epoch"] for r in rows], [r["r2"] for r in rows], marker="o")
    fit_ax.set(xlabel="epoch", ylabel="R2 of the next-step change", title="fit on training VMs")
    for th in sorted({k.split(":")[0] for k in grid}):
        pts = sorted((float(k.split(":")[1]), v) for k, v in grid.items() if k.split(":")[0] == th)
        loop_ax.plot([g for g, _ in pts], [c for _, c in pts], marker="o", label=f"trigger {th}")
    loop_ax.set(xlabel="forecast gain (0: the fallback)", ylabel="cost, core-hours", title="loop on tuning fleets")
    loop_ax.legend()
    fig.tight_layout()
    png = out / f"{bfc.STEM}_curve.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def training_traces(paths: list[Path]) -> list[tuple[UsageTrace, np.ndarray]]:
    """Each trace file (Bitbrains or generic) with the indices of its training VMs."""
    traces = [load_usage(p) for p in paths]
    return [(tr, split(tr.names, TRAIN_FRACTION)[0]) for tr in traces]


def train_files(paths: list[Path], out: Path, cfg: ForecastConfig, log: Any = print) -> dict[str, Any]:
    """:func:`train` on the training VMs of each trace file (Bitbrains or generic)."""
    return train(training_traces(paths), out, cfg, [p.name for p in paths], log)
