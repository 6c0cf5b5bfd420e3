"""How predictable is a Bitbrains VM's next 300 s of CPU demand from what a controller can know (issue 15)?

"What a forecast is worth to the balance loop" showed that knowing every VM's next step exactly would
cut the balance loop's cost by 19-33 %. This script asks how much of that next step is knowable: it
fits predictors of each VM's *change* in demand over the next step, on training VMs only (fit on the
first half of the trace's steps, scored on the second half; the held-back VMs are not read), and
reports:

- **R2** of the predicted change (0 = the last value, which is what the balance loop uses today; 1 =
  the perfect look-ahead);
- **rises caught**: of the steps where a VM rises by more than 1 core (the steps that overload hosts),
  the share where the predictor expected a rise of more than 0.5 core; and the share of its expected
  rises (> 0.5 core) that came true (rise > 0.25 core).

Predictors, each on the VM's last hour (12 samples) as change from now, with its vCPUs:
``linear`` (least squares), ``linear + yesterday`` (adds the same three samples one day earlier, for a
daily rhythm), ``mlp + yesterday`` (a 64x64 MLP on the same inputs, trained on squared error), and the MLP on
the last 3 or 6 hours instead of one (without yesterday).

Usage: python bench/balance_predictability.py [--out bench/balance_predictability.json]
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmvirt.bench.balance_rl import trace_families
from llmvirt.sim.split import TRAIN_FRACTION, split
from llmvirt.sim.traces import load_usage

ROOT = Path(__file__).resolve().parents[1]
DAY = 288  #: 300 s samples a day
HOUR = 12  #: samples of history


def samples(cpu: np.ndarray, vcpus: np.ndarray, steps: np.ndarray, yesterday: bool,
            hour: int = HOUR) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, next-step change) for every VM at each of ``steps``; inputs are changes from now over the last
    ``hour`` samples."""
    now = cpu[:, steps]
    cols = [cpu[:, steps - k] - now for k in range(1, hour)]
    if yesterday:
        cols += [cpu[:, steps + d - DAY] - now for d in (0, 1, 2)]
    cols += [np.broadcast_to(np.log2(np.maximum(vcpus, 1))[:, None], now.shape), now]
    x = np.stack(cols, -1).reshape(-1, len(cols))
    return x, (cpu[:, steps + 1] - now).ravel()


def mlp(x: np.ndarray, y: np.ndarray, seed: int = 0) -> torch.nn.Module:
    """A 64x64 MLP fitted to ``y`` on squared error (Adam, 4 epochs of 4,096-sample batches)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(4):
        for idx in torch.randperm(len(xt), generator=gen).split(4096):
            loss = ((net(xt[idx]).squeeze(-1) - yt[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def score(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """R2 against the last value, and how many of the big rises were expected."""
    big, expected = y > 1.0, pred > 0.5
    return {"r2": float(1 - ((y - pred) ** 2).mean() / (y ** 2).mean()),
            "rises_over_1_core": int(big.sum()),
            "rises_caught": float(expected[big].mean()) if big.any() else 0.0,
            "expected_rises_true": float((y[expected] > 0.25).mean()) if expected.any() else 0.0}


def family(path: Path) -> dict[str, Any]:
    """Every predictor on one trace's training VMs, fitted on the first half of its steps."""
    trace = load_usage(path)
    train_vms, _ = split(trace.names, TRAIN_FRACTION)
    cpu = (trace.cpu_mhz[train_vms] / 2600.0).astype(np.float64)
    vcpus = trace.vcpus[train_vms].astype(np.float64)
    mid = cpu.shape[1] // 2
    fit_steps, test_steps = np.arange(DAY + 1, mid), np.arange(mid, cpu.shape[1] - 1)
    out: dict[str, Any] = {"training_vms": int(train_vms.size), "steps": int(cpu.shape[1])}
    for name, yday in (("linear", False), ("linear + yesterday", True)):
        xf, yf = samples(cpu, vcpus, fit_steps, yday)
        xt, yt = samples(cpu, vcpus, test_steps, yday)
        w, *_ = np.linalg.lstsq(np.c_[xf, np.ones(len(xf))], yf, rcond=None)
        out[name] = score(np.c_[xt, np.ones(len(xt))] @ w, yt)
    scale = xf.std(0) + 1e-6
    net = mlp(xf / scale, yf)
    with torch.no_grad():
        pred = net(torch.as_tensor(xt / scale, dtype=torch.float32)).squeeze(-1).numpy()
    out["mlp + yesterday"] = score(pred, yt)
    for hours in (3, 6):  # a longer history: does more of the past predict the next step?
        xf, yf = samples(cpu, vcpus, fit_steps, False, HOUR * hours)
        xt, yt = samples(cpu, vcpus, test_steps, False, HOUR * hours)
        scale = xf.std(0) + 1e-6
        net = mlp(xf / scale, yf)
        with torch.no_grad():
            pred = net(torch.as_tensor(xt / scale, dtype=torch.float32)).squeeze(-1).numpy()
        out[f"mlp, last {hours} hours"] = score(pred, yt)
    return out


def main() -> None:
    """Both Bitbrains months; a table; the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench/balance_predictability.json")
    args = ap.parse_args()
    doc: dict[str, Any] = {"date": date.today().isoformat(), "families": {}}
    print("| trace (training VMs, later half) | predictor | R2 of next-step change | rises > 1 core "
          "| caught | expected rises that came |")
    print("|---|---|---|---|---|---|")
    for name, path in trace_families(ROOT.parent / "shared/traces").items():
        fam = doc["families"][name] = family(path)
        for pred in ("linear", "linear + yesterday", "mlp + yesterday", "mlp, last 3 hours", "mlp, last 6 hours"):
            s = fam[pred]
            print(f"| {name} | {pred} | {s['r2']:.3f} | {s['rises_over_1_core']} | {100 * s['rises_caught']:.1f} % "
                  f"| {100 * s['expected_rises_true']:.1f} % |")
    args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
