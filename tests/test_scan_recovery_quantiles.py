"""Scan recovery by quantiles (issue 15): one output per quantile of what a saturated host hides, fitted by pinball
loss, the quantile decided on chosen with the gain on the tuning fleets."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_balance_rl import synthetic_trace

from llmvirt.bench.balance_rl import fleets
from llmvirt.errors import UsageError
from llmvirt.learn import ensemble_scan_recovery as esr
from llmvirt.learn import train_scan_recovery as tsr
from llmvirt.policy import scan_recovery as sr
from llmvirt.policy.weights import CheckpointError
from llmvirt.sim.balance_env import EnvConfig
from llmvirt.strategies.registry import make_balancer

QUANTILES = (0.5, 0.9)
TINY = tsr.RecoveryConfig(seed=0, epochs=6, tune_seeds=(0,), sample_seeds=(5, 6), shapes=("identical",),
                          fleets_per_seed=4, quantiles=QUANTILES)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("quantiles")
    meta = tsr.train([(synthetic_trace(), np.arange(80))], out, TINY, ["synthetic"], log=lambda _: None)
    return out, meta


def _samples() -> tuple[np.ndarray, np.ndarray]:
    trace = synthetic_trace(seed=9)
    return tsr.samples([(trace, EnvConfig(), fleets(trace, np.arange(80), 4, 77, EnvConfig()))],
                       len(sr.VM_FEATURES))


def test_each_output_estimates_its_quantile_on_fleets_it_never_saw(trained: tuple[Path, dict]) -> None:
    """On held-out VMs each output has a lower pinball loss at its own quantile than the other output has there,
    and than the reading (a difference of 0); the differences fall below the 0.9 output far more often."""
    rec = sr.load(trained[0])
    est = rec.estimator
    assert est is not None and est.n_out == len(QUANTILES)
    x, y = _samples()
    outs = []
    for i in range(len(QUANTILES)):
        est.output = i
        outs.append(est.difference(x))

    def pinball(q: np.ndarray, tau: float) -> float:
        d = y - q
        return float(np.maximum(tau * d, (tau - 1) * d).mean())

    for i, tau in enumerate(QUANTILES):
        own = pinball(outs[i], tau)
        assert own < pinball(outs[1 - i], tau) and own < pinball(np.zeros_like(y), tau), (tau, own)
    assert (y <= outs[1]).mean() > (y <= outs[0]).mean() + 0.15


def test_the_quantile_and_point_are_the_tuning_fleets_cheapest_and_round_trip(trained: tuple[Path, dict]) -> None:
    out, meta = trained
    assert set(meta["grid_costs"]) == {f"{q}:{t}:{g}" for q in QUANTILES for t, g in tsr.QUANTILE_GRID}
    best = min(meta["grid_costs"], key=meta["grid_costs"].get)
    assert best == f"{meta['quantile']}:{meta['trigger']}:{meta['gain']}"
    rec = sr.load(out)
    assert rec.estimator is not None and rec.estimator.output == QUANTILES.index(meta["quantile"])
    doc = json.loads((out / f"{sr.STEM}.json").read_text())
    assert doc["model"]["n_out"] == len(QUANTILES) and doc["quantiles"] == list(QUANTILES)


def test_a_checkpoint_whose_quantiles_do_not_match_its_outputs_is_refused(trained: tuple[Path, dict],
                                                                           tmp_path: Path) -> None:
    out, _ = trained
    meta_path = out / f"{sr.STEM}.json"
    good = meta_path.read_text()
    doc = json.loads(good)
    try:
        for bad in ({"quantile": 0.7}, {"quantiles": [0.5]}, {"quantiles": [], "quantile": None},
                    {"quantiles": "0.5,0.9", "quantile": "0.5"}):
            meta_path.write_text(json.dumps({**doc, **bad}))
            with pytest.raises(CheckpointError, match="outputs"):
                sr.load(out)
    finally:
        meta_path.write_text(good)
    with pytest.raises(UsageError, match="quantile"):
        esr.build([out, out], tmp_path / "e", [(synthetic_trace(), np.arange(80))], ["synthetic"], TINY)


def test_the_quantile_estimate_never_violates_the_allocation_limits(trained: tuple[Path, dict]) -> None:
    from llmvirt.learn.train_balance_forecast import SHAPES

    cfg = SHAPES["mixed"][0]
    trace = synthetic_trace(seed=4)
    rec = sr.load(trained[0])
    rows = tsr.run_on_scans(make_balancer(f"cp-sat:2:0.1:{rec.trigger}"), rec.demand, trace,
                            fleets(trace, np.arange(80), 6, 11, cfg), cfg)
    assert sum(r["refused"] for r in rows) == 0 and sum(r["migrations"] for r in rows) > 0


@pytest.mark.parametrize("text", ["0.5,1.0", "x", "0.5,0.5", ""])
def test_bad_quantiles_on_the_command_line_get_one_line(text: str, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", ["train", str(tmp_path / "o"), "t.tar.gz", "--quantiles", text])
    with pytest.raises(SystemExit) as exc:
        tsr.main()
    assert exc.value.code == 2 and "between 0 and 1" in capsys.readouterr().err
    assert replace(TINY, quantiles=()).quantiles == ()


def test_the_committed_quantile_checkpoints_failed_their_rule_so_the_default_stays() -> None:
    """bench/RESULTS.md, "Deciding on a quantile of what a saturated host hides": each committed seed decides on the
    tuning fleets' cheapest quantile and point; held back, seed 1 is not below the shipped estimate in all four
    scenarios (nor seed 0, on July mixed), so by the rule neither replaces it."""
    import statistics

    from llmvirt.policy.weights import sha256

    root = Path(__file__).resolve().parents[1]
    below = {}
    for n in (0, 1):
        rec = sr.load(root / f"policies/scan-recovery-quantiles/seed{n}")
        meta = rec.meta
        assert meta["quantiles"] == [0.5, 0.75, 0.9] and meta["config"]["seed"] == n
        assert min(meta["grid_costs"], key=meta["grid_costs"].get) == f"{meta['quantile']}:{rec.trigger}:{rec.gain}"
        assert rec.estimator is not None and rec.estimator.output == meta["quantiles"].index(meta["quantile"])
        below[n] = []
    for k in ("jul", "jul_mixed", "aug", "aug_mixed"):
        mean = {p["policy"]: statistics.mean(p["cost"]) for name in ("host", "quantiles")
                for p in json.loads((root / f"bench/balance_scans_{name}_{k}.json").read_text())["policies"]}
        for n in (0, 1):
            below[n].append(mean[f"llmvirt-scan:scan-recovery-quantiles/seed{n}"] < mean["llmvirt"])
    assert below == {0: [True, False, True, True], 1: [False, False, False, True]}
    assert sha256(root / f"policies/default/{sr.STEM}.safetensors") == sha256(
        root / f"policies/scan-recovery/seed1/{sr.STEM}.safetensors")
