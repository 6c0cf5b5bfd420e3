"""A scan recovery capped at each VM's vCPUs: the same weights and point, never deciding on demand that cannot come.

A guest's CPU use cannot exceed its vCPUs, yet the MLP's estimate is a reading plus a difference, and nothing
bounds it: CP-SAT may then move VMs for demand no scan could ever show. This writes the checkpoint of ``--from``
again with ``"cap": "vcpus"`` (:attr:`llmvirt.policy.scan_recovery.ScanRecovery.cap`), with the same weights (the
same SHA-256, recorded), trigger and gain, and records the cost of the point with and without the cap on the
recipe's tuning fleets, and how often the cap bound there (``capped.cap_bound``). The point is not chosen again:
the cap is a bound on what the estimate may say, not a setting.

Usage: ``python -m llmvirt.learn.cap_scan_recovery OUT --from DIR --traces TRACE...``
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.errors import UsageError
from llmvirt.learn import train_scan_recovery as tsr
from llmvirt.learn.train_balance_forecast import training_traces
from llmvirt.policy import scan_recovery as sr
from llmvirt.policy.checkpoint import HeadSpec, save_head_arrays
from llmvirt.policy.weights import CheckpointError, load_arrays
from llmvirt.sim.scan_window import ScanWindow
from llmvirt.sim.traces import UsageTrace
from llmvirt.strategies.registry import make_balancer

WRITTEN = ("format_version", "head", "feature_spec", "model", "weights_sha256", "git_commit")
"""Keys the checkpoint writer sets itself; every other key of the source's JSON is kept."""


@dataclass
class Binds:
    """The capped demand of ``rec``, counting where the cap binds: real VM-steps decided on, those the cap lowered,
    and by how many core-steps in all."""

    rec: sr.ScanRecovery  #: the uncapped scan recovery
    vm_steps: int = 0
    lowered: int = 0
    core_steps: float = 0.0

    def demand(self, w: ScanWindow) -> np.ndarray:
        """(E, V) ``rec``'s demand with the cap, counted against its demand without it."""
        plain, capped = self.rec.demand(w), replace(self.rec, cap="vcpus").demand(w)
        real = w.vcpus > 0  # a fleet's padding VMs have none
        lowered = real & (capped < plain)
        self.vm_steps += int(real.sum())
        self.lowered += int(lowered.sum())
        self.core_steps += float((plain - capped)[lowered].sum())
        return capped


def point_costs(rec: sr.ScanRecovery, runs: list[tuple[Any, ...]]) -> tuple[dict[str, float], Binds]:
    """The cost summed over ``runs`` at ``rec``'s trigger and gain, without the cap and with it, and where the cap
    bound in the capped runs."""
    balancer = make_balancer(f"cp-sat:{sr.CPSAT_MOVES}:{sr.CPSAT_PRICE}:{rec.trigger}")
    binds = Binds(rec)
    costs = {name: sum(r["cost"] for tr, cfg, fl in runs for r in tsr.run_on_scans(balancer, demand, tr, fl, cfg))
             for name, demand in (("none", rec.demand), ("vcpus", binds.demand))}
    return costs, binds


def source(src: Path) -> sr.ScanRecovery:
    """The verified, uncapped scan recovery of ``src``; one clear line (UsageError) otherwise."""
    try:
        rec = sr.load(src)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    if rec.cap:
        raise UsageError(f"{src} is already capped ({rec.cap})")
    return rec


def build(src: Path, out: Path, traces: list[tuple[UsageTrace, np.ndarray]], labels: list[str],
          tune: tsr.RecoveryConfig | None = None, log: Any = print) -> dict[str, Any]:
    """Write ``src``'s verified scan recovery to ``out`` with ``"cap": "vcpus"`` and the point's cost on the tuning
    fleets (those of ``tune``, by default the recipe's) of ``traces`` with and without it; returns the metadata."""
    t0 = time.perf_counter()
    rec = source(src)
    arrays, meta = load_arrays(src, sr.STEM, sr.FEATURE_SPEC_VERSION, list(sr.FEATURES), sr.OLDER_SPECS)
    cfg = replace(tune or tsr.RecoveryConfig(), feature_spec=int(meta["feature_spec"]["version"]))
    costs, binds = point_costs(rec, tsr.seeded_fleets(traces, cfg.tune_seeds, cfg))
    bound = {"vm_steps": binds.vm_steps, "lowered": binds.lowered, "core_steps": binds.core_steps}
    log(f"at trigger {rec.trigger:g}, gain {rec.gain:g} on the tuning fleets: {costs}; the cap bound on {bound}")
    kept = {k: v for k, v in meta.items() if k not in WRITTEN}
    new = {**kept, "cap": "vcpus",
           "capped": {"from": str(src), "weights_sha256": meta["weights_sha256"], "tuning_costs": costs,
                      "cap_bound": bound,
                      "tuning": {"traces": labels, "seeds": list(cfg.tune_seeds)},
                      "wall_s": time.perf_counter() - t0}}
    spec = HeadSpec(sr.STEM, cfg.feature_spec, cfg.features(), lambda m: None)  # type: ignore[arg-type,return-value]
    save_head_arrays(arrays, out, spec, meta["model"], new)
    return new


def main() -> None:
    """``python -m llmvirt.learn.cap_scan_recovery OUT --from DIR --traces TRACE...``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--from", dest="src", type=Path, required=True)
    ap.add_argument("--traces", type=Path, nargs="+", required=True)
    args = ap.parse_args()
    try:
        source(args.src)  # before the traces are read: a wrong directory is refused at once
        build(args.src, args.out, training_traces(args.traces), [p.name for p in args.traces])
    except UsageError as exc:
        raise SystemExit(f"llmvirt: {exc}") from None


if __name__ == "__main__":
    main()
