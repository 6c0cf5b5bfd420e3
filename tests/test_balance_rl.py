"""The learned balance policy (issue 15): mask, any fleet size, checkpoints, training, the same strategy on hosts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from llmvirt.bench.balance_rl import fleets, run_actor
from llmvirt.model.arrays import ClusterArrays, FleetSetup
from llmvirt.policy import balance_features as bf
from llmvirt.policy import balance_policy
from llmvirt.policy.weights import CheckpointError
from llmvirt.sim.balance_env import BalanceEnv, EnvConfig
from llmvirt.sim.traces import UsageTrace

SHIPPED = REPO / "policies" / "default"


def synthetic_trace(n_vms: int = 80, steps: int = 400, seed: int = 0) -> UsageTrace:
    """VMs with a daily-ish rhythm and bursts: some spike hard for a while, the rest idle along."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    vcpus = rng.choice([1, 2, 4], n_vms).astype(float)
    phase = rng.uniform(0, 1, (n_vms, 1))
    base = rng.uniform(0.05, 0.5, n_vms)[:, None] * (1 + 0.5 * np.sin(2 * np.pi * (t[None, :] / 48 + phase)))
    bursting = (rng.uniform(size=(n_vms, steps // 12 + 1)) < 0.15).repeat(12, axis=1)[:, :steps]
    burst = bursting * rng.uniform(0.5, 1.0, (n_vms, 1))
    util = np.clip(base + burst, 0.0, 1.0)
    mhz = 2600.0 * vcpus
    mem_cap = rng.choice([2048.0, 4096.0, 8192.0], n_vms)
    return UsageTrace(tuple(f"vm{i}" for i in range(n_vms)), 300, vcpus, mhz, util * mhz[:, None], mem_cap,
                      np.repeat(mem_cap[:, None] * 0.6, steps, axis=1))


def random_actor(seed: int) -> balance_policy.BalanceActor:
    """An untrained actor: the network at its initial weights (and the trained forecaster's shapes)."""
    torch = pytest.importorskip("torch")
    from llmvirt.learn.train_balance import ActorCritic, Forecast, actor_arrays

    torch.manual_seed(seed)
    fc = {k: v.detach().numpy() for k, v in Forecast().state_dict().items()}
    return balance_policy.BalanceActor({**fc, **actor_arrays(ActorCritic())}, {"mode": "full"}, name="untrained")


@pytest.mark.parametrize(("hosts", "mixed"), [((3, 3), False), ((5, 10), False), ((20, 40), False), ((3, 3), True),
                                             ((5, 10), True)])
def test_the_mask_is_never_violated_on_random_fleets_of_any_size(hosts: tuple[int, int], mixed: bool) -> None:
    """Every allowed candidate keeps the destination within its own allocation limits (hosts of one size, or of
    mixed sizes in one fleet), is another host, and the simulator refuses none of the moves chosen greedily or
    at random among the allowed."""
    cfg = EnvConfig(hosts=hosts, host_cores=(4, 8, 16), episode_steps=40, max_vms=400, mixed_sizes=mixed)
    env = BalanceEnv(synthetic_trace(200, 200), 6, cfg, seed=hosts[1])
    actor = random_actor(1)
    rng = np.random.default_rng(0)
    chosen = 0
    for step in range(40):
        st = env.state()
        cand = bf.candidates(st, actor.forecaster)
        e, n = np.nonzero(cand.mask)
        vm, dst = cand.vm[e, n], cand.dst[e, n]
        assert (st.vm_host[e, vm] != dst).all()
        assert (st.host_vcpus[e, dst] + st.vcpus[e, vm] <= st.vcpu_limit[e, dst] + 1e-9).all()
        assert (st.host_mem_cap[e, dst] + st.mem_cap_gib[e, vm] <= st.mem_limit[e, dst] + 1e-9).all()
        assert st.host_valid[e, dst].all() and st.vm_valid[e, vm].all()
        if step % 2:
            v, d, _, _ = actor.act(st)
        else:  # uniformly among the allowed options, "do nothing" included
            logits = np.where(cand.noop_mask, rng.uniform(size=cand.noop_mask.shape), -np.inf)
            k = logits.argmax(axis=1)
            ei = np.arange(k.size)
            v = np.where(k > 0, cand.vm[ei, np.maximum(k - 1, 0)], -1)
            d = np.where(k > 0, cand.dst[ei, np.maximum(k - 1, 0)], -1)
        chosen += int((v >= 0).sum())
        env.step(v, d)
    assert chosen > 0
    assert env.metrics.refused.sum() == 0


def _view(n_hosts: int, vms_per_host: int, seed: int) -> ClusterArrays:
    rng = np.random.default_rng(seed)
    setup = FleetSetup(host_cores=32, mhz_per_core=2600.0, host_mem_mib=32 * 32 * 1024.0, cpu_allocation_ratio=8.0)
    n = n_hosts * vms_per_host
    vm_host = np.repeat(np.arange(n_hosts), vms_per_host)
    hot = vm_host < max(1, n_hosts // 10)  # a tenth of the hosts run hot
    cpu = rng.uniform(0.1, 0.5, n) * 4 * 2600 + hot * 4 * 2600 * 0.9
    mem = np.full(n, 8192.0)
    return ClusterArrays(setup, vm_host, np.full(n, 4), mem, cpu, mem * 0.5, mem.copy(), mem * 0.5, n_hosts,
                     np.zeros(n_hosts, dtype=bool))


@pytest.mark.parametrize("n_hosts", [3, 1000])
def test_the_shipped_policy_runs_unchanged_on_3_and_on_1000_hosts(n_hosts: int) -> None:
    actor = balance_policy.load(SHIPPED)
    view = _view(n_hosts, 12, n_hosts)
    decisions = actor.explain(view)
    assert len(decisions) == 1, "a hot fleet gets a move"
    d = decisions[0]
    assert view.vm_host[d.vm] < max(1, n_hosts // 10), "the move leaves a hot host"
    assert d.dst != view.vm_host[d.vm] and d.reason
    cand = bf.candidates(balance_policy.state_of(view), actor.forecaster)
    assert cand.features.shape[1] <= bf.SOURCES * bf.PER_SOURCE * bf.DESTINATIONS


def test_a_vm_that_cannot_live_migrate_is_never_chosen() -> None:
    actor = balance_policy.load(SHIPPED)
    view = _view(3, 12, 3)
    movable = np.ones(view.vm_host.size, dtype=bool)
    movable[view.vm_host == 0] = False  # the hot host's VMs have passthrough devices
    assert all(view.vm_host[d.vm] != 0 for d in actor.explain(view, None, movable))


def test_checkpoints_round_trip_and_refuse_tampering(tmp_path: Path) -> None:
    from llmvirt.learn.train_balance import save

    actor = random_actor(3)
    save(tmp_path, actor.arrays, {"mode": "no-history"})
    back = balance_policy.load(tmp_path)
    assert back.mode == "no-history"
    assert set(back.arrays) == set(actor.arrays)
    for k, v in actor.arrays.items():
        np.testing.assert_array_equal(back.arrays[k], v.astype(np.float32))
    weights = tmp_path / f"{balance_policy.STEM}.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        balance_policy.load(tmp_path)
    save(tmp_path, actor.arrays, {"mode": "full"})
    meta_path = tmp_path / f"{balance_policy.STEM}.json"
    meta = json.loads(meta_path.read_text())
    meta["feature_spec"]["features"] = meta["feature_spec"]["features"][::-1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="feature spec"):
        balance_policy.load(tmp_path)
    with pytest.raises(CheckpointError, match="no learned balance policy"):
        balance_policy.load(tmp_path / "nothing")


def test_training_on_a_tiny_trace_improves_the_cost_over_the_untrained_policy(tmp_path: Path) -> None:
    """PPO lowers the balance cost on fixed fleets. The untrained policy is its prior, here a fallback that
    fires at 30 % of a host's cores and so churns migrations; training must learn where not to move."""
    from llmvirt.learn.train_balance import ActorCritic, RlConfig, actor_arrays, train

    trace = synthetic_trace()
    vms = np.arange(len(trace.names))
    cfg = EnvConfig(hosts=(3, 4), host_cores=(8,), episode_steps=48, load=(0.6, 0.8), max_vms=80)
    rl = RlConfig(seed=0, envs=8, rollout=24, iters=25, bc_iters=0, forecast_samples=4000, forecast_epochs=1,
                  prior_threshold=0.3, prior_shape=(1.0, 0.1), eval_every=5, eval_fleets=4, lr=1e-3, method="ppo")
    train([(trace, vms)], tmp_path, rl, cfg, log=lambda _: None)
    trained = balance_policy.load(tmp_path)
    import torch

    torch.manual_seed(rl.seed)  # the same initial weights the training started from
    forecast = {k: v for k, v in trained.arrays.items() if k.startswith("forecast.")}
    untrained = balance_policy.BalanceActor({**forecast, **actor_arrays(ActorCritic())},
                                            {"mode": "full", "prior_threshold": 0.3, "prior_shape": [1.0, 0.1]},
                                            name="untrained")
    fl = fleets(trace, vms, 8, seed=77, cfg=cfg)
    before = run_actor(untrained, trace, fl, cfg).total()
    after = run_actor(trained, trace, fl, cfg).total()
    assert after < 0.9 * before, (before, after)
    curve = (tmp_path / f"{balance_policy.STEM}_curve.csv").read_text().splitlines()
    assert len(curve) == 26 and curve[0].startswith("iter,")


def test_rebalance_runs_the_learned_policy_and_its_fallback_on_a_scanned_cluster(cli) -> None:
    """The same names under `rebalance` (on the store's scan, with history) as under the batched bench."""
    from conftest import fixture_uri

    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    cli("hosts", "add", "spare", fixture_uri("busy-host.xml"))
    cli("scan")
    cli("scan")
    for name in ("llmvirt-rl", "llmvirt-rl-fallback", "llmvirt-rl-fallback:0.5", f"llmvirt-rl:{SHIPPED}"):
        code, out, err = cli("rebalance", "--policy", name, "--json")
        assert code == 0, (name, err)
        plan = json.loads(out)
        assert plan["goal"] == "balance" and plan["policy"] == name and len(plan["moves"]) <= 1
        for m in plan["moves"]:
            assert m["reason"].startswith(f"{name}: ") and m["src"] != m["dst"]
    code, out, err = cli("rebalance", "--policy", "llmvirt-rl", "--goal", "consolidate")
    assert code == 2 and "decides goal balance only" in err and "Traceback" not in err
    code, out, err = cli("rebalance", "--policy", "llmvirt-rl-fallback:hot")
    assert code == 2 and "llmvirt-rl-fallback[:TRIGGER]" in err
    code, out, err = cli("rebalance", "--policy", "llmvirt-rl:/nonexistent")
    assert code != 0 and "Traceback" not in err


def test_the_gymnasium_vector_environment_keeps_its_spaces_and_refuses_masked_actions() -> None:
    from llmvirt.learn.balance_gym import BalanceVectorEnv

    env = BalanceVectorEnv(synthetic_trace(), 4, EnvConfig(hosts=(3, 5), host_cores=(8,), episode_steps=6,
                                                           max_vms=80), seed=3)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    rng = np.random.default_rng(0)
    finished = 0
    for step in range(14):
        mask = obs["action_mask"].astype(bool)
        assert mask[:, 0].all()
        if step % 2:  # masked choices are refused, never carried out
            act = np.array([rng.choice(np.flatnonzero(~m)) if (~m).any() else 0 for m in mask])
        else:
            act = np.array([rng.choice(np.flatnonzero(m)) for m in mask])
        obs, reward, term, trunc, info = env.step(act)
        assert env.observation_space.contains(obs) and env.action_space.contains(act)
        assert np.isfinite(reward).all() and (reward <= 0).all() and not term.any()
        assert (info["refused"] == (step % 2 == 1) & (act != 0)).all()
        finished += int(trunc.sum())
        if trunc.any():
            assert np.isfinite(info["episode_cost"][trunc]).all()
    assert finished == 8  # every fleet finished its 6-step day twice, and was redrawn


def test_policy_iteration_measures_each_alternative_exactly_against_the_fallbacks_choice() -> None:
    """The shipped method's targets: the saving of an alternative over the fallback's choice is the difference
    of two plays of the same fleet on the same future demand, each followed by the fallback."""
    from dataclasses import replace

    from llmvirt.learn.balance_api import _counterfactuals, _sample_states
    from llmvirt.learn.balance_eval import Run
    from llmvirt.learn.train_balance import RlConfig

    trace = synthetic_trace(120, 400)
    vms = np.arange(len(trace.names))
    cfg = EnvConfig(hosts=(3, 4), host_cores=(8,), episode_steps=48, load=(0.7, 0.9), max_vms=120)
    rl = RlConfig(api_horizon=6, api_candidates=3, api_random=1, prior_threshold=1.0)
    fallback = balance_policy.BalanceActor(name="fallback", fallback=True)
    rng = np.random.default_rng(1)
    snaps = _sample_states(Run([(trace, vms)], Path("unused"), rl, cfg), (trace, vms), fallback, rng, seed=2, want=6)
    x_moves, y_moves, x_noop, y_noop = _counterfactuals(trace, snaps, fallback, rl, cfg, np.random.default_rng(3))
    assert x_moves.shape == (y_moves.size, len(bf.CANDIDATE_FEATURES)) and y_moves.size > 0
    assert x_noop.shape == (y_noop.size, len(bf.GLOBAL_FEATURES))
    # replay one alternative by hand: the state's first allowed move that is not the fallback's choice
    h_cfg = replace(cfg, episode_steps=rl.api_horizon)
    snap = snaps[0]

    def play(first: tuple[int, int]) -> float:
        env = BalanceEnv(trace, 1, h_cfg, fleets=[snap])
        env.step(np.array([first[0]]), np.array([first[1]]))
        for _ in range(rl.api_horizon - 1):
            vm, dst, _, _ = fallback.act(env.state())
            env.step(vm, dst)
        return float(env.metrics.cost[0])

    env = BalanceEnv(trace, 1, h_cfg, fleets=[snap])
    cand = bf.candidates(env.state(), None, "full", 1.0)
    prior = bf.prior_logits(cand, 1.0)
    base = int(prior[0].argmax())
    base_move = (-1, -1) if base == 0 else (int(cand.vm[0, base - 1]), int(cand.dst[0, base - 1]))
    cap = float(np.sum(snap.cores)) * 300 / 3600
    savings = {}
    for c in np.flatnonzero(cand.mask[0])[:20]:
        if c + 1 != base:
            savings[(int(cand.vm[0, c]), int(cand.dst[0, c]))] = (play(base_move) - play((int(cand.vm[0, c]),
                                                                   int(cand.dst[0, c])))) / cap * 100 / rl.api_horizon
    hits = [v for v in savings.values() if np.isclose(y_moves, v, rtol=1e-4, atol=1e-5).any()]
    assert hits, (savings, np.sort(y_moves)[:10])


@pytest.mark.parametrize("policy", ["llmvirt-rl", "llmvirt-forecast"])
def test_rebalance_path_decides_as_the_benchmarked_batch_does(policy: str) -> None:
    """The bench runs each learned balance strategy on the simulator's batched state; rebalance on a ClusterArrays
    built from a scan with the store's history (``state_of``). On the same fleets and history both give the same
    move."""
    from llmvirt.policy import balance_forecast

    actor = (balance_policy.load(SHIPPED) if policy == "llmvirt-rl"
             else balance_forecast.load(REPO / "policies" / "balance-forecast" / "seed0"))
    cfg = EnvConfig(hosts=(3, 6), host_cores=(8, 16), episode_steps=20, max_vms=120, load=(0.7, 0.9))
    env = BalanceEnv(synthetic_trace(120, 200), 8, cfg, seed=4)
    for _ in range(3):  # a few steps in, with no move yet (time since the last move is not in a scan)
        env.step(np.full(8, -1), np.full(8, -1))
    st = env.state()
    vm, dst, _, _ = actor.act(st)
    moves = 0
    for e in range(8):
        n = int(st.vm_valid[e].sum())
        past = st.history[e, :n, :-1].astype(np.float64) * cfg.mhz_per_core
        one = actor.decide(env.fleet_view(e), past)
        assert one == ([] if vm[e] < 0 else [(int(vm[e]), int(dst[e]))]), e
        moves += len(one)
    assert moves > 0


def test_the_fluid_bound_is_below_every_policy_and_exact_for_one_host() -> None:
    """The balance scenario's lower bound (issue 14): no policy's cost goes under it, it is positive when
    fleets are short of cores, and on a one-host fleet (nothing to move) it is exactly the unmet demand."""
    from llmvirt.bench.balance_rl import fleets, run_actor, run_named

    trace = synthetic_trace(120, 200, seed=3)
    cfg = EnvConfig(hosts=(3, 5), host_cores=(8,), episode_steps=40, load=(0.8, 0.95), max_vms=120)
    fl = fleets(trace, np.arange(len(trace.names)), 6, 0, cfg)
    none = run_named("none", trace, fl, cfg)
    bound = [r["bound_core_h"] for r in none.rows]
    assert sum(bound) > 0
    for res in (none, run_named("watcher-wb:100", trace, fl, cfg),
                run_actor(balance_policy.BalanceActor(fallback=True, name="fallback"), trace, fl, cfg)):
        assert all(r["cost"] >= b - 1e-9 for r, b in zip(res.rows, bound, strict=True)), res.policy
    one = EnvConfig(hosts=(1, 1), host_cores=(8,), episode_steps=40, load=(1.1, 1.3), max_vms=40)
    single = run_named("none", trace, fleets(trace, np.arange(len(trace.names)), 3, 1, one), one)
    assert all(abs(r["bound_core_h"] - r["unmet_core_h"]) < 1e-9 and r["unmet_core_h"] > 0 for r in single.rows)


def test_training_across_fleet_shapes_draws_and_validates_each_shape() -> None:
    """``--shapes identical,mixed``: every trace gets a batch of fleets of each shape to learn on and validation
    fleets of each shape to be kept by; one shape alone draws exactly what the shipped recipe drew."""
    from llmvirt.errors import UsageError
    from llmvirt.learn.balance_eval import make_env, validation_fleets
    from llmvirt.learn.train_balance import RlConfig
    from llmvirt.sim.fleet_shapes import MIXED

    trace = synthetic_trace()
    vms = np.arange(len(trace.names))
    ident = EnvConfig(hosts=(3, 4), host_cores=(8,), episode_steps=48, load=(0.6, 0.8), max_vms=80)
    both = RlConfig(envs=8, eval_fleets=4, shapes=("identical", "mixed"))
    envs = make_env([(trace, vms)], both, ident)
    assert [e.cfg for e in envs] == [ident, MIXED] and all(e.n_envs == 4 for e in envs)
    assert len(set(np.unique(envs[1].cores[envs[1].host_valid]))) > 1  # the mixed batch mixes host sizes
    val = validation_fleets([(trace, vms)], both, ident)
    assert [shape for _, _, shape in val] == [ident, MIXED] and all(len(fl) == 2 for _, fl, _ in val)
    one = RlConfig(envs=8, eval_fleets=4)
    alone, again = validation_fleets([(trace, vms)], one, ident), validation_fleets([(trace, vms)], one, ident)
    assert [f.vms.tolist() for f in alone[0][1]] == [f.vms.tolist() for f in again[0][1]]
    with pytest.raises(UsageError, match="fleet shape"):
        make_env([(trace, vms)], RlConfig(shapes=("huge",)), ident)
