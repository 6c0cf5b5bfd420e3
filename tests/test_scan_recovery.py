"""What a saturated host hides (issue 15): the hour of scans, the heuristic, the learned estimate, its checkpoint and
its training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_balance_rl import synthetic_trace

from llmvirt.bench.balance_rl import fleets, run_balancer, scan_view
from llmvirt.learn import train_scan_recovery as tsr
from llmvirt.model.arrays import ClusterArrays
from llmvirt.policy import scan_recovery as sr
from llmvirt.policy.weights import CheckpointError
from llmvirt.sim.balance_env import BalanceEnv, EnvConfig
from llmvirt.sim.scan_window import HISTORY, ScanTracker, ScanWindow
from llmvirt.strategies.registry import make_balancer
from llmvirt.strategies.scan_recovery import scan_window


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


def test_the_host_wide_heuristic_scales_a_saturated_hosts_readings_by_its_vms_last_clear_total() -> None:
    """Host 0 (VMs 0 and 1) reads saturated now: its VMs read 1.5 + 1.0 now and 2.0 + 1.0 at their last clear steps,
    so both are scaled by 3.0 / 2.5. Host 1 (VM 2) is not saturated now: its reading stands."""
    seen = np.array([[[1.0, 2.0, 1.5], [1.0, 1.0, 1.0], [0.5, 0.7, 0.6]]])
    sat = np.array([[[False, False, True], [False, False, True], [True, False, False]]])
    w = ScanWindow(seen, sat, np.array([[1.0, 1.0, 0.3]]), np.array([[4.0, 2.0, 2.0]]), np.array([[0, 0, 1]]))
    np.testing.assert_allclose(sr.host_scaled(w), [[1.5 * 1.2, 1.0 * 1.2, 0.6]])
    np.testing.assert_allclose(sr.last_clear(w), [[2.0, 1.0, 0.6]])  # the VM's own past alone misses VM 1's share
    np.testing.assert_allclose(sr.ScanRecovery(None, heuristic="host").demand(w), sr.host_scaled(w))
    assert np.array_equal(sr.host_scaled(replace(w, host=None)), sr.last_clear(w))  # no host known: the VM's own
    lower = replace(w, seen=np.array([[[1.0, 1.0, 1.5], [1.0, 1.0, 1.0], [0.5, 0.7, 0.6]]]))
    np.testing.assert_allclose(sr.host_scaled(lower)[0, :2], [1.5, 1.0])  # read more now than when clear: kept


def test_the_scan_window_knows_each_vms_host_in_the_simulator_and_on_a_scanned_cluster() -> None:
    trace = synthetic_trace()
    cfg = EnvConfig()
    env = BalanceEnv(trace, 2, cfg, fleets=fleets(trace, np.arange(80), 2, 0, cfg))
    assert np.array_equal(ScanTracker(env).window().host, env.vm_host)
    view = env.fleet_view(0)
    assert np.array_equal(scan_window(view, {}).host, view.vm_host[None])


def test_deciding_on_the_reading_is_the_scan_view_balancer_exactly() -> None:
    trace = synthetic_trace()
    cfg = EnvConfig()
    fl = fleets(trace, np.arange(80), 4, 3, cfg)
    rows = tsr.run_on_scans(make_balancer("cp-sat:2:0.1:0.95"), tsr.reading, trace, fl, cfg)
    ref = run_balancer(make_balancer("cp-sat:2:0.1:0.95"), trace, fl, cfg, demand=scan_view)
    assert sum(r["cost"] for r in rows) == pytest.approx(ref.total(), abs=1e-9)
    assert sum(r["migrations"] for r in rows) > 0


def test_feature_spec_2_adds_the_hosts_view_after_the_vms_own_inputs() -> None:
    """Spec 1's inputs are the first of spec 2's; the three it adds are the two heuristics' differences from the
    reading and log2 of the host's last-clear total over its total now (host 0 of the host-wide test: 3.0 / 2.5)."""
    seen = np.array([[[1.0, 2.0, 1.5], [1.0, 1.0, 1.0], [0.5, 0.7, 0.6]]])
    sat = np.array([[[False, False, True], [False, False, True], [True, False, False]]])
    pad = HISTORY - seen.shape[-1]  # an hour: the first scan repeated
    seen, sat = (np.concatenate([np.repeat(a[..., :1], pad, axis=-1), a], axis=-1) for a in (seen, sat))
    w = ScanWindow(seen, sat, np.array([[1.0, 1.0, 0.3]]), np.array([[4.0, 2.0, 2.0]]), np.array([[0, 0, 1]]))
    full = sr.inputs(w)
    assert full.shape == (1, 3, len(sr.FEATURES)) and sr.FEATURES[: len(sr.VM_FEATURES)] == sr.OLDER_SPECS[1]
    np.testing.assert_array_equal(sr.inputs(w, len(sr.VM_FEATURES)), full[..., : len(sr.VM_FEATURES)])
    added = full[0, :, len(sr.VM_FEATURES):]
    np.testing.assert_allclose(added[:, 0], [0.5, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(added[:, 1], [1.5 * 0.2, 1.0 * 0.2, 0.0], atol=1e-6)
    np.testing.assert_allclose(added[:2, 2], [np.log2(1.2)] * 2, atol=1e-6)
    assert np.all(sr.inputs(replace(w, host=None))[0, :, -1] == 0.0)  # no host known: no host ratio


@pytest.fixture(scope="module", params=[1, 2], ids=["spec1", "spec2"])
def trained(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("scan_recovery")
    cfg = replace(_tiny(), feature_spec=request.param)
    meta = tsr.train([(synthetic_trace(), np.arange(80))], out, cfg, ["synthetic"], log=lambda _: None)
    return out, meta


def assert_tampered_weights_refused(out: Path) -> None:
    """The scan recovery in ``out`` with the last 5 bytes of its weights flipped is refused by its SHA-256; the
    weights are put back after."""
    weights = out / f"{sr.STEM}.safetensors"
    good = weights.read_bytes()
    try:
        weights.write_bytes(good[:-5] + bytes(b ^ 0xFF for b in good[-5:]))
        with pytest.raises(CheckpointError, match="SHA-256"):
            sr.load(out)
    finally:
        weights.write_bytes(good)


def test_checkpoints_round_trip_and_refuse_tampering(trained: tuple[Path, dict]) -> None:
    out, meta = trained
    rec = sr.load(out)
    assert (rec.trigger, rec.gain) == (meta["trigger"], meta["gain"])
    doc = json.loads((out / f"{sr.STEM}.json").read_text())
    spec = doc["feature_spec"]
    assert rec.estimator is not None and rec.estimator.n_in == len(spec["features"])
    assert spec["features"] == list(sr.FEATURES if spec["version"] == 2 else sr.OLDER_SPECS[1])
    assert doc["training_data"][0]["trace"] == "synthetic" and len(doc["grid_costs"]) == len(tsr.GRID)
    assert (out / f"{sr.STEM}_curve.csv").read_text().splitlines()[0] == "epoch,loss,r2"
    assert_tampered_weights_refused(out)
    with pytest.raises(CheckpointError, match="no scan recovery"):
        sr.load(out / "nothing")
    meta_path = out / f"{sr.STEM}.json"
    good_meta = meta_path.read_text()
    other = 2 if spec["version"] == 1 else 1  # the other spec's names, over these weights
    try:
        meta_path.write_text(json.dumps({**doc, "feature_spec": {
            "version": other, "features": list(sr.FEATURES if other == 2 else sr.OLDER_SPECS[1])}}))
        with pytest.raises(CheckpointError, match="inputs"):
            sr.load(out)
    finally:
        meta_path.write_text(good_meta)


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


def _saturated_view(n_hosts: int) -> ClusterArrays:
    """Hosts of 32 CPUs with 8 VMs of 8 vCPUs each: host 0 reads just under its cores (each VM at 3.99 CPUs), the
    rest at a quarter; every VM has its own uuid."""
    from llmvirt.model.arrays import FleetSetup

    setup = FleetSetup(host_cores=32, mhz_per_core=2600.0, host_mem_mib=32 * 8 * 1024.0, cpu_allocation_ratio=4.0)
    n = n_hosts * 8
    vm_host = np.repeat(np.arange(n_hosts), 8)
    cpus = np.where(vm_host == 0, 3.99, 1.0)
    mem = np.full(n, 4096.0)
    return ClusterArrays(setup, vm_host, np.full(n, 8), mem, cpus * 2600.0, mem * 0.5, mem.copy(), mem * 0.5,
                         n_hosts, np.zeros(n_hosts, dtype=bool), vm_uuids=[f"u{i}" for i in range(n)])


def test_the_hour_of_scans_comes_from_the_store_before_now_then_the_scan_now() -> None:
    view = _saturated_view(3)
    scans = {"u0": [(6.0, 0.5), (5.0, 0.7), (4.2, 1.0), (99.0, 1.0)]}  # the last sample is the scan now: dropped
    w = scan_window(view, scans)
    assert w.seen.shape == (1, 24, HISTORY)
    np.testing.assert_allclose(w.seen[0, 0], [6.0] * 9 + [5.0, 4.2, 3.99])  # a short hour repeats its oldest
    assert list(w.saturated[0, 0]) == [False] * 10 + [True, True]
    np.testing.assert_allclose(w.seen[0, 8], [1.0] * HISTORY)  # no stored sample: the scan now, repeated
    assert not w.saturated[0, 8].any() and w.host_reading[0, 8] == pytest.approx(0.25)
    np.testing.assert_allclose(sr.last_clear(w)[0, :2], [5.0, 3.99])


def test_what_the_scan_hides_makes_cp_sat_act_where_the_reading_alone_does_not() -> None:
    """At trigger 1.0 a saturated host's reading never fires CP-SAT; the hour of scans says its VMs used more before
    it saturated, and on that estimate CP-SAT moves VMs off it."""
    from llmvirt.sim.cpsat_balancer import CpSatBalance

    view = _saturated_view(3)
    scans = {f"u{i}": [(5.0, 0.8)] * 6 + [(3.99, 1.0)] * 6 for i in range(8)}
    cpsat = CpSatBalance(2, 0.1, 1.0)
    assert cpsat.decide(view) == []
    est = sr.ScanRecovery(None, gain=1.0).demand(scan_window(view, scans))[0]
    moves = cpsat.decide(replace(view, vm_cpu_mhz=est * 2600.0, vm_cpus_used=est))
    assert moves and all(view.vm_host[v] == 0 and h != 0 for v, h in moves)


@pytest.mark.parametrize("n_hosts", [3, 1000])
def test_the_trained_estimate_runs_unchanged_on_3_and_on_1000_hosts(trained: tuple[Path, dict], n_hosts: int) -> None:
    from llmvirt.sim.cpsat_balancer import CpSatBalance

    rec = sr.load(trained[0])
    view = _saturated_view(n_hosts)
    est = rec.demand(scan_window(view, {}))[0]
    assert est.shape == (n_hosts * 8,) and np.all(np.isfinite(est)) and np.all(est >= 0)
    for v, h, why in CpSatBalance(2, 0.1, rec.trigger).explain(replace(view, vm_cpu_mhz=est * 2600.0,
                                                                        vm_cpus_used=est)):
        assert view.vm_host[v] != h and why


def test_rebalance_runs_the_scan_recovery_on_a_scanned_cluster(cli, trained: tuple[Path, dict]) -> None:
    """``llmvirt-scan:DIR`` under `rebalance`, on the store's scans; a directory without a checkpoint is refused
    in one line."""
    from conftest import fixture_uri

    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    cli("hosts", "add", "spare", fixture_uri("busy-host.xml"))
    for _ in range(3):
        cli("scan")
    name = f"llmvirt-scan:{trained[0]}"
    code, out, err = cli("rebalance", "--policy", name, "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["goal"] == "balance" and plan["policy"] == name
    for m in plan["moves"]:
        assert "learned estimate" in m["reason"] and m["src"] != m["dst"]
    code, out, err = cli("rebalance", "--policy", "llmvirt-scan:/nonexistent")
    assert code != 0 and "no scan recovery" in err and "Traceback" not in err
