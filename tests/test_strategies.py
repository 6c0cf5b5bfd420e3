"""One decision path (issue 13): a strategy decides the same inside the simulator and on a stored scan.

For random fleets, the plan a strategy makes on the simulator's arrays equals, action for action,
the plan ``rebalance --policy NAME`` makes from the same state after it went through the store
(two recorded scans whose CPU-time counters give the same CPU use) and the registry.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from llmvirt.model.arrays import ClusterArrays, FleetSetup
from llmvirt.model.cluster import ScanResult
from llmvirt.policy import decide
from llmvirt.policy.constraints import Limits
from llmvirt.sim import cluster_arrays
from llmvirt.sim.field_policies import make_balancer
from llmvirt.store import database, registry, snapshots
from llmvirt.strategies import registry as strategies

T0 = datetime(2026, 12, 1, 8, 0, 0)
STEP_S = 300
# allocation ratios loose enough that llmvirt's hard rules never refuse a baseline's move here (Watcher's
# vm_workload_consolidation checks used memory, not provisioned memory: a refusal is tested on its own)
SETUP = FleetSetup(host_cores=16, mhz_per_core=2600.0, host_mem_mib=64 * 1024.0, cpu_allocation_ratio=4.0,
                   ram_allocation_ratio=8.0)
FLEET_BASELINES = ("watcher-wb", "watcher-wb:60", "watcher-vwc", "proxlb", "proxlb:5:cpu", "none")


def _random_view(rng: np.random.Generator) -> tuple[ClusterArrays, np.ndarray]:
    """A fleet of identical hosts; CPU use in 1/10,000 steps so the store's counters reproduce it exactly."""
    n_hosts, n_vms = int(rng.integers(3, 7)), int(rng.integers(6, 22))
    vcpus = rng.integers(1, 9, n_vms)
    cap = rng.choice([2048, 4096, 8192, 16384], n_vms).astype(np.float64)
    used = np.floor(cap * rng.uniform(0.2, 0.95, n_vms))
    util_k = rng.integers(0, 10001, n_vms)
    mhz = (util_k / 10000) * vcpus * SETUP.mhz_per_core
    view = ClusterArrays(SETUP, rng.integers(0, n_hosts, n_vms), vcpus, cap, mhz, used, cap.copy(), cap - used,
                     n_hosts, np.zeros(n_hosts, dtype=bool))
    return view, util_k


