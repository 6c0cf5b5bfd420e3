"""An ensemble scan recovery: the mean of several trained checkpoints' estimates, its point chosen like theirs.

Each training seed of :mod:`llmvirt.learn.train_scan_recovery` fits the same recipe to the same samples from another
initialisation, and their estimates differ (R2 of the difference 0.394 and 0.399 on the training samples). The mean
of two squared-error fits has no larger squared error than their average, so an ensemble is the cheapest way to a
steadier estimate: no new training, the members' weights stacked in one checkpoint (``memberK.`` prefixes, read by
:class:`llmvirt.policy.scan_recovery.DemandEstimator`). CP-SAT's trigger and the gain are chosen from the same grid
on the same tuning fleets as each member's (:func:`llmvirt.learn.train_scan_recovery.choose`).

Usage: ``python -m llmvirt.learn.ensemble_scan_recovery OUT --members DIR DIR... --traces TRACE...``
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.errors import UsageError
from llmvirt.learn import train_scan_recovery as tsr
from llmvirt.learn.train_balance_forecast import training_traces
from llmvirt.policy import scan_recovery as sr
from llmvirt.policy.checkpoint import HeadSpec, save_head_arrays
from llmvirt.policy.weights import load_arrays
from llmvirt.sim.traces import UsageTrace


def build(members: list[Path], out: Path, traces: list[tuple[UsageTrace, np.ndarray]], labels: list[str],
          tune: tsr.RecoveryConfig | None = None, log: Any = print) -> dict[str, Any]:
    """Stack the scan recoveries of ``members`` (one feature spec, verified), choose (trigger, gain) on the tuning
    fleets (those of ``tune``, by default the recipe's) of ``traces`` (each with its training VMs) and write the
    ensemble's checkpoint to ``out``; returns its metadata."""
    t0 = time.perf_counter()
    if len(members) < 2:
        raise UsageError("an ensemble needs at least two members")
    loaded = [load_arrays(d, sr.STEM, sr.FEATURE_SPEC_VERSION, list(sr.FEATURES), sr.OLDER_SPECS) for d in members]
    specs = {m["feature_spec"]["version"] for _, m in loaded}
    if len(specs) != 1:
        raise UsageError(f"the members were trained on different feature specs {sorted(specs)}")
    version = specs.pop()
    if any(m.get("quantiles") for _, m in loaded):
        raise UsageError("an ensemble's members estimate the mean: quantile checkpoints are not ensembled")
    arrays = sr.ensemble_arrays([a for a, _ in loaded])
    cfg = replace(tune or tsr.RecoveryConfig(), feature_spec=version)
    trigger, gain, costs = tsr.choose(sr.DemandEstimator(arrays), traces, cfg, log)
    meta = {"trigger": trigger, "gain": gain, "grid_costs": costs,
            "members": [{"from": str(d), "weights_sha256": m["weights_sha256"], "seed": m["config"]["seed"],
                         "grid_costs": m["grid_costs"]} for d, (_, m) in zip(members, loaded, strict=True)],
            "tuning": {"traces": labels, "seeds": list(cfg.tune_seeds)},
            "wall_s": time.perf_counter() - t0}
    # never read back through torch: DemandEstimator reads the stacked arrays, so there is no module to build
    spec = HeadSpec(sr.STEM, version, cfg.features(), lambda m: None)  # type: ignore[arg-type,return-value]
    first = loaded[0][1]["model"]
    save_head_arrays(arrays, out, spec, {**first, "members": len(members)}, meta)
    return meta


def main() -> None:
    """``python -m llmvirt.learn.ensemble_scan_recovery OUT --members DIR... --traces TRACE...``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--members", type=Path, nargs="+", required=True)
    ap.add_argument("--traces", type=Path, nargs="+", required=True)
    args = ap.parse_args()
    try:
        build(args.members, args.out, training_traces(args.traces), [p.name for p in args.traces])
    except UsageError as exc:
        raise SystemExit(f"llmvirt: {exc}") from None


if __name__ == "__main__":
    main()
