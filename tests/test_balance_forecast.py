"""The balance loop on a learned next-step forecast (issue 15): inputs, mask, any fleet size, checkpoints,
training, and the same strategy on a scanned cluster."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_balance_rl import _view, synthetic_trace

from llmvirt.bench.balance_rl import fleets, run_actor
from llmvirt.policy import balance_forecast as bfc
from llmvirt.policy.balance_policy import BalanceActor
from llmvirt.policy.weights import CheckpointError
from llmvirt.sim.balance_env import HISTORY, BalanceEnv, EnvConfig
from llmvirt.sim.traces import UsageTrace

SHIPPED = REPO / "policies" / "balance-forecast" / "seed0"


def _untrained(seed: int, threshold: float = 1.0, gain: float = 1.0) -> bfc.ForecastLoop:
    """The forecaster at its initial weights, in the loop."""
    import torch

    from llmvirt.learn.train_balance_forecast import ChangeNet

    torch.manual_seed(seed)
    net = ChangeNet(len(bfc.FEATURES), 64)
    arrays = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    return bfc.ForecastLoop(bfc.ChangeForecaster(arrays), threshold, gain, name="untrained")


def test_inputs_are_the_changes_since_each_past_step_then_vcpus_and_now() -> None:
    hist = np.arange(HISTORY, dtype=np.float64)[None, :]  # 0, 1, ..., 11: now is 11
    x = bfc.inputs(hist, np.array([4.0]))
    assert x.shape == (1, len(bfc.FEATURES))
    np.testing.assert_allclose(x[0, : HISTORY - 1], -np.arange(1, HISTORY))  # k steps ago: k less than now
    assert x[0, -2] == 2.0 and x[0, -1] == 11.0


def test_gain_zero_is_the_fallback_and_the_forecast_changes_what_the_loop_sees() -> None:
    cfg = EnvConfig(hosts=(3, 6), host_cores=(8,), episode_steps=30, max_vms=80)
    env = BalanceEnv(synthetic_trace(), 8, cfg, seed=5)
    loop = _untrained(0)
    fallback = BalanceActor(name="fallback", fallback=True, threshold=1.0)
    for _ in range(30):
        st = env.state()
        zero = replace(loop, gain=0.0).act(st)
        base = fallback.act(st)
        np.testing.assert_array_equal(zero[0], base[0])
        np.testing.assert_array_equal(zero[1], base[1])
        ahead = loop.expected(st)
        assert (ahead >= 0).all() and (ahead[~st.vm_valid] == 0).all()
        assert not np.allclose(ahead[st.vm_valid], st.demand[st.vm_valid])
        env.step(*loop.act(st)[:2])


@pytest.mark.parametrize(("hosts", "mixed"), [((3, 3), False), ((5, 10), False), ((20, 40), False), ((5, 10), True)])
def test_the_mask_is_never_violated_on_random_fleets_of_any_size(hosts: tuple[int, int], mixed: bool) -> None:
    """Every move the loop chooses (with a forecast that moves a lot) keeps the destination within its limits:
    the simulator refuses none."""
    cfg = EnvConfig(hosts=hosts, host_cores=(4, 8, 16), episode_steps=40, max_vms=400, mixed_sizes=mixed)
    env = BalanceEnv(synthetic_trace(200, 200), 6, cfg, seed=hosts[1])
    loop = _untrained(1, threshold=0.5, gain=3.0)
    moved = 0
    for _ in range(40):
        vm, dst, _, _ = loop.act(env.state())
        moved += int((vm >= 0).sum())
        env.step(vm, dst)
    assert moved > 0
    assert env.metrics.refused.sum() == 0


@pytest.mark.parametrize("n_hosts", [3, 1000])
def test_the_shipped_loop_runs_unchanged_on_3_and_on_1000_hosts(n_hosts: int) -> None:
    loop = bfc.load(SHIPPED)
    view = _view(n_hosts, 12, n_hosts)
    decisions = loop.explain(view)
    assert len(decisions) == 1, "a hot fleet gets a move"
    d = decisions[0]
    assert view.vm_host[d.vm] < max(1, n_hosts // 10), "the move leaves a hot host"
    assert d.dst != view.vm_host[d.vm]
    assert "forecast" in d.reason and "destination" in d.reason


def test_a_vm_that_cannot_live_migrate_is_never_chosen() -> None:
    loop = bfc.load(SHIPPED)
    view = _view(3, 12, 3)
    movable = np.ones(view.vm_host.size, dtype=bool)
    movable[view.vm_host == 0] = False
    assert all(view.vm_host[d.vm] != 0 for d in loop.explain(view, None, movable))


def rhythmic_trace(n_vms: int = 80, steps: int = 400, seed: int = 1) -> UsageTrace:
    """VMs that idle, then run a job for 2 of every 8 steps (each VM its own phase): a rise a forecast can see."""
    rng = np.random.default_rng(seed)
    vcpus = rng.choice([2, 4], n_vms).astype(float)
    phase = rng.integers(0, 8, (n_vms, 1))
    job = ((np.arange(steps)[None, :] + phase) % 8) < 2
    util = np.clip(rng.uniform(0.05, 0.2, (n_vms, 1)) + job * rng.uniform(0.6, 0.8, (n_vms, 1))
                   + rng.normal(0, 0.02, (n_vms, steps)), 0.0, 1.0)
    mhz = 2600.0 * vcpus
    mem_cap = rng.choice([2048.0, 4096.0], n_vms)
    return UsageTrace(tuple(f"vm{i}" for i in range(n_vms)), 300, vcpus, mhz, util * mhz[:, None], mem_cap,
                      np.repeat(mem_cap[:, None] * 0.6, steps, axis=1))


def _train(tmp_path: Path, seed: int = 0, horizons: tuple[int, ...] = (1,)) -> dict:
    from llmvirt.learn.train_balance_forecast import ForecastConfig, train

    cfg = ForecastConfig(seed=seed, epochs=10, tune_seeds=(0,), horizons=horizons)
    return train([(rhythmic_trace(), np.arange(80))], tmp_path, cfg, ["synthetic"], log=lambda _: None)


def test_checkpoints_round_trip_and_refuse_tampering(tmp_path: Path) -> None:
    record = _train(tmp_path)
    loop = bfc.load(tmp_path)
    assert (loop.threshold, loop.gain) == (record["threshold"], record["gain"])
    meta = json.loads((tmp_path / f"{bfc.STEM}.json").read_text())
    assert meta["training_data"][0]["trace"] == "synthetic" and len(meta["grid_costs"]) == 18
    assert (tmp_path / f"{bfc.STEM}_curve.csv").read_text().splitlines()[0] == "epoch,loss,r2"
    assert (tmp_path / f"{bfc.STEM}_curve.png").read_bytes()[:4] == b"\x89PNG"
    weights = tmp_path / f"{bfc.STEM}.safetensors"
    good = weights.read_bytes()
    data = bytearray(good)
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        bfc.load(tmp_path)
    weights.write_bytes(good)
    meta_path = tmp_path / f"{bfc.STEM}.json"
    meta["feature_spec"]["features"] = meta["feature_spec"]["features"][::-1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="feature spec"):
        bfc.load(tmp_path)
    with pytest.raises(CheckpointError, match="no balance forecaster"):
        bfc.load(tmp_path / "nothing")


def test_training_on_a_tiny_trace_learns_the_rhythm_and_beats_the_fallback_and_the_untrained_forecast(
        tmp_path: Path) -> None:
    """On VMs with a job every 40 minutes, the fitted forecast explains much of the next step's
    change, the choice uses it (gain above 0), and on fleets it was not chosen on it costs less than the
    fallback and than the untrained forecaster in the same loop."""
    record = _train(tmp_path)
    assert record["curve"][-1]["r2"] > 0.3, record["curve"]
    trained = bfc.load(tmp_path)
    assert trained.gain > 0
    trace = rhythmic_trace()
    cfg = EnvConfig()
    fl = fleets(trace, np.arange(80), 16, seed=77, cfg=cfg)
    after = run_actor(trained, trace, fl, cfg).total()
    fallback = run_actor(bfc.ForecastLoop(None, trained.threshold, 0.0, name="fallback"), trace, fl, cfg).total()
    untrained = run_actor(_untrained(0, trained.threshold, trained.gain), trace, fl, cfg).total()
    assert after < fallback and after < untrained, (after, fallback, untrained)


def test_a_longer_horizon_targets_the_mean_demand_over_the_next_steps() -> None:
    from llmvirt.learn.train_balance_forecast import samples

    trace = rhythmic_trace(n_vms=3, steps=40)
    cpu = trace.cpu_mhz / 2600.0
    x1, y1 = samples(trace, np.arange(3))
    x3, y3 = samples(trace, np.arange(3), horizon=3)
    per_vm = 40 - HISTORY  # steps with an hour behind and one step after
    assert y1.shape == (3 * per_vm,) and y3.shape == (3 * (per_vm - 2),) and x3.shape[0] == y3.shape[0]
    t = HISTORY - 1  # the first sample of VM 1
    np.testing.assert_allclose(y1[per_vm], cpu[1, t + 1] - cpu[1, t], rtol=1e-6)
    np.testing.assert_allclose(y3[per_vm - 2], cpu[1, t + 1:t + 4].mean() - cpu[1, t], rtol=1e-6)
    np.testing.assert_array_equal(x3[: per_vm - 2], x1[: per_vm - 2])  # the same inputs, another target


def test_training_over_horizons_keeps_the_one_whose_loop_costs_least(tmp_path: Path) -> None:
    """One forecaster per horizon, each with its own trigger and gain; the cheapest on the tuning fleets is
    kept and loaded with its horizon; horizon 1 alone is the recipe as it was."""
    record = _train(tmp_path / "both", horizons=(1, 4))
    costs = {int(h): c for h, c in record["horizon_costs"].items()}
    assert set(costs) == {1, 4} and record["horizon"] == min(costs, key=costs.__getitem__)
    loop = bfc.load(tmp_path / "both")
    assert loop.horizon == record["horizon"] and loop.gain == record["gain"]
    alone = _train(tmp_path / "one")
    assert alone["horizon"] == 1 and alone["horizon_costs"] == {"1": costs[1]}
    assert bfc.load(tmp_path / "one").horizon == 1 and bfc.load(SHIPPED).horizon == 1  # old checkpoints: 1
    view = _view(3, 12, 3)  # a hot fleet: it gets a move
    for h, words in ((1, "next step"), (4, "on average over the next 4 steps")):
        moves = replace(loop, horizon=h).explain(view)
        assert len(moves) == 1 and words in moves[0].reason, moves


def test_rebalance_runs_the_forecast_loop_on_a_scanned_cluster(cli) -> None:
    """The same name under `rebalance` (on the store's scan, with history) as under the batched bench; a bad
    checkpoint path is refused in one line."""
    from conftest import fixture_uri

    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    cli("hosts", "add", "spare", fixture_uri("busy-host.xml"))
    cli("scan")
    cli("scan")
    name = f"llmvirt-forecast:{SHIPPED}"
    code, out, err = cli("rebalance", "--policy", name, "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["goal"] == "balance" and plan["policy"] == name and len(plan["moves"]) <= 1
    for m in plan["moves"]:
        assert m["reason"].startswith(f"{name}: ") and "forecast" in m["reason"] and m["src"] != m["dst"]
    code, out, err = cli("rebalance", "--policy", "llmvirt-forecast:/nonexistent")
    assert code != 0 and "no balance forecaster" in err and "Traceback" not in err


@pytest.mark.parametrize("bad", ["0", "1,x", "3,3", "", "289"])
def test_train_refuses_bad_horizons_in_one_line(cli, tmp_path: Path, bad: str) -> None:
    """``--horizons`` that is not a list of distinct steps from 1 to a day: one line, exit 2, nothing written."""
    code, _, err = cli("train", "--head", "balance-forecast", "--trace", str(tmp_path / "t.csv"), "--horizons", bad,
                       "--out", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--horizons" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_train_on_a_generic_format_trace_from_the_command_line(cli, tmp_path: Path) -> None:
    """The trace family the project has no file of: a generic-format CSV trains the forecaster over two horizons
    through ``llmvirt train``, and the checkpoint loads as the strategy ``rebalance`` runs."""
    from test_bench_fleets import generic_trace

    trace = generic_trace(tmp_path / "wave.csv", vms=24, samples=302)
    out_dir = tmp_path / "forecast"
    code, out, err = cli("train", "--head", "balance-forecast", "--trace", str(trace), "--horizons", "1,2",
                         "--out", str(out_dir))
    assert code == 0, err
    meta = json.loads((out_dir / f"{bfc.STEM}.json").read_text())
    assert meta["training_data"][0]["trace"] == "wave.csv" and 0 < meta["training_data"][0]["train_vms"] < 24
    assert set(meta["horizon_costs"]) == {"1", "2"} and f"horizon {meta['horizon']}" in out
    loop = bfc.load(out_dir)
    assert loop.horizon == meta["horizon"] and (loop.threshold, loop.gain) == (meta["threshold"], meta["gain"])