def _through_the_store(view: ClusterArrays, util_k: np.ndarray, db_url: str):  # noqa: ANN202
    """The view's cluster recorded as two scans STEP_S apart and read back as rebalance reads it."""
    engine = database.open_engine(db_url)
    cluster = view.to_cluster()
    for h in cluster.hosts:
        registry.add_host(engine, registry.RegisteredHost(h.name, "test:///default"))
    vm_index, _ = view.names(cluster)
    for step in (0, 1):
        for h in cluster.hosts:
            for v in h.vms:
                v.state = "running"
                v.cpu_util = None
                v.cpu_time_ns = step * int(util_k[vm_index[v.name]]) * (STEP_S * 10**9 // 10000) * v.vcpus
        snapshots.record_scan(engine, ScanResult(hosts=cluster.hosts), taken_at=T0 + timedelta(seconds=step * STEP_S))
    return snapshots.latest_cluster(engine)


@pytest.mark.parametrize("seed", range(6))
def test_fleet_baselines_plan_alike_in_the_simulator_and_on_a_stored_scan(seed: int, tmp_path) -> None:
    rng = np.random.default_rng(seed)
    view, util_k = _random_view(rng)
    scanned = _through_the_store(view, util_k, f"sqlite:///{tmp_path / 'eq.db'}")
    ctx = decide.Context(Limits(cpu_allocation_ratio=SETUP.cpu_allocation_ratio,
                                ram_allocation_ratio=SETUP.ram_allocation_ratio, reserved_memory_mib=0),
                         max_migrations=1000)
    in_sim = view.names(view.to_cluster())
    sim_names = {i: n for n, i in in_sim[0].items()}, {i: n for n, i in in_sim[1].items()}
    for name in FLEET_BASELINES:
        expected = [(sim_names[0][v], sim_names[1][h]) for v, h in make_balancer(name).decide(view)]
        plan = strategies.resolve(f"baseline:{name}", "balance").plan(_clone(scanned), "balance", ctx)
        assert [(m.vm, m.dst) for m in plan.moves] == expected, name
        assert not plan.unmovable, (name, plan.unmovable)


def _clone(cluster):  # noqa: ANN001, ANN202
    import copy

    return copy.deepcopy(cluster)


@pytest.mark.parametrize("seed", range(4))
def test_rule_scorers_plan_alike_in_the_simulator_and_on_a_stored_scan(seed: int, tmp_path) -> None:
    """llmvirt's own balancer (``LlmvirtBalancer`` in bench) and ``rebalance`` on the stored state."""
    from llmvirt.policy.sim_adapter import LlmvirtBalancer, limits_for

    rng = np.random.default_rng(100 + seed)
    view, util_k = _random_view(rng)
    scanned = _through_the_store(view, util_k, f"sqlite:///{tmp_path / 'eq.db'}")
    for rule in ("least-loaded", "best-fit"):
        sim = LlmvirtBalancer(f"baseline:{rule}", max_migrations=5)
        cluster = view.to_cluster()
        vm_names = {i: n for n, i in view.names(cluster)[0].items()}
        expected = [(vm_names[v], f"sim-{h}") for v, h in sim.decide(view)]
        ctx = decide.Context(limits_for(view.setup), max_migrations=5)
        plan = strategies.resolve(f"baseline:{rule}", "balance").plan(_clone(scanned), "balance", ctx)
        assert [(m.vm, m.dst) for m in plan.moves] == expected, rule


def test_cloudsim_arrays_from_a_stored_scan_equal_those_of_the_cluster(tmp_path) -> None:
    """PABFD and the consolidation head read the same arrays whether the cluster is in memory or was stored."""
    view, util_k = _random_view(np.random.default_rng(7))
    scanned = _through_the_store(view, util_k, f"sqlite:///{tmp_path / 'eq.db'}")
    cluster = view.to_cluster()
    vm_index, _ = view.names(cluster)
    for v in (v for h in cluster.hosts for v in h.vms):  # the same CPU use to the last bit: under the linear
        v.cpu_util = int(util_k[vm_index[v.name]]) / 10000  # power model PABFD's power deltas tie on every host
    direct, _ = cluster_arrays.cloudsim_state(cluster)
    stored, ident = cluster_arrays.cloudsim_state(scanned)
    for field in ("vm_host", "req", "util_mips", "placeable", "movable"):
        np.testing.assert_allclose(getattr(direct, field), getattr(stored, field), err_msg=field)
    np.testing.assert_allclose(direct.dc.total_mips, stored.dc.total_mips)
    pol = strategies.resolve("baseline:thr-mmt-0.8", "consolidate")
    assert isinstance(pol, strategies.CloudsimStrategy)
    a = pol.policy.decide(direct, 0.0)
    b = strategies.resolve("baseline:thr-mmt-0.8", "consolidate").policy.decide(stored, 0.0)
    assert a == b and ident.named(b) == [(ident.vm_name(v), ident.host_name(h)) for v, h in a]


def test_hard_rules_refuse_a_baselines_move_and_say_so(tmp_path) -> None:
    """Watcher's vm_workload_consolidation packs by used memory; llmvirt's allocation limit disposes."""
    view, util_k = _random_view(np.random.default_rng(0))
    scanned = _through_the_store(view, util_k, f"sqlite:///{tmp_path / 'eq.db'}")
    tight = decide.Context(Limits(cpu_allocation_ratio=4.0, ram_allocation_ratio=1.0, reserved_memory_mib=0),
                           max_migrations=1000)
    plan = strategies.resolve("baseline:watcher-vwc", "balance").plan(scanned, "balance", tight)
    assert plan.unmovable and all("refused: capacity" in why for why in plan.unmovable.values()), plan.unmovable
    for h in scanned.hosts:  # the kept moves leave every host within the limits
        assert sum(v.memory_mib for v in h.vms if v.running) <= h.memory_mib or not any(
            m.dst == h.name for m in plan.moves)


def test_pabfd_never_moves_a_passthrough_vm_nor_fills_a_maintenance_host(tmp_path) -> None:
    view, util_k = _random_view(np.random.default_rng(3))
    cluster = view.to_cluster()
    cluster.hosts[0].maintenance = True
    pinned = next(v for h in cluster.hosts[1:] for v in h.vms)
    pinned.pci_hostdevs = ("0000:41:00.0",)
    state, ident = cluster_arrays.cloudsim_state(cluster)
    for name in ("thr-mmt-0.5", "thr-mmt-0.9", "lr-mmt-1.2", "mad-mu-2.5"):
        pairs = strategies.resolve(f"baseline:{name}", "consolidate").policy.decide(state, 0.0)
        named = ident.named(pairs)
        assert all(dst != cluster.hosts[0].name for _, dst in named), name
        assert all(vm != pinned.name for vm, _ in named), name


def test_every_bench_name_runs_under_rebalance(cli, tmp_path) -> None:
    """The bench's default strategies of the balance and cloudsim scenarios are rebalance policies too."""
    from conftest import fixture_uri

    from llmvirt.bench.run import DEFAULT_BALANCE_POLICIES, DEFAULT_CLOUDSIM_POLICIES

    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    cli("hosts", "add", "spare", fixture_uri("busy-host.xml"))
    cli("scan")
    for name in (*DEFAULT_BALANCE_POLICIES, *DEFAULT_CLOUDSIM_POLICIES):
        goal = "consolidate" if name in DEFAULT_CLOUDSIM_POLICIES else "balance"
        code, out, err = cli("rebalance", "--policy", name if name == "llmvirt" else f"baseline:{name}",
                             "--goal", goal, "--json")
        assert code == 0, (name, out, err)
        assert json.loads(out)["goal"] == goal
    code, out, err = cli("rebalance", "--policy", "baseline:nonsense")
    assert code == 2 and "unknown baseline" in err and "Traceback" not in err
    code, out, err = cli("rebalance", "--goal", "sideways")
    assert code == 2 and "unknown goal" in err


@pytest.mark.parametrize(("rule", "seed"), [("mom", 5), ("proxmox", 50), ("proxmox", 51), ("proxmox", 52),
                                          ("mom:0.3:0.1", 6), ("proxmox:0.9:0.5", 53)])
def test_field_balloon_rules_on_hosts_take_the_simulators_cycle(rule: str, seed: int) -> None:
    """``rebalance --only balloon --policy baseline:mom|proxmox`` proposes what the memory scenario's MOM or
    Proxmox rule does in one cycle, then passes it through the shared safety limits."""
    from llmvirt.policy.tuning import plan_balloons, safe_target
    from llmvirt.sim.field_balloons import make_balloon

    rng = np.random.default_rng(seed)
    view, _ = _random_view(rng)
    view.setup = FleetSetup(host_cores=16, host_mem_mib=float(rng.choice([48, 96, 400])) * 1024)
    view.vm_balloon = np.floor(view.vm_mem_cap * rng.uniform(0.6, 1.0, view.vm_mem_cap.size))
    view.vm_mem_mib = np.floor(np.minimum(view.vm_mem_mib, view.vm_balloon))
    view.vm_unused_mib = view.vm_balloon - view.vm_mem_mib
    cluster = view.to_cluster()
    vm_index, _ = view.names(cluster)
    policy = make_balloon(rule)
    policy.rounds = 1
    sim = policy.targets(view)
    vms = {v.name: v for h in cluster.hosts for v in h.vms}
    expected = {n: safe_target(vms[n], float(sim[i]), False) for n, i in vm_index.items()}
    planned = plan_balloons(cluster, rule=rule)
    assert planned and {a.vm: a.target_mib for a in planned} == {n: t for n, t in expected.items() if t is not None}
    assert all(f"({'MOM' if rule.startswith('mom') else 'Proxmox'})" in a.reason or "pressure" in a.reason
               for a in planned)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_nova_dedicated_pinning_on_hosts_is_the_simulators_decision(fraction: float) -> None:
    """``rebalance --only pin --policy baseline:nova[:F]`` pins the VMs the pinning scenario's Nova dedicates, one
    exclusive CPU per vCPU inside the cell Nova chose and inside its dedicated set; every other VM floats over
    the CPUs no dedicated VM holds; reserved CPUs are never used."""
    from llmvirt.model.cluster import Cluster, Host, NumaCell, Vm
    from llmvirt.policy.tuning import plan_nova_pinning
    from llmvirt.sim.numa import SHARED, Topology
    from llmvirt.sim.pinning import NovaDedicated

    rng = np.random.default_rng(int(fraction * 100))
    cells = [NumaCell(0, tuple(range(0, 8)), 16384), NumaCell(1, tuple(range(8, 16)), 16384)]
    vms = [Vm(name=f"v{i}", uuid=f"u{i}", vcpus=int(rng.integers(1, 5)), memory_mib=1024, current_memory_mib=1024)
           for i in range(8)]
    host = Host(name="h", uri="test:///", cpus=16, memory_mib=32768, numa_cells=cells, vms=vms)
    actions, held = plan_nova_pinning(Cluster(hosts=[host]), fraction, reserved_cpus=1)
    topo = Topology(2, 7, 16384.0)  # CPU 0 reserved: 7 usable CPUs in the smaller cell
    codes, dedicated = NovaDedicated(fraction).pinning(topo, np.zeros((0, 8)), np.array([v.vcpus for v in vms]),
                                                       np.full(8, 1024.0))
    by_vm = {a.vm: a for a in actions}
    exclusive: set[int] = set()
    for i, vm in enumerate(vms):
        a = by_vm[vm.name]
        cpus = [c for cs in a.pins.values() for c in cs]
        assert 0 not in cpus
        if dedicated[i]:
            cell = set(cells[int(codes[i])].cpus)
            assert all(len(cs) == 1 for cs in a.pins.values()) and set(cpus) <= cell, a
            assert not exclusive & set(cpus)
            exclusive |= set(cpus)
            assert "dedicated" in a.reason
        else:
            assert codes[i] == SHARED and "shared" in a.reason
    shared = {c for i, vm in enumerate(vms) if not dedicated[i] for cs in by_vm[vm.name].pins.values() for c in cs}
    assert not shared & exclusive and (shared or dedicated.all())
    assert dedicated.any() and not held


def test_field_tuning_names_are_the_bench_names(cli) -> None:
    """``--only pin|balloon`` takes the memory and pinning scenarios' names; a bad one is one clear line."""
    from conftest import fixture_uri

    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    cli("scan")
    for only, name in (("balloon", "baseline:mom"), ("balloon", "proxmox"), ("pin", "baseline:nova"),
                       ("pin", "nova:0.25"), ("pin", "baseline:rules")):
        code, out, err = cli("rebalance", "--only", only, "--policy", name, "--json")
        assert code == 0, (name, err)
        doc = json.loads(out)
        assert doc["policy"] == name.removeprefix("baseline:") and all(a["kind"] == only for a in doc["actions"])
    code, _, err = cli("rebalance", "--only", "pin", "--policy", "baseline:nova:2")
    assert code == 2 and "0 < FRACTION <= 1" in err and "Traceback" not in err
    code, _, err = cli("rebalance", "--only", "balloon", "--policy", "baseline:nova")
    assert code == 2 and "baseline:mom[:P:G]|proxmox[:T:M]|tuned:mom|tuned:proxmox|rules" in err


def test_tuning_picks_the_lowest_cost_of_a_grid_on_training_days(monkeypatch, tmp_path) -> None:
    """``llmvirt tune`` keeps every grid point and names the one with the lowest honest cost as the family's best."""
    from conftest import SHARED

    from llmvirt.bench import tune
    from llmvirt.model.score import consolidation_cost

    monkeypatch.setitem(tune.GRIDS, "thr-mmt", ["thr-mmt-0.8", "thr-mmt-1.0"])
    day = SHARED / "traces" / "planetlab" / "20110303"
    doc = tune.tune_cloudsim([day], ["thr-mmt"], workers=1)
    fam = doc["families"]["thr-mmt"]
    assert [g["name"] for g in fam["grid"]] == ["thr-mmt-0.8", "thr-mmt-1.0"]
    assert fam["best"] == min(fam["grid"], key=lambda g: g["cost"])["name"]
    direct = tune.run_one(str(day), fam["best"])
    assert fam["cost"] == pytest.approx(consolidation_cost(direct), abs=1e-5)
    assert doc["train_days"] == ["20110303"] and doc["cost_weights"]


def test_the_tail_objective_weighs_each_familys_costliest_days() -> None:
    """``tail``: per trace family the mean day plus the mean of its costliest 10 % of days (at least one), summed;
    a family with more days of the same costs weighs the same; ``mean`` pools every day."""
    from llmvirt.bench import tune

    costs = {"a": [float(c) for c in range(1, 11)], "b": [5.0]}
    assert tune.objective(costs, "mean") == pytest.approx(60 / 11)
    assert tune.objective(costs, "tail") == pytest.approx((5.5 + 10) + (5 + 5))
    assert tune.objective({"a": costs["a"] * 2, "b": [5.0]}, "tail") == pytest.approx(25.5)
    assert tune.objective({"a": [1.0] * 19 + [41.0]}, "tail") == pytest.approx(3.0 + 21.0)  # the worst 2 of 20
    with pytest.raises(ValueError, match="unknown objective 'p99'"):
        tune.objective(costs, "p99")


def test_the_relative_tail_objective_weighs_each_trace_family_alike_whatever_its_scale() -> None:
    """``relative-tail``: each trace family's tail score over the reference's on the same family, summed; a family
    of ten times the cost counts the same, the reference scores one per family, and it needs the reference."""
    from llmvirt.bench import tune

    ref = {"big": [100.0, 300.0], "small": [1.0, 3.0]}
    assert tune.tail_parts([1.0, 3.0]) == (2.0, 3.0)
    assert tune.objective(ref, "relative-tail", ref) == pytest.approx(2.0)
    halved = {"big": [50.0, 150.0], "small": [1.0, 3.0]}
    assert tune.objective(halved, "relative-tail", ref) == pytest.approx(1.5)
    assert tune.objective({"big": [100.0, 300.0], "small": [0.5, 1.5]}, "relative-tail", ref) == pytest.approx(1.5)
    assert tune.objective(halved, "tail", ref) == pytest.approx((100 + 150) + (2 + 3))  # absolute: scale rules
    with pytest.raises(ValueError, match="needs the reference"):
        tune.objective(halved, "relative-tail", {"big": [1.0]})


def test_tune_by_the_relative_tail_runs_the_reference_too(monkeypatch, tmp_path) -> None:
    """Tuning one family by ``relative-tail`` also runs :data:`REFERENCE` on every day, and each point's score is
    its tail score over the reference's, per trace family, recomputed here from direct runs."""
    from conftest import SHARED
    from test_bench_fleets import generic_trace

    from llmvirt.bench import tune
    from llmvirt.sim import episodes

    monkeypatch.setitem(tune.GRIDS, "lr-mmt", ["lr-mmt-1.2"])
    day = str(SHARED / "traces" / "planetlab" / "20110303")
    usage = episodes.UsageDay(str(generic_trace(tmp_path / "wave.csv", vms=24, samples=302)), 0, "train",
                              episodes.SHAPES[0])
    doc = tune.tune_cloudsim([day, usage], ["lr-mmt"], workers=1, setting=tune.Setting(kind="relative-tail"))
    assert doc["objective"] == "relative-tail" and doc["reference"] == "thr-mmt-0.8"
    assert list(doc["families"]) == ["lr-mmt"]
    costs = {n: [tune.run_one(d, n)["cost"] for d in (day, usage)] for n in ("lr-mmt-1.2", "thr-mmt-0.8")}
    want = sum(costs["lr-mmt-1.2"][i] / costs["thr-mmt-0.8"][i] for i in (0, 1))  # one day a family: 2c / 2c_ref
    assert doc["families"]["lr-mmt"]["grid"][0]["objective"] == pytest.approx(want, rel=1e-5)


def test_tune_on_usage_days_by_the_tail_objective(cli, monkeypatch, tmp_path) -> None:
    """``llmvirt tune --usage-trace T --objective tail`` runs every day of T's training VMs beside the PlanetLab
    days, scores each point by the tail objective over the two families, and names the lowest as best."""
    from conftest import SHARED
    from test_bench_fleets import generic_trace

    from llmvirt.bench import tune
    from llmvirt.sim import episodes

    monkeypatch.setitem(tune.GRIDS, "thr-mmt", ["thr-mmt-0.8", "thr-mmt-1.0"])
    day = SHARED / "traces" / "planetlab" / "20110303"
    trace = generic_trace(tmp_path / "wave.csv", vms=24, samples=302)
    out_file = tmp_path / "tuned_tail.json"
    code, _, err = cli("tune", "--trace", str(day), "--usage-trace", str(trace), "--objective", "tail",
                       "--family", "thr-mmt", "--workers", "1", "--out", str(out_file))
    assert code == 0, err
    doc = json.loads(out_file.read_text())
    usage = episodes.UsageDay(str(trace), 0, "train", episodes.SHAPES[0])
    assert doc["objective"] == "tail" and doc["train_days"] == ["20110303", usage.label]
    fam = doc["families"]["thr-mmt"]
    for point in fam["grid"]:
        pl, wave = (tune.run_one(d, point["name"])["cost"] for d in (str(day), usage))
        assert point["objective"] == pytest.approx(2 * pl + 2 * wave, abs=1e-5)  # one day each: mean + worst
        assert point["cost"] == pytest.approx((pl + wave) / 2, abs=1e-5)
    assert fam["best"] == min(fam["grid"], key=lambda g: g["objective"])["name"]


def test_tune_for_slower_migrations_runs_the_production_experiment(cli, monkeypatch, tmp_path) -> None:
    """``llmvirt tune --migration-slowdown 10`` runs every point with migrations ten times slower after the initial
    placement: the same runs as the sim-to-production experiment (bench/consolidate_relative_production.json
    recorded the default's cost that way on 20110325), slower than at the simulator's speed, and says so in its
    file."""
    from conftest import SHARED

    from llmvirt.bench import tune

    monkeypatch.setitem(tune.GRIDS, "thr-mmt", ["thr-mmt-0.8"])
    day = SHARED / "traces" / "planetlab" / "20110325"
    bench = Path(__file__).resolve().parents[1] / "bench"
    recorded = json.loads((bench / "consolidate_relative_production.json").read_text())["runs"]
    slow = tune.run_one(str(day), "relative-tuned:gated-wake-thr-mmt", migration_slowdown=10.0)
    assert slow["cost"] == pytest.approx(recorded["20110325|relative-tuned:gated-wake-thr-mmt"]["cost"], rel=1e-9)
    fast = tune.run_one(str(day), "relative-tuned:gated-wake-thr-mmt")
    assert slow["migration_vm_s"] > 5 * fast["migration_vm_s"] and slow["cost"] > fast["cost"]
    out_file = tmp_path / "slow.json"
    code, _, err = cli("tune", "--trace", str(SHARED / "traces" / "planetlab" / "20110303"), "--family", "thr-mmt",
                       "--migration-slowdown", "10", "--workers", "1", "--out", str(out_file))
    assert code == 0, err
    doc = json.loads(out_file.read_text())
    assert doc["migration_slowdown"] == 10.0
    point = doc["families"]["thr-mmt"]["grid"][0]
    assert point["cost"] == pytest.approx(tune.run_one(str(SHARED / "traces" / "planetlab" / "20110303"),
                                                       point["name"], migration_slowdown=10.0)["cost"], abs=1e-5)


def test_re_tuning_for_slow_migrations_beats_the_default_at_that_speed_on_the_committed_runs() -> None:
    """bench/RESULTS.md, "Re-tuning for slower migrations": the best point tuned on the training days with
    migrations 10x slower is cheaper than the default (tuned at the simulator's speed) on every held-back day at
    that speed, and the older default costs more than both."""
    from llmvirt.sim.split import HELD_DAYS, TRAIN_DAYS

    bench = Path(__file__).resolve().parents[1] / "bench"
    doc = json.loads((bench / "tuned_slow10.json").read_text())
    assert doc["migration_slowdown"] == 10.0 and doc["train_days"] == list(TRAIN_DAYS)
    best = min((e["grid"] for e in doc["families"].values()), key=lambda g: min(p["cost"] for p in g))
    point = min(best, key=lambda p: p["cost"])["name"]
    runs = json.loads((bench / "consolidate_slow10_production.json").read_text())["runs"]
    for day in HELD_DAYS:
        default = runs[f"{day}|relative-tuned:gated-wake-thr-mmt"]["cost"]
        assert runs[f"{day}|{point}"]["cost"] < default < runs[f"{day}|tuned:gated-wake-thr-mmt"]["cost"]


def test_tune_refuses_a_bad_usage_trace_or_objective_in_one_line(cli, tmp_path) -> None:
    from conftest import SHARED

    day = str(SHARED / "traces" / "planetlab" / "20110303")
    (tmp_path / "junk.csv").write_text("not,a,trace\n1,2,3\n")
    for extra, says in ((["--usage-trace", str(tmp_path / "none.csv")], "none.csv does not exist"),
                        (["--usage-trace", str(tmp_path / "junk.csv")], "junk.csv: missing column"),
                        (["--objective", "p99"], "unknown objective 'p99'"),
                        (["--objective", "relative"], "relative-tail"),
                        (["--migration-slowdown", "0"], "--migration-slowdown must be above 0")):
        code, _, err = cli("tune", "--trace", day, "--family", "thr-mmt", "--out", str(tmp_path / "t.json"), *extra)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "t.json").exists()


