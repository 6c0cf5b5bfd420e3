"""Which inputs and which horizon make a Bitbrains VM's coming CPU demand predictable (issue 15)?

Training VMs only: each predictor is fitted on the first half of a trace's steps and scored on the second half
(the held-back VMs are not read). The predictor is the 64x64 MLP of bench/balance_predictability.py, fitted
from two seeds. Two questions:

- **Inputs**: R2 of the next-step change from the VM's last hour and vCPUs, and with each of: its last day's
  mean, spread, peak and trough (against now); a fleet signal (the mean change of the ~60 VMs of a random group
  sampled at the same time, over the last 1, 2, 3 and 6 steps, and the group's demand now against its hour
  mean); the time of day; all three.
- **Horizon**: R2 (centred) of the mean demand over the next H steps minus now, for H = 1, 3, 6, 12 (one seed).

Usage: python bench/balance_forecast_inputs.py [--out bench/balance_forecast_inputs.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from balance_predictability import DAY, HOUR, mlp, samples  # noqa: E402

from llmvirt.bench.balance_rl import trace_families  # noqa: E402
from llmvirt.sim.split import TRAIN_FRACTION, split  # noqa: E402
from llmvirt.sim.traces import load_usage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"last hour": (), "+ last day": ("day",), "+ fleet": ("fleet",), "+ time of day": ("tod",),
         "+ all three": ("day", "fleet", "tod")}


def with_inputs(cpu: np.ndarray, vcpus: np.ndarray, steps: np.ndarray, groups: np.ndarray,
                kinds: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, next-step change): the last hour and vCPUs, plus the columns of ``kinds``."""
    x, y = samples(cpu, vcpus, steps, False)
    now, cols = cpu[:, steps], []
    if "day" in kinds:
        win = np.stack([cpu[:, steps - k] for k in range(DAY)], -1)
        cols += [win.mean(-1) - now, win.std(-1), win.max(-1) - now, win.min(-1) - now]
    if "fleet" in kinds:
        member = np.zeros((groups.max() + 1, cpu.shape[0]))
        member[groups, np.arange(cpu.shape[0])] = 1.0
        mean = (member / member.sum(1, keepdims=True)) @ cpu  # each group's mean demand at each step
        g_now = mean[:, steps]
        cols += [(g_now - mean[:, steps - k])[groups] for k in (1, 2, 3, 6)]
        cols.append((g_now - np.stack([mean[:, steps - k] for k in range(HOUR)], -1).mean(-1))[groups])
    if "tod" in kinds:
        phase = np.broadcast_to(2 * np.pi * (steps % DAY) / DAY, now.shape)
        cols += [np.sin(phase), np.cos(phase)]
    return (np.c_[x, np.stack(cols, -1).reshape(-1, len(cols))] if cols else x), y


def r2(xf: np.ndarray, yf: np.ndarray, xt: np.ndarray, yt: np.ndarray, seed: int) -> float:
    """Centred R2 on the later half of the MLP fitted on the earlier half."""
    scale = xf.std(0) + 1e-6
    net = mlp(xf / scale, yf, seed)
    with torch.no_grad():
        pred = net(torch.as_tensor(xt / scale, dtype=torch.float32)).squeeze(-1).numpy()
    return float(1 - ((yt - pred) ** 2).mean() / ((yt - yt.mean()) ** 2).mean())


def family(path: Path) -> dict[str, Any]:
    """Both questions on one trace's training VMs."""
    trace = load_usage(path)
    vms, _ = split(trace.names, TRAIN_FRACTION)
    cpu = (trace.cpu_mhz[vms] / 2600.0).astype(np.float64)
    vcpus = trace.vcpus[vms].astype(np.float64)
    groups = np.random.default_rng(0).permutation(len(vms)) % max(1, len(vms) // 60)
    mid = cpu.shape[1] // 2
    out: dict[str, Any] = {"training_vms": int(vms.size), "inputs": {}, "horizon": {}}
    for name, kinds in KINDS.items():
        (xf, yf), (xt, yt) = (with_inputs(cpu, vcpus, s, groups, kinds)
                              for s in (np.arange(DAY + 1, mid), np.arange(mid, cpu.shape[1] - 1)))
        out["inputs"][name] = [r2(xf, yf, xt, yt, seed) for seed in (0, 1)]
    for h in (1, 3, 6, 12):
        fit_steps, test_steps = np.arange(DAY + 1, mid - h), np.arange(mid, cpu.shape[1] - h)
        (xf, _), (xt, _) = samples(cpu, vcpus, fit_steps, False), samples(cpu, vcpus, test_steps, False)
        yf, yt = ((np.mean([cpu[:, s + k] for k in range(1, h + 1)], 0) - cpu[:, s]).ravel()
                  for s in (fit_steps, test_steps))
        out["horizon"][str(h)] = r2(xf, yf, xt, yt, 0)
    return out


def main() -> None:
    """Both Bitbrains months; the tables; the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench/balance_forecast_inputs.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    doc: dict[str, Any] = {"date": date.today().isoformat(), "families": {}}
    for name, path in trace_families(ROOT.parent / "shared/traces").items():
        fam = doc["families"][name] = family(path)
        print(f"\n{name} ({fam['training_vms']} training VMs, later half)\n| inputs | R2 of the next-step change, "
              "fit seeds 0 / 1 |\n|---|---|")
        for k, (a, b) in fam["inputs"].items():
            print(f"| {k} | {a:.3f} / {b:.3f} |")
        print("| horizon H (steps) | R2 of the mean over the next H steps minus now |\n|---|---|")
        for h, v in fam["horizon"].items():
            print(f"| {h} | {v:.3f} |")
    args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
