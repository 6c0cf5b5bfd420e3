"""The placement scorer optimised on the placement scenario's cost (issue 15): the scenario, the mask, any
fleet size, training, checkpoints and ``place``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, fixture_uri
from test_balance_rl import synthetic_trace

from llmvirt.errors import UsageError
from llmvirt.learn import train_place_rl as rl
from llmvirt.policy import decide
from llmvirt.policy.arrivals import WeightedScorer, chooser, parse_weighted
from llmvirt.policy.features import FEATURES
from llmvirt.policy.weights import CheckpointError
from llmvirt.sim.balance_env import EnvConfig, draw_fleet, trace_pool
from llmvirt.sim.placement_env import Arrival, PlacementEpisode

SHIPPED = REPO / "policies" / "place-rl"
SCORERS = ("baseline:least-loaded", "baseline:best-fit", "baseline:first-fit", "baseline:weighted:1:0.75:0",
           "baseline:weighted:0.75:0.75:0:1", str(SHIPPED))


def _episodes(n: int, cfg: EnvConfig, seed: int) -> list[PlacementEpisode]:
    trace = synthetic_trace(120, 400, seed)
    pool = trace_pool(trace, cfg.mhz_per_core)[:3]
    rng = np.random.default_rng(seed)
    return [PlacementEpisode.draw(rng, draw_fleet(rng, *pool, cfg), pool, cfg) for _ in range(n)]


@pytest.mark.parametrize("cfg", [EnvConfig(hosts=(3, 3)), EnvConfig(hosts=(5, 10), mixed_sizes=True,
                                                                    host_cores=(8, 16, 24, 32))])
@pytest.mark.parametrize("spec", SCORERS)
def test_every_placement_keeps_the_allocation_limits(cfg: EnvConfig, spec: str) -> None:
    """The policy proposes, the constraints dispose: over random fleets no host ever holds more vCPUs or memory
    than its limits, whatever the scorer."""
    for ep in _episodes(6, cfg, seed=3):
        figs = ep.run(chooser(decide.load_scorer(spec), 0.12))
        on = ep.hosts_placed
        assert figs["placed"] + figs["rejected"] == (ep.arrive > 0).sum()
        for h in range(ep.cores.size):
            mine = on == h
            assert ep.vcpus[mine].sum() <= cfg.cpu_allocation_ratio * ep.cores[h] + 1e-6
            assert ep.mem_gib[mine].sum() <= cfg.ram_allocation_ratio * ep.cores[h] * cfg.mem_gib_per_core + 1e-6
        assert figs["bound_core_h"] <= figs["cost"] + 1e-9


def test_a_host_choice_that_breaks_the_limits_is_refused_and_unmet() -> None:
    ep = _episodes(1, EnvConfig(hosts=(3, 3)), seed=1)[0]
    figs = ep.run(lambda a: 99)  # no such host
    assert figs["placed"] == 0 and figs["rejected"] == (ep.arrive > 0).sum()
    assert figs["cost"] > ep.run(chooser(decide.load_scorer("baseline:least-loaded"), 0.12))["cost"]


@pytest.mark.parametrize("n_hosts", [3, 1000])
def test_the_shipped_scorer_runs_unchanged_on_3_and_on_1000_hosts(n_hosts: int) -> None:
    rng = np.random.default_rng(0)
    cores = rng.choice([8.0, 16.0, 32.0], n_hosts)
    full = rng.random(n_hosts) < 0.3  # these hold all the vCPUs they may
    a = Arrival(used=rng.uniform(0, 1, n_hosts) * cores, vcpus=np.where(full, 12 * cores, 4 * cores),
                mem_gib=8 * cores, count=rng.integers(0, 30, n_hosts).astype(float), cores=cores,
                host_mem_gib=32 * cores, vm_vcpus=4.0, vm_mem_gib=8.0, cpu_allocation_ratio=12.0,
                ram_allocation_ratio=1.0)
    h = chooser(decide.load_scorer(str(SHIPPED)), 0.12)(a)
    assert 0 <= h < n_hosts and not full[h]


def test_training_on_a_tiny_trace_improves_the_cost_over_its_start(tmp_path: Path) -> None:
    """Started from best-fit (which packs, so overloads), the search lowers the validation cost, and the kept
    network places better than its start on fleets neither saw."""
    trace = synthetic_trace(120, 400, 5)
    vms = np.arange(len(trace.names))
    cfg = rl.PlaceRlConfig(iterations=8, pairs=6, episodes=6, val_episodes=8, val_every=2, sigma=0.3, lr=0.1,
                           shapes=("identical",), init="baseline:best-fit")
    record = rl.train([(trace, vms)], tmp_path, cfg, ["synthetic"], log=lambda _: None)
    assert record["validation_cost_kept"] < 0.9 * record["validation_cost_start"], record
    trained = decide.load_scorer(str(tmp_path))
    eps = rl.episodes([(trace, vms)], [EnvConfig()], 8, np.random.default_rng(99))
    util = record["expected_cpu"]
    assert rl.cost(eps, chooser(trained, util)) < rl.cost(eps, chooser(decide.load_scorer("baseline:best-fit"), util))
    curve = (tmp_path / "place_rl_curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 1 + cfg.iterations and curve[0].startswith("iteration,")
    meta = json.loads((tmp_path / "policy.json").read_text())
    assert meta["scenario"] == "placement" and meta["expected_cpu"] == pytest.approx(util)


def test_the_shipped_checkpoint_round_trips_and_refuses_tampering(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "p"
    shutil.copytree(SHIPPED, copy)
    a = decide.load_scorer(str(SHIPPED))
    b = decide.load_scorer(str(copy))
    x = np.random.default_rng(0).random((5, len(FEATURES))).astype(np.float32)
    assert a.reads_peaks and np.array_equal(a.scores(x, []), b.scores(x, []))
    blob = bytearray((copy / "model.safetensors").read_bytes())
    blob[-3] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256"):
        decide.load_scorer(str(copy))


def test_the_weighted_baseline_parses_its_weights_or_says_how() -> None:
    assert parse_weighted("weighted:1:0.5:0").weights == (1.0, 0.5, 0.0, 0.0)  # no peak weight: 0
    assert WeightedScorer((1, 0, 0)).name == "baseline:weighted:1:0:0"
    for bad in ("weighted", "weighted:1:x:0", "weighted:0:0:0", "weighted:-1:1:1", "weighted:1:1"):
        with pytest.raises(UsageError, match="baseline:weighted:C:V:M"):
            parse_weighted(bad)


def test_place_runs_the_trained_scorer_with_its_expected_cpu(cli) -> None:
    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    cli("hosts", "add", "small", fixture_uri("small-host.xml"))
    assert cli("scan")[0] == 0
    code, out, err = cli("place", "--vcpus", "2", "--memory", "2G", "--policy", "place-rl", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["policy"] == "place-rl" and doc["chosen"] in ("busy", "small")
    meta = json.loads((SHIPPED / "policy.json").read_text())
    assert doc["expected_cpu"] == pytest.approx(meta["expected_cpu"])  # the prior it was trained with
    code, out, _ = cli("place", "--vcpus", "2", "--memory", "2G", "--policy", "place-rl", "--expected-cpu", "0.9",
                       "--json")
    assert code == 0 and json.loads(out)["expected_cpu"] == 0.9
    code, _, err = cli("place", "--vcpus", "2", "--memory", "2G", "--policy", "baseline:weighted:1:x:0")
    assert code == 2 and "baseline:weighted:C:V:M" in err and "Traceback" not in err


def test_place_runs_the_tuned_baseline_by_default_and_a_named_scorer_when_asked(cli) -> None:
    """No learned scorer beat the tuned placement baseline on every held-back case, so the shipped policy names
    the baseline for place (strategies.json); --policy default still runs the imitation scorer."""
    choice = json.loads((REPO / "policies" / "default" / "strategies.json").read_text())["place"]["strategy"]
    assert choice == json.loads((REPO / "policies" / "tuned_placement.json").read_text())["strategy"]
    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    assert cli("scan")[0] == 0
    code, out, err = cli("place", "--vcpus", "2", "--memory", "2G", "--json")
    assert code == 0, err
    assert json.loads(out)["policy"] == choice and json.loads(out)["expected_cpu"] == 0.5
    code, out, err = cli("place", "--vcpus", "2", "--memory", "2G", "--policy", "default", "--json")
    assert code == 0 and json.loads(out)["policy"] == "default", err


def test_training_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    trace = synthetic_trace(60, 400, 2)
    vms = np.arange(len(trace.names))
    cfg = rl.PlaceRlConfig(iterations=2, pairs=2, episodes=2, val_episodes=2, val_every=1, shapes=("identical",))
    for run in ("a", "b"):
        rl.train([(trace, vms)], tmp_path / run, cfg, ["synthetic"], log=lambda _: None)
    a, b = (json.loads((tmp_path / r / "policy.json").read_text()) for r in ("a", "b"))
    assert a["weights_sha256"] == b["weights_sha256"]


def test_training_refuses_a_start_that_ranks_by_host_order(tmp_path: Path) -> None:
    trace = synthetic_trace(40, 400, 1)
    cfg = rl.PlaceRlConfig(iterations=1, pairs=1, episodes=1, val_episodes=1, shapes=("identical",),
                           init="baseline:first-fit")
    with pytest.raises(UsageError, match="cannot start"):
        rl.train([(trace, np.arange(40))], tmp_path, cfg, ["synthetic"], log=lambda _: None)