def test_the_committed_tail_tuning_covers_three_families_of_training_days_and_runs_by_name() -> None:
    """policies/tuned_tail.json: every family tuned by the tail objective on the PlanetLab training days and every
    day of both Bitbrains traces' training VMs; ``tail-tuned:FAMILY`` runs its best point in bench and rebalance."""
    from llmvirt.sim.split import TRAIN_DAYS
    from llmvirt.strategies import registry, tuned
    from llmvirt.strategies.registry import UsageError

    doc = json.loads(tuned.TUNED_TAIL_FILE.read_text())
    days = doc["train_days"]
    assert doc["objective"] == "tail" and days[:3] == list(TRAIN_DAYS) and len(days) == 3 + 7 + 30
    assert all(":train:" in d for d in days[3:]) and {d.split(":")[0] for d in days[3:]} == {
        "rnd_2013-7_week1.tar.gz", "rnd_2013-8.tar.gz"}
    for entry in doc["families"].values():
        assert entry["best"] == min(entry["grid"], key=lambda g: g["objective"])["name"]
    best = doc["families"]["gated-thr-mmt"]["best"]
    policy, point = registry.make_policy("tail-tuned:gated-thr-mmt"), registry.make_policy(best)
    assert policy.name == "tail-tuned:gated-thr-mmt"
    assert (policy.detector.threshold, policy.below, policy.wake_cost) == (
        point.detector.threshold, point.below, point.wake_cost)
    assert registry.resolve("baseline:tail-tuned:gated-wake-thr-mmt", "consolidate").policy.wake_cost
    with pytest.raises(UsageError, match="no tuned 'nope'"):
        registry.resolve("baseline:tail-tuned:nope", "consolidate")


