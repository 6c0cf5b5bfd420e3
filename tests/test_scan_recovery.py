"""What a saturated host hides (issue 15): the hour of scans, the heuristic, the learned estimate, its checkpoint and
its training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_balance_rl import synthetic_trace

from llmvirt.bench.balance_rl import fleets, run_balancer, scan_view
from llmvirt.learn import train_scan_recovery as tsr
from llmvirt.policy import scan_recovery as sr
from llmvirt.policy.weights import CheckpointError
from llmvirt.sim.balance_env import BalanceEnv, EnvConfig
from llmvirt.sim.scan_window import HISTORY, ScanTracker, ScanWindow
from llmvirt.strategies.registry import make_balancer


def _tiny() -> tsr.RecoveryConfig:
    return tsr.RecoveryConfig(seed=0, epochs=6, tune_seeds=(0,), sample_seeds=(5, 6), shapes=("identical",),
                              fleets_per_seed=4)


def test_a_scan_shows_demand_on_a_host_below_its_cores_and_a_fair_share_on_one_above() -> None:
    trace = synthetic_trace()
    cfg = EnvConfig()
    env = BalanceEnv(trace, 3, cfg, fleets=fleets(trace, np.arange(80), 3, 0, cfg))
    tracker = ScanTracker(env)
    saturated_seen = False
    for _ in range(HISTORY + 3):
        w = tracker.window()
        demand = env.demand_now() * env.vm_valid
        host = env.host_sum(demand)
        over = np.take_along_axis(host > env.cores, env.vm_host, axis=1) & env.vm_valid
        assert w.seen.shape == (*demand.shape, HISTORY)
        np.testing.assert_allclose(w.seen[..., -1][~over], demand[~over])
        assert np.all(w.seen[..., -1][over] < demand[over])
        np.testing.assert_allclose(env.host_sum(w.seen[..., -1])[host > env.cores], env.cores[host > env.cores])
        assert np.array_equal(w.saturated[..., -1] & env.vm_valid, over)
        before = w.seen.copy()
        saturated_seen |= bool(over.any())
        env.advance()
    assert saturated_seen, "the fleets never saturate a host: the check proves nothing"
    assert np.array_equal(tracker.window().seen[..., :-1], before[..., 1:])  # the hour rolls by one scan


def test_the_heuristic_takes_the_last_clear_reading_on_a_saturated_host_only() -> None:
    seen = np.array([[[1.0, 2.0, 3.0, 1.5], [1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 0.5]]])
    sat = np.array([[[False, False, True, True], [False, False, False, False], [True, True, True, True]]])
    w = ScanWindow(seen, sat, np.array([[1.0, 0.5, 1.0]]), np.array([[4.0, 4.0, 4.0]]))
    np.testing.assert_allclose(sr.last_clear(w), [[2.0, 1.0, 0.5]])  # no clear reading: the reading now
    half = sr.ScanRecovery(None, gain=0.5)
    np.testing.assert_allclose(half.demand(w), [[1.75, 1.0, 0.5]])


def test_deciding_on_the_reading_is_the_scan_view_balancer_exactly() -> None:
    trace = synthetic_trace()
    cfg = EnvConfig()
    fl = fleets(trace, np.arange(80), 4, 3, cfg)
    rows = tsr.run_on_scans(make_balancer("cp-sat:2:0.1:0.95"), tsr.reading, trace, fl, cfg)
    ref = run_balancer(make_balancer("cp-sat:2:0.1:0.95"), trace, fl, cfg, demand=scan_view)
    assert sum(r["cost"] for r in rows) == pytest.approx(ref.total(), abs=1e-9)
    assert sum(r["migrations"] for r in rows) > 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("scan_recovery")
    meta = tsr.train([(synthetic_trace(), np.arange(80))], out, _tiny(), ["synthetic"], log=lambda _: None)
    return out, meta


def test_checkpoints_round_trip_and_refuse_tampering(trained: tuple[Path, dict]) -> None:
    out, meta = trained
    rec = sr.load(out)
    assert (rec.trigger, rec.gain) == (meta["trigger"], meta["gain"])
    doc = json.loads((out / f"{sr.STEM}.json").read_text())
    assert doc["training_data"][0]["trace"] == "synthetic" and len(doc["grid_costs"]) == len(tsr.GRID)
    assert (out / f"{sr.STEM}_curve.csv").read_text().splitlines()[0] == "epoch,loss,r2"
    weights = out / f"{sr.STEM}.safetensors"
    good = weights.read_bytes()
    try:
        weights.write_bytes(good[:-5] + bytes(b ^ 0xFF for b in good[-5:]))
        with pytest.raises(CheckpointError, match="SHA-256"):
            sr.load(out)
    finally:
        weights.write_bytes(good)
    with pytest.raises(CheckpointError, match="no scan recovery"):
        sr.load(out / "nothing")


def test_training_on_a_tiny_trace_recovers_what_saturated_hosts_hide(trained: tuple[Path, dict]) -> None:
    """On fleets it was neither fitted nor tuned on, the estimate is nearer the next step's demand than the reading,
    above the reading on saturated hosts, and the untrained network is not."""
    import torch

    from llmvirt.learn.train_balance_forecast import ChangeNet

    out, meta = trained
    assert meta["curve"][-1]["r2"] > 0.1, meta["curve"]
    trace = synthetic_trace(seed=9)
    cfg = EnvConfig()
    x, y = tsr.samples([(trace, cfg, fleets(trace, np.arange(80), 4, 77, cfg))])
    est = sr.load(out).estimator
    torch.manual_seed(0)
    untrained = sr.DemandEstimator({k: v.detach().numpy() for k, v in ChangeNet(len(sr.FEATURES), 64)
                                    .state_dict().items()})

    def err(model: sr.DemandEstimator) -> float:  # squared error of the estimate's difference from the reading
        return float(((model.difference(x) - y) ** 2).mean())

    reading_err = float((y ** 2).mean())
    assert err(est) < 0.9 * reading_err, (err(est), reading_err)
    assert err(untrained) > err(est)
    saturated = x[:, sr.FEATURES.index("host_saturated_0_steps_ago")] > 0.5
    assert saturated.any() and y[saturated].mean() > 0  # a saturated host hides demand


@pytest.mark.parametrize(("shape", "n_fleets"), [("identical", 6), ("mixed", 6)])
def test_the_allocation_limits_are_never_violated_on_the_estimate(trained: tuple[Path, dict], shape: str,
                                                                  n_fleets: int) -> None:
    """The estimate changes what CP-SAT sees, never what it may do: over fleets of 3 to 10 hosts of one size and
    of mixed sizes, no move it plans is refused by the simulator's vCPU and memory limits, and it does move."""
    from llmvirt.learn.train_balance_forecast import SHAPES

    cfg = SHAPES[shape][0]
    trace = synthetic_trace(seed=4)
    fl = fleets(trace, np.arange(80), n_fleets, 11, cfg)
    assert len({f.n_hosts for f in fl}) > 1
    rec = sr.load(trained[0])
    rows = tsr.run_on_scans(make_balancer(f"cp-sat:2:0.1:{rec.trigger}"), rec.demand, trace, fl, cfg)
    assert sum(r["refused"] for r in rows) == 0
    assert sum(r["migrations"] for r in rows) > 0
