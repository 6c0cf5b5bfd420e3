"""The neural consolidation policy (issue 15): its fallback is the tuned gate, the rules hold on random fleets of
any size, checkpoints round-trip and refuse tampering, training improves the cost, and rebalance runs it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, fixture_uri

from llmvirt.learn import train_consolidate_net as tcn
from llmvirt.policy import consolidate_net as cn
from llmvirt.policy.weights import CheckpointError
from llmvirt.sim.cloudsim_policies import run_policy
from llmvirt.sim.cluster_arrays import ClusterState, HostArrays
from llmvirt.sim.datacenter import DataCenter, planetlab_day
from llmvirt.sim.engine import HISTORY_LENGTH, Simulation
from llmvirt.sim.power import generic_table
from llmvirt.strategies import registry

PLANETLAB = SHARED / "traces" / "planetlab"


def _random_net(rng: np.random.Generator, scale: float = 0.5) -> dict[str, np.ndarray]:
    """Random gate and forecaster weights (the forecaster's layers as the checkpoint names them)."""
    arrays = cn.zero_net(8, rng)
    arrays["out.weight"] = rng.normal(0.0, scale, (2, 8))
    arrays["out.bias"] = rng.normal(0.0, scale, 2)
    for i, (rows, cols) in {0: (32, cn.HOUR + 1), 2: (32, 32), 4: (2, 32)}.items():
        arrays[f"forecast.{i}.weight"] = rng.normal(0.0, 1.0 / np.sqrt(cols), (rows, cols)).astype(np.float32)
        arrays[f"forecast.{i}.bias"] = rng.normal(0.0, 0.1, rows).astype(np.float32)
    return arrays


def _random_state(rng: np.random.Generator, n_hosts: int) -> ClusterState:
    """A random cluster of ``n_hosts`` hosts of 4 to 64 cores, some in maintenance, some VMs pinned in place."""
    cores = rng.choice([4, 8, 16, 32, 64], n_hosts)
    total = cores * 2000.0
    n_vms = int(rng.integers(n_hosts, 4 * n_hosts + 1))
    vm_host = rng.integers(0, n_hosts, n_vms)
    vm_mips = rng.choice([1, 2, 4], n_vms) * 2000.0
    hist = rng.uniform(0.0, 1.0, (n_vms, HISTORY_LENGTH)) ** 2
    hlen = rng.integers(1, HISTORY_LENGTH + 1, n_vms)
    req = hist[:, 0] * vm_mips
    host_vms: list[list[int]] = [[] for _ in range(n_hosts)]
    for v, h in enumerate(vm_host):
        host_vms[int(h)].append(v)
    dc = HostArrays(pe_mips=total.copy(), total_mips=total, power_table=generic_table(n_hosts),
                    bw=np.full(n_hosts, 1e6), vm_mips=vm_mips, vm_ram=rng.uniform(512, 8192, n_vms),
                    vm_bw=np.zeros(n_vms))
    return ClusterState(dc=dc, vm_host=vm_host, req=req, history=hist, history_len=hlen, host_vms=host_vms,
                        util_mips=np.minimum(np.bincount(vm_host, req, minlength=n_hosts), total),
                        placeable=rng.random(n_hosts) > 0.2, movable=rng.random(n_vms) > 0.15)


@pytest.mark.parametrize("point", [cn.FALLBACK, "gated:0.95:1:0.4:wake"])
def test_with_its_output_at_zero_the_policy_is_exactly_the_tuned_gate(point: str) -> None:
    """Ablation (a) is exact: the fallback decides every step as its gated point (by default gated:0.95:1:0.5, the
    tuned gated THR-MMT; or the wake-aware tuned point a checkpoint names)."""
    day = PLANETLAB / "20110303"
    tuned = run_policy(Simulation(planetlab_day(day)), registry.make_policy(point))
    zero = cn.zero_net(8, np.random.default_rng(3))
    for policy in (cn.policy(None, fallback=point), cn.policy(zero, fallback=point)):
        assert run_policy(Simulation(planetlab_day(day)), policy) == tuned
    other = run_policy(Simulation(planetlab_day(day)), cn.policy(_random_net(np.random.default_rng(3)), fallback=point))
    assert other != tuned  # the network's outputs do change decisions


def test_a_checkpoint_keeps_the_fallback_it_was_trained_on(tmp_path: Path) -> None:
    """The gated point a network was trained on is written to its checkpoint and loaded with it (older checkpoints:
    the tuned gated THR-MMT); a malformed one is refused like a damaged checkpoint."""
    cfg = tcn.ConsolidateNetConfig(fallback="gated:0.95:1:0.4:wake")
    tcn._save(_random_net(np.random.default_rng(1)), cfg, tmp_path, {"extra_traces": []})
    policy, meta = cn.load(tmp_path)
    assert meta["fallback_point"] == "gated:0.95:1:0.4:wake"
    assert (policy.detector.threshold, policy.every, policy.below, policy.wake_cost) == (0.95, 1, 0.4, True)
    root = Path(__file__).resolve().parents[1] / "policies"
    shipped, _ = cn.load(root / "default")
    assert (shipped.below, shipped.wake_cost) == (0.5, False)
    for seed in (0, 1):  # the committed networks trained on the wake-aware gate run on it by the registry's name
        wake = registry.resolve(f"llmvirt-net:{root / 'consolidate-net-wake' / f'seed{seed}'}", "consolidate").policy
        assert (wake.below, wake.wake_cost) == (0.4, True) and wake.net is not None and wake.forecaster is not None
    meta["fallback_point"] = "gated:0.95:1:half"
    (tmp_path / "consolidate_net.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="gated:THRESHOLD"):
        cn.load(tmp_path)


def test_train_refuses_a_bad_fallback_in_one_line(cli, tmp_path: Path) -> None:
    """``--fallback`` that is neither a gated point nor a tuned family: one line, exit 2, nothing written."""
    for bad in ("gated:0.9:x:0.5", "tuned:no-such-family", "thr-mmt-0.8"):
        code, _, err = cli("train", "--head", "consolidate-net", "--trace", str(PLANETLAB), "--fallback", bad,
                           "--out", str(tmp_path / "out"))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "--fallback" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("n_hosts", [3, 17, 200, 1000])
def test_the_rules_hold_on_random_fleets_of_any_size(n_hosts: int) -> None:
    """Whatever the network says: no VM that cannot live-migrate moves, no host in maintenance receives, and no
    host that already held VMs is filled above the threshold."""
    rng = np.random.default_rng(n_hosts)
    moved = 0
    for trial in range(6 if n_hosts < 1000 else 2):
        state = _random_state(rng, n_hosts)
        policy = cn.policy(_random_net(rng, scale=float(rng.choice([0.1, 0.5, 2.0]))))
        before = np.bincount(state.vm_host, state.req, minlength=n_hosts)
        plan = policy.decide(state, 0.0)
        after, where = before.copy(), {}
        for vm, dst in plan:  # in order: PABFD may empty a host that took a VM in its overload phase (CloudSim's)
            src = where.get(vm, state.vm_host[vm])
            assert state.movable[vm] and state.placeable[dst] and dst != src
            after[src] -= state.req[vm]
            after[dst] += state.req[vm]
            where[vm] = dst
            assert policy.reasons[vm].startswith(("overload avoided", "energy saved"))
            assert policy.reasons[vm].startswith("overload") or "forecast (90 % quantile)" in policy.reasons[vm]
        filled = {dst for _, dst in plan if before[dst] > 0}
        for h in filled:
            assert after[h] <= policy.detector.threshold * state.dc.total_mips[h] + 1e-6, (trial, h)
        moved += len(plan)
    assert moved > 0


def test_the_gated_baselines_say_what_drove_each_move() -> None:
    """A tuned wake-aware gate (the default for goal consolidate is one) explains its moves as the network does: an
    overload above its threshold, or emptying a host under its gate, and how the destination was chosen."""
    rng = np.random.default_rng(11)
    policy = registry.make_policy("gated:0.95:1:0.4:wake")
    seen = set()
    for _ in range(8):
        state = _random_state(rng, 30)
        demand = np.bincount(state.vm_host, state.req, minlength=30) / state.dc.total_mips
        plan = policy.decide(state, 0.0)
        for vm, _dst in plan:
            why = policy.reasons[vm]
            src = state.vm_host[vm]
            kind = "overload avoided" if demand[src] > 0.95 else "energy saved"
            assert why.startswith(kind) and why.endswith("a switched-off host counted at its idle power"), why
            assert kind == "overload avoided" or "under the 40% gate" in why, why
            seen.add(kind)
        assert set(policy.reasons) == {vm for vm, _ in plan}
    assert seen == {"overload avoided", "energy saved"}


def test_features_are_shares_of_each_hosts_own_capacity() -> None:
    """The tokens do not depend on the fleet's size or units: a fleet and its copy with capacities doubled (and
    demand with them) give the same rows."""
    rng = np.random.default_rng(5)
    state = _random_state(rng, 12)
    x = cn.host_features(state)
    assert x.shape == (12, len(cn.FEATURES))
    state.dc.total_mips *= 2
    state.dc.pe_mips *= 2
    state.dc.vm_mips *= 2
    state.req *= 2
    state.util_mips *= 2
    assert np.allclose(cn.host_features(state), x)
    fc = cn.forecaster(_random_net(rng))
    with_forecast = cn.host_features(state, "full", fc)
    assert np.allclose(with_forecast[:, :10], x[:, :10]) and np.all(with_forecast[:, 11] >= with_forecast[:, 10])
    demand = np.bincount(state.vm_host, state.req, minlength=12) / state.dc.total_mips
    assert np.allclose(x[:, 10], demand) and np.allclose(x[:, 11], demand)  # no forecaster: the value now
    no_forecast = cn.host_features(state, "no-forecast", fc)  # ablation (b)
    assert np.allclose(no_forecast[:, :10], x[:, :10]) and np.allclose(no_forecast[:, 10:], x[:, 10:])
    assert not np.allclose(with_forecast[:, 10:], no_forecast[:, 10:])
    flat = cn.host_features(state, "no-history", fc)  # ablation (c): no past, for the forecaster either
    assert np.allclose(flat[:, 1], flat[:, 0]) and np.allclose(flat[:, 3], 0)
    assert not np.allclose(flat[:, 10:], with_forecast[:, 10:])
    with pytest.raises(ValueError, match="unknown mode"):
        cn.policy(None, mode="last-value")


def test_a_checkpoint_without_a_forecast_still_loads_and_decides(tmp_path: Path) -> None:
    """Feature spec 1 (ten columns, no forecaster) loads, its network reads the first ten columns, and a spec it
    does not know is refused."""
    import torch

    from llmvirt.policy import checkpoint

    rng = np.random.default_rng(9)
    arrays = {k: v for k, v in _random_net(rng).items() if not k.startswith("forecast.")}
    arrays["hidden.weight"] = arrays["hidden.weight"][:, :10]
    module = torch.nn.Module()
    module.hidden, module.out = torch.nn.Linear(10, 8), torch.nn.Linear(8, 2)
    module.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in arrays.items()})
    spec = checkpoint.HeadSpec(cn.SPEC_NAME, 1, cn.FEATURES_V1, lambda c: module)
    checkpoint.save_head(module, tmp_path, spec, {"hidden": 8}, {})
    policy, _ = cn.load(tmp_path)
    assert policy.forecaster is None and policy.net.w1.shape == (8, 10)
    state = _random_state(rng, 20)
    x = cn.host_features(state)
    assert np.allclose(policy.net(x), cn.GateNet({k: v.astype(np.float64) for k, v in arrays.items()})(x[:, :10]))
    policy.decide(state, 0.0)
    meta = json.loads((tmp_path / "consolidate_net.json").read_text())
    meta["feature_spec"]["version"] = 7
    (tmp_path / "consolidate_net.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="different feature spec"):
        cn.load(tmp_path)


def test_training_improves_the_cost_and_writes_a_verified_checkpoint(tmp_path: Path) -> None:
    """A tiny run (one training day, two steps of two pairs) lowers the cost below the untrained policy's, and its
    checkpoint loads to the same decisions, and refuses tampering."""
    cfg = tcn.ConsolidateNetConfig(iterations=2, pairs=2, keep_every=1, days=("20110306",), workers=1,
                                   forecast_samples=20_000, forecast_epochs=2)
    record = tcn.train(PLANETLAB, tmp_path, cfg, log=lambda _: None)
    assert record["kept_relative_cost"] < 1.0
    assert record["kept_cost"]["20110306"]["cost"] < record["fallback_cost"]["20110306"]
    policy, meta = cn.load(tmp_path)
    assert meta["training_data"]["train_days"] == ["20110306"] and meta["seed"] == 0
    assert policy.forecaster is not None and meta["feature_spec"]["features"] == list(cn.FEATURES)
    x, y = tcn.forecast_samples((str(PLANETLAB / "20110309"), cn.FALLBACK))  # another training day's VMs
    q50, q90 = policy.forecaster(x[:, :-1], np.ones(y.size))
    assert np.abs(y - q50).mean() < 0.9 * np.abs(y - x[:, -2]).mean()  # the median beats the last value
    assert 0.8 < (y <= q90).mean() < 0.99 and np.all(q90 >= q50)
    again = run_policy(Simulation(planetlab_day(PLANETLAB / "20110306")), policy)
    assert again["energy_kwh"] == record["kept_cost"]["20110306"]["energy_kwh"]
    assert (tmp_path / "consolidate_net_curve.csv").read_text().startswith("iteration,")
    assert (tmp_path / "consolidate_net_curve.png").read_bytes().startswith(b"\x89PNG")
    raw = bytearray((tmp_path / "consolidate_net.safetensors").read_bytes())
    raw[-3] ^= 0x20
    (tmp_path / "consolidate_net.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256"):
        cn.load(tmp_path)


def test_rebalance_runs_the_shipped_network_with_its_reasons(cli) -> None:
    """``rebalance --goal consolidate --policy llmvirt-net`` plans on a scanned cluster with the shipped weights,
    each move saying what drove it; goal balance is refused in one line."""
    strategy = registry.resolve("llmvirt-net", "consolidate")
    assert isinstance(strategy, registry.CloudsimStrategy) and strategy.policy.net is not None
    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    cli("hosts", "add", "spare", fixture_uri("small-host.xml"))
    cli("scan")
    code, out, err = cli("rebalance", "--goal", "consolidate", "--policy", "llmvirt-net", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["policy"] == "llmvirt-net"
    for move in plan["moves"]:
        assert move["reason"].startswith(("llmvirt-net: overload avoided", "llmvirt-net: energy saved")), move
        assert "forecast" not in move["reason"]  # the shipped network reads none: its reason claims none
    code, out, err = cli("rebalance", "--goal", "balance", "--policy", "llmvirt-net")
    assert code == 2 and "consolidate only" in err and "Traceback" not in err


def test_the_opt_in_forecast_checkpoints_load_and_their_forecast_beats_the_last_value() -> None:
    """The three committed networks with a demand forecast load (spec 2) by the registry's name, and their
    forecaster's median is closer to the next sample than the value now, on a training day's VMs."""
    root = Path(__file__).resolve().parents[1] / "policies" / "consolidate-net-forecast"
    x, y = tcn.forecast_samples((str(PLANETLAB / "20110303"), cn.FALLBACK))
    for seed in range(3):
        strategy = registry.resolve(f"llmvirt-net:{root / f'seed{seed}'}", "consolidate")
        policy = strategy.policy
        assert policy.forecaster is not None and policy.net.w1.shape[1] == len(cn.FEATURES)
        q50, q90 = policy.forecaster(x[:, :-1], np.ones(y.size))
        assert np.abs(y - q50).mean() < 0.9 * np.abs(y - x[:, -2]).mean()
        assert 0.8 < (y <= q90).mean() < 0.97


BITBRAINS = SHARED / "traces" / "bitbrains-rnd"


def test_usage_days_keep_to_one_side_of_the_split_in_each_fleet_shape() -> None:
    """A usage day holds only the VMs of its side, one day of samples, and as many hosts as its shape says; the
    shapes take turns over the days."""
    from llmvirt.sim import episodes
    from llmvirt.sim.split import split

    july = BITBRAINS / "rnd_2013-7_week1.tar.gz"
    days = episodes.usage_days(july, "train", 3)
    assert [d.hosts_per_vm for d in days] == [episodes.SHAPES[0], episodes.SHAPES[1], episodes.SHAPES[0]]
    assert len(episodes.usage_days(july, "held", 99)) == 7  # the July week: no more days than it covers
    names = episodes._usage(str(july)).names
    train, held = split(names)
    for side, idx in (("train", train), ("held", held)):
        for day in episodes.usage_days(july, side, 2):
            dc = episodes.datacenter(day)
            assert set(dc.names) == {names[i] for i in idx}
            assert dc.n_hosts == round(idx.size * day.hosts_per_vm) and dc.util.shape[1] == 288 + 1
    tight = episodes.UsageDay(str(BITBRAINS / "rnd_2013-8.tar.gz"), 0, "held", 0.5)  # 68 hosts can't hold its VMs
    assert episodes.datacenter(tight).n_hosts == 70 and not episodes._holds_every_vm(
        dataclasses.replace(episodes.datacenter(tight), **_first_hosts(episodes.datacenter(tight), 69)))
    assert episodes.family(days[0]) == july.name and episodes.family(str(PLANETLAB / "20110303")) == "planetlab"
    with pytest.raises(ValueError, match="unknown side"):
        episodes.usage_days(july, "everything", 1)


def _first_hosts(dc: DataCenter, n: int) -> dict[str, np.ndarray]:
    """The host arrays of ``dc`` cut to its first ``n`` hosts."""
    return {f: getattr(dc, f)[:n] for f in ("pe_mips", "total_mips", "power_table", "ram_mb", "bw")}


def test_training_across_traces_weighs_each_family_the_same_and_records_what_it_read(tmp_path: Path) -> None:
    """A tiny run on the training VMs of two Bitbrains months (no PlanetLab day) lowers the cost below the
    untrained policy's; its cost is the mean of the two families' costs, and the checkpoint says what it read."""
    extra = [BITBRAINS / "rnd_2013-7_week1.tar.gz", BITBRAINS / "rnd_2013-8.tar.gz"]
    cfg = tcn.ConsolidateNetConfig(iterations=2, pairs=2, keep_every=1, days=(), workers=1, extra_days=2,
                                   forecast_samples=20_000, forecast_epochs=2)
    record = tcn.train(PLANETLAB, tmp_path, cfg, log=lambda _: None, extra=extra)
    families = record["kept_relative_cost_by_family"]
    assert set(families) == {p.name for p in extra} and record["kept_relative_cost"] < 1.0
    assert record["kept_relative_cost"] == pytest.approx(np.mean(list(families.values())), abs=1e-12)
    assert len(record["kept_cost"]) == 4 and all(":train:" in label for label in record["kept_cost"])
    _, meta = cn.load(tmp_path)
    read = meta["training_data"]["extra_traces"]
    assert [r["trace"] for r in read] == [p.name for p in extra] and read[0]["hosts_per_vm"] == list(cfg.shapes)


def test_train_refuses_a_bad_extra_trace_in_one_line(cli, tmp_path: Path) -> None:
    """``--extra-trace`` that is missing or malformed: one line, exit 2, nothing written."""
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    for path in (tmp_path / "missing.tar.gz", bad):
        code, _, err = cli("train", "--head", "consolidate-net", "--trace", str(PLANETLAB), "--extra-trace",
                           str(path), "--out", str(tmp_path / "out"))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_the_committed_networks_trained_across_traces_load_and_beat_their_fallback_on_a_tight_fleet() -> None:
    """The three opt-in networks trained with ``--extra-trace`` load by the registry's name, say what they read,
    and cost less than their fallback on a tight training day of Bitbrains (half a host per VM)."""
    from llmvirt.model.score import consolidation_cost
    from llmvirt.sim import episodes

    root = Path(__file__).resolve().parents[1] / "policies" / "consolidate-net-mixed"
    july = BITBRAINS / "rnd_2013-7_week1.tar.gz"
    tight = episodes.usage_days(july, "train", 2)[1]
    assert tight.hosts_per_vm == episodes.TIGHT_HOSTS_PER_VM
    fallback = consolidation_cost(run_policy(Simulation(episodes.datacenter(tight)), cn.policy(None)))
    for seed in range(3):
        strategy = registry.resolve(f"llmvirt-net:{root / f'seed{seed}'}", "consolidate")
        policy = strategy.policy
        assert isinstance(policy, cn.NeuralConsolidation) and policy.forecaster is not None
        _, meta = cn.load(root / f"seed{seed}")
        assert [t["trace"] for t in meta["training_data"]["extra_traces"]] == [july.name] and meta["seed"] == seed
        cost = consolidation_cost(run_policy(Simulation(episodes.datacenter(tight)), policy))
        assert cost < 0.95 * fallback, (seed, cost, fallback)


def test_a_generic_format_trace_trains_the_network_like_bitbrains(tmp_path: Path) -> None:
    """A trace in the generic format (what an operator brings) gives usage days and trains the network with
    ``extra``, the same way as Bitbrains: its training VMs only, both shapes, the cost lowered."""
    from test_bench_fleets import generic_trace

    from llmvirt.sim import episodes
    from llmvirt.sim.split import split

    trace = generic_trace(tmp_path / "fleet.csv", vms=60, samples=2 * 288, seed=3)
    days = episodes.usage_days(trace, "train", 5)
    assert len(days) == 2 and [d.hosts_per_vm for d in days] == list(episodes.SHAPES)
    names = tuple(sorted(f"vm{i}" for i in range(60)))
    assert set(episodes.datacenter(days[0]).names) == {names[i] for i in split(names)[0]}
    cfg = tcn.ConsolidateNetConfig(iterations=2, pairs=2, keep_every=1, days=(), workers=1, extra_days=2,
                                   forecast_samples=5_000, forecast_epochs=2)
    record = tcn.train(PLANETLAB, tmp_path / "out", cfg, log=lambda _: None, extra=[trace])
    assert record["kept_relative_cost_by_family"].keys() == {"fleet.csv"} and record["kept_relative_cost"] < 1.0


def test_validation_days_are_later_training_days_on_every_training_fleet() -> None:
    """``validate_days`` adds the extra trace's later days of its *training* VMs (never a held-back VM, never a
    day the search fits), in the training shapes, on every training fleet; as many as the trace covers."""
    from llmvirt.sim import episodes

    july = BITBRAINS / "rnd_2013-7_week1.tar.gz"
    cfg = tcn.ConsolidateNetConfig(fleets=("cloudsim", "ibm"), validate_days=3)
    val = tcn.validation_episodes(cfg, [july])
    assert [(d.day, d.fleet) for d in val] == [(4, "cloudsim"), (5, "cloudsim"), (6, "cloudsim"),
                                               (4, "ibm"), (5, "ibm"), (6, "ibm")]
    assert all(d.side == "train" for d in val)
    assert [d.hosts_per_vm for d in val[:3]] == [cfg.shapes[0], cfg.shapes[1], cfg.shapes[0]]
    assert val[3].hosts_per_vm == episodes.equivalent_shape(cfg.shapes[0], "ibm")
    trained = tcn.training_episodes(PLANETLAB, cfg, [july])
    assert not {episodes.label(d) for d in val} & {episodes.label(d) for d in trained}
    assert [d.day for d in tcn.validation_episodes(dataclasses.replace(cfg, extra_days=5), [july])] == [5, 6] * 2
    assert tcn.validation_episodes(dataclasses.replace(cfg, validate_days=0), [july]) == []


def test_a_validation_trace_adds_its_training_vms_last_days_on_every_training_fleet() -> None:
    """``--validate-trace``: a trace the network does not train on adds its training VMs' *last* days (away from
    the first seven days the benchmark reads), in the training shapes, on every training fleet, after the extra
    traces' later days."""
    july, august = BITBRAINS / "rnd_2013-7_week1.tar.gz", BITBRAINS / "rnd_2013-8.tar.gz"
    cfg = tcn.ConsolidateNetConfig(fleets=("cloudsim", "ibm"), validate_days=3)
    val = tcn.validation_episodes(cfg, [july], [august])
    assert val[:6] == tcn.validation_episodes(cfg, [july])
    theirs = val[6:]
    assert [(Path(d.path).name, d.day, d.fleet) for d in theirs] == [
        ("rnd_2013-8.tar.gz", day, fleet) for fleet in ("cloudsim", "ibm") for day in (27, 28, 29)]
    assert all(d.side == "train" for d in theirs)
    assert [d.hosts_per_vm for d in theirs[:3]] == [cfg.shapes[1], cfg.shapes[0], cfg.shapes[1]]
    assert tcn.validation_episodes(cfg, [], [august]) == theirs
    assert tcn.validation_episodes(dataclasses.replace(cfg, validate_days=0), [july], [august]) == []


class _Quadratic:
    """A stand-in for a set of days whose cost is a quadratic in the weights: ``1 + |theta - centre|^2 -
    |centre|^2`` (1 at the start, theta = 0)."""

    def __init__(self, centre: np.ndarray) -> None:
        self.centre = centre

    def costs(self, thetas: list[np.ndarray]) -> np.ndarray:
        return np.array([1.0 + np.sum((t - self.centre) ** 2) - np.sum(self.centre ** 2) for t in thetas])


def test_with_validation_days_the_search_keeps_the_weights_they_prefer_not_the_training_days() -> None:
    """The search follows the training days; the kept weights are the validation days' choice. Training pulls the
    weights one way and validation prefers the other, so the start is kept with validation and a later step
    without it."""
    cfg = tcn.ConsolidateNetConfig(iterations=6, pairs=4, keep_every=1, sigma=0.1, lr=0.2)
    start, pull = np.zeros(5), np.full(5, 1.0)
    train, val = _Quadratic(pull), _Quadratic(-pull)
    best, curve, kept = tcn.search(start, train, cfg, lambda _: None)
    assert kept["iteration"] > 0 and kept["cost"] < 1.0 and np.all(best > 0)
    assert "validation_cost" not in curve[0]
    best, curve, kept = tcn.search(start, train, cfg, lambda _: None, val)
    assert kept["iteration"] == 0 and np.array_equal(best, start)
    assert curve[-1]["cost"] < 1.0 < curve[-1]["validation_cost"]


def test_training_with_validation_days_records_them_and_keeps_their_best(tmp_path: Path) -> None:
    """A tiny run on a generic trace of three days (two to learn on, the third to choose): the checkpoint and the
    curve say which days chose, the kept step is the lowest validation cost on the curve, and the record's
    training cost is that step's."""
    import csv

    from test_bench_fleets import generic_trace

    trace = generic_trace(tmp_path / "fleet.csv", vms=60, samples=3 * 288, seed=3)
    cfg = tcn.ConsolidateNetConfig(iterations=3, pairs=2, keep_every=1, days=(), workers=1, extra_days=2,
                                   validate_days=1, forecast_samples=5_000, forecast_epochs=2)
    record = tcn.train(PLANETLAB, tmp_path / "out", cfg, log=lambda _: None, extra=[trace])
    val = record["validation"]
    assert val["days"] == ["fleet.csv:train:2:0.76"] and set(val["fallback_cost"]) == set(val["days"])
    with (tmp_path / "out" / "consolidate_net_curve.csv").open() as fh:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    scored = [r for r in rows if r["validation_cost"] == r["validation_cost"]]
    best = min(scored, key=lambda r: (r["validation_cost"], r["iteration"]))
    assert val["kept_iteration"] == best["iteration"] and val["kept_relative_cost"] == best["validation_cost"]
    assert record["kept_relative_cost"] == best["cost"]
    _, meta = cn.load(tmp_path / "out")
    assert meta["training_data"]["validation"]["days_after_training"] == 1
    assert meta["training"]["validation"]["kept_iteration"] == best["iteration"]


def test_a_validation_trace_chooses_where_the_extra_trace_has_no_later_days_and_is_recorded(tmp_path: Path) -> None:
    """A tiny run that trains on both days of one generic trace and validates on the last day of another: the
    record and the checkpoint name the validation trace, and its last day is the one that chose."""
    from test_bench_fleets import generic_trace

    trace = generic_trace(tmp_path / "fleet.csv", vms=60, samples=2 * 288, seed=3)
    other = generic_trace(tmp_path / "other.csv", vms=60, samples=3 * 288, seed=4)
    cfg = tcn.ConsolidateNetConfig(iterations=2, pairs=2, keep_every=1, days=(), workers=1, extra_days=2,
                                   validate_days=1, forecast_samples=5_000, forecast_epochs=2)
    record = tcn.train(PLANETLAB, tmp_path / "out", cfg, log=lambda _: None, extra=[trace], validate=[other])
    val = record["validation"]
    assert val["traces"] == ["other.csv"] and val["days"] == ["other.csv:train:2:0.76"]
    _, meta = cn.load(tmp_path / "out")
    assert meta["training_data"]["validation"]["last_days_of"] == ["other.csv"]


def test_train_refuses_validation_days_it_cannot_have_in_one_line(cli, tmp_path: Path) -> None:
    """``--validate-days`` without an extra trace, or with one too short to have later days; ``--validate-trace``
    without ``--validate-days``, or naming a trace also given as ``--extra-trace``: one line, exit 2, nothing
    written."""
    from test_bench_fleets import generic_trace

    short = generic_trace(tmp_path / "short.csv", vms=20, samples=2 * 288)
    for extra in ([], ["--extra-trace", str(short)]):
        code, _, err = cli("train", "--head", "consolidate-net", "--trace", str(PLANETLAB), *extra,
                           "--validate-days", "2", "--out", str(tmp_path / "out"))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "--validate-days" in err
    for extra in (["--validate-trace", str(short)],
                  ["--validate-days", "1", "--extra-trace", str(short), "--validate-trace", str(short)]):
        code, _, err = cli("train", "--head", "consolidate-net", "--trace", str(PLANETLAB), *extra,
                           "--out", str(tmp_path / "out"))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "--validate-trace" in err
    assert not (tmp_path / "out").exists()


def test_extra_traces_run_on_every_training_fleet_only_when_asked(tmp_path: Path) -> None:
    """By default the extra trace's training days run on CloudSim's servers only; with ``extra_on_fleets`` each
    also runs on every other training fleet, with the same CPU capacity per VM. A tiny run records it: the IBM
    copies are among the training days, each with its own fallback cost, and the checkpoint names the fleets."""
    from test_bench_fleets import generic_trace

    from llmvirt.sim import episodes

    trace = generic_trace(tmp_path / "fleet.csv", vms=60, samples=288, seed=3)
    cfg = tcn.ConsolidateNetConfig(iterations=1, pairs=1, keep_every=1, days=(), workers=1, extra_days=1,
                                   fleets=("cloudsim", "ibm"), forecast_samples=2_000, forecast_epochs=1)
    plain = tcn.training_episodes(PLANETLAB, cfg, [trace])
    assert [episodes.label(d) for d in plain] == ["fleet.csv:train:0:0.76"]
    wide = tcn.training_episodes(PLANETLAB, dataclasses.replace(cfg, extra_on_fleets=True), [trace])
    assert wide[0] == plain[0] and wide[1].fleet == "ibm"
    assert wide[1].hosts_per_vm == pytest.approx(episodes.equivalent_shape(plain[0].hosts_per_vm, "ibm"))
    record = tcn.train(PLANETLAB, tmp_path / "out", dataclasses.replace(cfg, extra_on_fleets=True),
                       log=lambda _: None, extra=[trace])
    assert list(record["kept_cost"]) == [episodes.label(d) for d in wide]
    assert len(set(record["fallback_cost"].values())) == 2 and record["config"]["extra_on_fleets"]
    _, meta = cn.load(tmp_path / "out")
    assert meta["training_data"]["extra_traces"][0]["fleets"] == ["cloudsim", "ibm"]


def test_train_refuses_extra_on_fleets_without_an_extra_trace_in_one_line(cli, tmp_path: Path) -> None:
    """``--extra-on-fleets`` with nothing to run on the fleets: one line, exit 2, nothing written."""
    code, _, err = cli("train", "--head", "consolidate-net", "--trace", str(PLANETLAB), "--fleet", "ibm",
                       "--extra-on-fleets", "--out", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "--extra-on-fleets" in err and not (tmp_path / "out").exists()