def test_the_committed_relative_tail_tuning_puts_both_gates_on_one_grid_and_runs_by_name() -> None:
    """policies/tuned_relative_tail.json: the same 40 training days as tuned_tail.json, by the scale-free tail
    (the reference scoring one per trace family), both gated families on the one 90-point grid;
    ``relative-tuned:FAMILY`` runs its best point."""
    from llmvirt.bench import tune
    from llmvirt.strategies import registry, tuned

    doc = json.loads(tuned.TUNED_RELATIVE_FILE.read_text())
    assert doc["objective"] == "relative-tail" and doc["reference"] == tune.REFERENCE
    assert doc["train_days"] == json.loads(tuned.TUNED_TAIL_FILE.read_text())["train_days"]
    fams = doc["families"]
    for name, entry in fams.items():
        assert [g["name"] for g in entry["grid"]] == tune.GRIDS[name]
        assert entry["best"] == min(entry["grid"], key=lambda g: g["objective"])["name"]
    assert len(fams["gated-thr-mmt"]["grid"]) == len(fams["gated-wake-thr-mmt"]["grid"]) == 90
    ref = next(g for g in fams["thr-mmt"]["grid"] if g["name"] == tune.REFERENCE)
    assert ref["objective"] == pytest.approx(3.0)  # three trace families, each over itself
    policy = registry.make_policy("relative-tuned:gated-wake-thr-mmt")
    point = registry.make_policy(fams["gated-wake-thr-mmt"]["best"])
    assert policy.name == "relative-tuned:gated-wake-thr-mmt" and policy.wake_cost
    assert (policy.detector.threshold, policy.below, policy.every) == (
        point.detector.threshold, point.below, point.every)


def test_tuning_by_each_objective_writes_its_own_file_by_default() -> None:
    """``llmvirt tune`` without ``--out`` never overwrites another objective's or another fleet's tuning: each
    (fleet, objective) has its own file, and the files the names read are those."""
    from llmvirt.bench import tune
    from llmvirt.strategies import tuned

    files = {(f, o): tuned.tuned_fleet_file(f, o) for f in ("cloudsim", "ibm", "mixed") for o in tune.OBJECTIVES}
    assert len(set(files.values())) == len(files)
    assert [files[("cloudsim", o)] for o in tune.OBJECTIVES] == list(tuned.TUNED_SOURCES.values())
    assert files[("ibm", "mean")].name == "tuned_ibm.json"
    assert files[("mixed", "relative-tail")].name == "tuned_mixed_relative_tail.json"


def test_tuned_and_gated_names_resolve_in_both_places(tmp_path) -> None:
    from llmvirt.errors import UsageError
    from llmvirt.strategies import tuned

    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"families": {"thr-mmt": {"best": "thr-mmt-0.9"}}}))
    assert tuned.tuned_name("thr-mmt", path) == "thr-mmt-0.9"
    with pytest.raises(ValueError, match="no tuned 'lr-mmt'"):
        tuned.tuned_name("lr-mmt", path)
    gated = strategies.make_policy("gated:0.95:4:0.3")
    assert (gated.detector.threshold, gated.every, gated.below, gated.wake_cost) == (0.95, 4, 0.3, False)
    wake = strategies.make_policy("gated:0.9:1:0.4:wake")
    assert (wake.detector.threshold, wake.every, wake.below, wake.wake_cost) == (0.9, 1, 0.4, True)
    assert isinstance(strategies.resolve("baseline:gated:0.95:4:0.3", "consolidate"), strategies.CloudsimStrategy)
    with pytest.raises(UsageError, match="gated:THRESHOLD"):
        strategies.resolve("baseline:gated:x", "consolidate")
    with pytest.raises(UsageError, match="gated:THRESHOLD"):
        strategies.resolve("baseline:gated:0.9:1:0.4:sleep", "consolidate")


@pytest.mark.parametrize("seed", range(4))
def test_field_baselines_explain_exactly_the_moves_they_make(seed: int) -> None:
    """Watcher and ProxLB say why they move (what ``rebalance`` prints) without changing what they decide."""
    from llmvirt.sim.field_policies import ProxLB, WatcherWorkloadBalance

    rng = np.random.default_rng(300 + seed)
    view, _ = _random_view(rng)
    for balancer in (WatcherWorkloadBalance(threshold=25.0), ProxLB(), ProxLB(5.0, "cpu")):
        said = balancer.explain(view)
        assert [(v, h) for v, h, _ in said] == balancer.decide(view)
        assert all(("threshold" in why) or ("balanciness" in why) for _, _, why in said)


def test_tuned_balance_and_memory_points_are_committed_and_run_by_name(cli) -> None:
    """``tuned:FAMILY`` runs a balance or memory family's committed point (policies/tuned_balance.json,
    tuned_memory.json) under ``bench`` and ``rebalance``; the files are what bench/tuned_scenarios.py
    derives from the benchmarks' training grids."""
    import importlib.util

    from conftest import fixture_uri

    from llmvirt.strategies.registry import make_balancer, make_balloon
    from llmvirt.strategies.tuned import TUNED_BALANCE_FILE, TUNED_MEMORY_FILE

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("tuned_scenarios", root / "bench/tuned_scenarios.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for path in (TUNED_BALANCE_FILE, TUNED_MEMORY_FILE):
        fams = json.loads(path.read_text())["families"]
        assert {f: v["best"] for f, v in script._best({f: v["by_trace"] for f, v in fams.items()}).items()} == \
            {f: v["best"] for f, v in fams.items()}
    cpsat = make_balancer("tuned:cp-sat")
    assert cpsat.name == "tuned:cp-sat" and (cpsat.max_moves, cpsat.move_price) == (2, 0.1)
    mom = make_balloon("baseline:tuned:mom")
    assert mom.name == "baseline:tuned:mom" and mom.pressure_threshold == 0.06
    with pytest.raises(ValueError, match="no tuned"):
        make_balancer("tuned:nope")
    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    cli("hosts", "add", "spare", fixture_uri("busy-host.xml"))
    cli("scan")
    for name in ("baseline:tuned:watcher-wb", "baseline:tuned:cp-sat", "baseline:tuned:llmvirt-rl-fallback"):
        code, out, err = cli("rebalance", "--policy", name, "--json")
        assert code == 0, (name, err)
        assert json.loads(out)["policy"].startswith(f"{name} (")
    code, out, err = cli("rebalance", "--only", "balloon", "--policy", "baseline:tuned:mom", "--json")
    assert code == 0 and "mom:0.06:0.2" in json.loads(out)["policy"], err
    code, out, err = cli("rebalance", "--only", "balloon", "--policy", "baseline:mom:2", "--json")
    assert code == 2 and "fraction" in err and "Traceback" not in err
