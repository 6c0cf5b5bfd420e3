"""Simulated fleets of other servers (issue 15): CloudSim's data centre built from other host models of its power
package, baselines re-tuned on them, and the consolidation network trained on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

from llmvirt.sim import episodes
from llmvirt.sim.datacenter import FLEETS, cloudsim_datacenter, mean_host_mips, planetlab_day
from llmvirt.sim.power import ML110_G4, ML110_G5

PLANETLAB = SHARED / "traces" / "planetlab"
DAY = PLANETLAB / "20110306"  #: a training day (898 VMs)


def test_cloudsims_fleet_is_still_cloudsims_data_centre_bit_for_bit() -> None:
    """The default fleet is CloudSim's HP pair as before, and a PlanetLab day read as a usage day on 800 hosts is
    the same data centre as the day itself."""
    dc = planetlab_day(str(DAY))
    assert dc.pe_mips[:4].tolist() == [1860.0, 2660.0, 1860.0, 2660.0]
    assert np.array_equal(dc.total_mips, dc.pe_mips * 2) and np.all(dc.ram_mb == 4096)
    assert np.array_equal(dc.power_table[:2], np.array([ML110_G4, ML110_G5]))
    as_usage = episodes.datacenter(episodes.UsageDay(str(DAY), 0, "all", 800 / dc.n_vms))
    for f in ("pe_mips", "total_mips", "power_table", "ram_mb", "bw", "vm_mips", "vm_ram", "util"):
        assert np.array_equal(getattr(as_usage, f), getattr(dc, f)), f
    assert episodes.on_fleet(DAY, "cloudsim") == str(DAY)
    assert episodes.family(episodes.on_fleet(DAY, "ibm")) == "planetlab"


@pytest.mark.parametrize("fleet", ["ibm", "mixed"])
def test_another_fleet_alternates_its_models_with_cloudsims_cpu_per_vm(fleet: str) -> None:
    """Host ``i`` is the fleet's model ``i % len``; the fleet has the CPU per VM of CloudSim's 800 hosts for the
    lightest PlanetLab day, grown only as far as every VM can be created."""
    models = FLEETS[fleet]
    day = episodes.on_fleet(DAY, fleet)
    assert isinstance(day, episodes.UsageDay) and day.label.endswith(f":{fleet}")
    dc = episodes.datacenter(day)
    for i in range(len(models) * 2):
        m = models[i % len(models)]
        assert (dc.pe_mips[i], dc.total_mips[i], dc.ram_mb[i]) == (m.pe_mips, m.total_mips, m.ram_mb)
        assert tuple(dc.power_table[i]) == m.power
    cloudsim_cpu_per_vm = 800 / 1052 * mean_host_mips("cloudsim")
    assert dc.total_mips.sum() / dc.n_vms == pytest.approx(cloudsim_cpu_per_vm, rel=0.05)
    assert dc.n_hosts == episodes._hosts(day) and episodes._holds_every_vm(dc)
    assert not episodes._holds_every_vm(cloudsim_datacenter(episodes._day_trace(day), dc.n_hosts // 2, fleet))
    with pytest.raises(ValueError, match="unknown fleet"):
        episodes.UsageDay(str(DAY), 0, "all", 0.1, "blade")


def test_tuning_on_another_fleet_runs_there_and_says_so(monkeypatch) -> None:
    """``tune_cloudsim(fleet=...)`` runs every grid point on that fleet's servers (other costs than CloudSim's),
    records the fleet, and its best is what a direct run on those servers costs."""
    from llmvirt.bench import tune
    from llmvirt.model.score import consolidation_cost

    monkeypatch.setitem(tune.GRIDS, "thr-mmt", ["thr-mmt-0.8", "thr-mmt-1.0"])
    doc = tune.tune_cloudsim([DAY], ["thr-mmt"], workers=1, setting=tune.Setting(fleet="ibm"))
    home = tune.tune_cloudsim([DAY], ["thr-mmt"], workers=1)
    assert doc["fleet"] == "ibm" and "fleet" not in home
    fam = doc["families"]["thr-mmt"]
    assert fam["cost"] == pytest.approx(consolidation_cost(tune.run_one(str(DAY), fam["best"], "ibm")), abs=1e-5)
    assert fam["cost"] < 0.7 * home["families"]["thr-mmt"]["cost"]  # 132 hosts draw less than 800
    with pytest.raises(ValueError, match="unknown fleet"):
        tune.tune_cloudsim([DAY], ["thr-mmt"], workers=1, setting=tune.Setting(fleet="blade"))


def test_the_committed_fleet_tunings_are_of_the_training_days_on_their_fleet() -> None:
    """policies/tuned_ibm.json and tuned_mixed.json: every family tuned on the training days, on their fleet,
    each family's best the lowest cost of its grid."""
    from llmvirt.sim.split import TRAIN_DAYS
    from llmvirt.strategies.tuned import tuned_fleet_file, tuned_name

    for fleet in ("ibm", "mixed"):
        doc = json.loads(tuned_fleet_file(fleet).read_text())
        assert doc["fleet"] == fleet and doc["train_days"] == list(TRAIN_DAYS)
        for family, f in doc["families"].items():
            assert f["best"] == min(f["grid"], key=lambda g: g["cost"])["name"]
            assert tuned_name(family, tuned_fleet_file(fleet)) == f["best"]


def test_tune_and_train_refuse_an_unknown_fleet_in_one_line(cli, tmp_path: Path) -> None:
    """``--fleet`` that no fleet has: one line, exit 2, nothing written."""
    for args in (("tune", "--trace", str(DAY), "--fleet", "blade", "--out", str(tmp_path / "out")),
                 ("train", "--head", "consolidate-net", "--trace", str(PLANETLAB), "--fleet", "blade", "--out",
                  str(tmp_path / "out"))):
        code, _, err = cli(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "fleet" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_training_on_another_fleet_lowers_its_cost_and_records_the_fleet(tmp_path: Path) -> None:
    """A tiny run on one training day on IBM servers lowers the cost there below the untrained policy's; the
    trainer runs each day on each fleet, and the checkpoint says which."""
    from llmvirt.learn import train_consolidate_net as tcn
    from llmvirt.policy import consolidate_net as cn

    both = tcn.training_episodes(PLANETLAB, tcn.ConsolidateNetConfig(days=("20110306",), fleets=("cloudsim", "ibm")))
    assert [episodes.label(e) for e in both] == ["20110306", "20110306:all:0:0.15:ibm"]
    cfg = tcn.ConsolidateNetConfig(iterations=2, pairs=2, keep_every=1, days=("20110306",), workers=1,
                                   forecast_samples=20_000, forecast_epochs=2, fleets=("ibm",))
    record = tcn.train(PLANETLAB, tmp_path, cfg, log=lambda _: None)
    assert list(record["kept_cost"]) == ["20110306:all:0:0.15:ibm"] and record["kept_relative_cost"] < 1.0
    _, meta = cn.load(tmp_path)
    assert meta["training_data"]["fleets"] == ["ibm"] and record["config"]["fleets"] == ["ibm"]


def test_the_committed_networks_trained_on_two_fleets_beat_their_fallback_on_a_third() -> None:
    """The three opt-in networks trained with ``--fleet cloudsim --fleet ibm`` load by the registry's name, say
    which servers they trained on, and cost under 0.9x their fallback (the gated THR-MMT, also the best tuned
    on the mixed fleet) on a training day on the mixed fleet, whose servers no network trained on."""
    from llmvirt.model.score import consolidation_cost
    from llmvirt.policy import consolidate_net as cn
    from llmvirt.sim.cloudsim_policies import run_policy
    from llmvirt.sim.engine import Simulation
    from llmvirt.strategies import registry
    from llmvirt.strategies.tuned import tuned_fleet_file, tuned_name

    root = Path(__file__).resolve().parents[1] / "policies" / "consolidate-net-fleets"
    day = episodes.on_fleet(DAY, "mixed")
    assert tuned_name("gated-thr-mmt", tuned_fleet_file("mixed")) == "gated:0.95:1:0.5"
    fallback = consolidation_cost(run_policy(Simulation(episodes.datacenter(day)), cn.policy(None)))
    for seed in range(3):
        policy = registry.resolve(f"llmvirt-net:{root / f'seed{seed}'}", "consolidate").policy
        assert isinstance(policy, cn.NeuralConsolidation)
        _, meta = cn.load(root / f"seed{seed}")
        assert meta["training_data"]["fleets"] == ["cloudsim", "ibm"] and meta["seed"] == seed
        cost = consolidation_cost(run_policy(Simulation(episodes.datacenter(day)), policy))
        assert cost < 0.9 * fallback, (seed, cost, fallback)


def test_the_committed_networks_trained_across_traces_and_servers_beat_their_fallback_on_both() -> None:
    """The three opt-in networks trained with ``--extra-trace`` July and ``--fleet cloudsim --fleet ibm`` load by
    the registry's name, say what they trained on, and cost less than their fallback on a PlanetLab training day
    on IBM servers and under 0.85x on a tight Bitbrains July training day (half a host per VM)."""
    from llmvirt.model.score import consolidation_cost
    from llmvirt.policy import consolidate_net as cn
    from llmvirt.sim.cloudsim_policies import run_policy
    from llmvirt.sim.engine import Simulation
    from llmvirt.strategies import registry

    root = Path(__file__).resolve().parents[1] / "policies" / "consolidate-net-both"
    july = SHARED / "traces" / "bitbrains-rnd" / "rnd_2013-7_week1.tar.gz"
    tight = episodes.usage_days(july, "train", 2)[1]
    assert tight.hosts_per_vm == episodes.TIGHT_HOSTS_PER_VM
    days = [episodes.on_fleet(DAY, "ibm"), tight]

    def cost(day: episodes.Episode, policy: object) -> float:
        return consolidation_cost(run_policy(Simulation(episodes.datacenter(day)), policy))

    fallback = [cost(day, cn.policy(None)) for day in days]
    for seed in range(3):
        policy = registry.resolve(f"llmvirt-net:{root / f'seed{seed}'}", "consolidate").policy
        assert isinstance(policy, cn.NeuralConsolidation) and policy.forecaster is not None
        _, meta = cn.load(root / f"seed{seed}")
        assert meta["training_data"]["fleets"] == ["cloudsim", "ibm"] and meta["seed"] == seed
        assert [t["trace"] for t in meta["training_data"]["extra_traces"]] == [july.name]
        ibm, bitbrains = (cost(day, policy) / base for day, base in zip(days, fallback, strict=True))
        assert ibm < 1.0 and bitbrains < 0.85, (seed, ibm, bitbrains)


#: the committed networks kept by validation days: directory -> (seeds, traces whose training VMs' last days also
#: chose, the bound their validation cost is below)
VALIDATED = {"consolidate-net-validated": ((0, 1), (), 0.9),
             "consolidate-net-validated-august": ((0, 1), ("rnd_2013-8.tar.gz",), 0.97)}


@pytest.mark.parametrize("name", sorted(VALIDATED))
def test_the_committed_networks_chosen_by_validation_days_reproduce_their_validation_cost(name: str) -> None:
    """The opt-in networks trained with ``--validate-days 3`` load by the registry's name, say which days chose
    them (the later July days of the training VMs, and with ``--validate-trace`` the August training VMs' last
    days, on both training fleets), and cost on those days exactly what their record says (each trace family
    weighing the same), below the fallback's."""
    from llmvirt.learn import train_consolidate_net as tcn
    from llmvirt.model.score import consolidation_cost
    from llmvirt.policy import consolidate_net as cn
    from llmvirt.sim.cloudsim_policies import run_policy
    from llmvirt.sim.engine import Simulation
    from llmvirt.strategies import registry

    seeds, others, bound = VALIDATED[name]
    root = Path(__file__).resolve().parents[1] / "policies" / name
    bitbrains = SHARED / "traces" / "bitbrains-rnd"
    cfg = tcn.ConsolidateNetConfig(fleets=("cloudsim", "ibm"), validate_days=3)
    days = tcn.validation_episodes(cfg, [bitbrains / "rnd_2013-7_week1.tar.gz"], [bitbrains / o for o in others])
    labels, families = [episodes.label(d) for d in days], np.array([episodes.family(d) for d in days])
    fallback = [consolidation_cost(run_policy(Simulation(episodes.datacenter(d)), cn.policy(None))) for d in days]
    for seed in seeds:
        policy = registry.resolve(f"llmvirt-net:{root / f'seed{seed}'}", "consolidate").policy
        _, meta = cn.load(root / f"seed{seed}")
        assert meta["seed"] == seed and meta["training_data"]["validation"]["days_after_training"] == 3
        record = meta["training"]["validation"]
        assert record["days"] == labels and record["kept_iteration"] > 0
        assert record.get("traces", []) == list(others)
        assert list(record["fallback_cost"].values()) == pytest.approx(fallback, rel=1e-12)
        rel = np.array([consolidation_cost(run_policy(Simulation(episodes.datacenter(d)), policy)) / base
                        for d, base in zip(days, fallback, strict=True)])
        cost = np.mean([rel[families == f].mean() for f in sorted(set(families))])
        assert cost == pytest.approx(record["kept_relative_cost"], rel=1e-9) and cost < bound, (seed, cost)



def test_the_committed_networks_trained_on_three_trace_families_reproduce_their_training_cost() -> None:
    """The opt-in networks trained with ``--extra-trace`` July and August and ``--fleet cloudsim --fleet ibm``
    load by the registry's name, say what they trained on, and cost exactly their record's kept cost, below the
    fallback's, on a PlanetLab training day on IBM servers and on a tight training day of each Bitbrains month."""
    from llmvirt.model.score import consolidation_cost
    from llmvirt.policy import consolidate_net as cn
    from llmvirt.sim.cloudsim_policies import run_policy
    from llmvirt.sim.engine import Simulation
    from llmvirt.strategies import registry

    root = Path(__file__).resolve().parents[1] / "policies" / "consolidate-net-three"
    months = [SHARED / "traces" / "bitbrains-rnd" / n for n in ("rnd_2013-7_week1.tar.gz", "rnd_2013-8.tar.gz")]
    days = [episodes.on_fleet(DAY, "ibm"), *(episodes.usage_days(m, "train", 2)[1] for m in months)]
    assert all(d.hosts_per_vm == episodes.TIGHT_HOSTS_PER_VM for d in days[1:])

    def cost(day: episodes.Episode, policy: object) -> float:
        return consolidation_cost(run_policy(Simulation(episodes.datacenter(day)), policy))

    fallback = [cost(day, cn.policy(None)) for day in days]
    for seed in (0, 1):
        policy = registry.resolve(f"llmvirt-net:{root / f'seed{seed}'}", "consolidate").policy
        assert isinstance(policy, cn.NeuralConsolidation) and policy.forecaster is not None
        _, meta = cn.load(root / f"seed{seed}")
        assert meta["training_data"]["fleets"] == ["cloudsim", "ibm"] and meta["seed"] == seed
        assert [t["trace"] for t in meta["training_data"]["extra_traces"]] == [m.name for m in months]
        record = meta["training"]
        for day, base in zip(days, fallback, strict=True):
            label = episodes.label(day)
            assert record["fallback_cost"][label] == pytest.approx(base, rel=1e-12)
            kept = cost(day, policy)
            assert kept == pytest.approx(record["kept_cost"][label]["cost"], rel=1e-12) and kept < base, label


@pytest.mark.parametrize(("directory", "fallback", "gate", "seeds"), [
    ("consolidate-net-wake-three", "gated:0.95:1:0.4:wake", (0.95, 0.4, True), (0, 1)),
    ("consolidate-net-relative", "gated:0.9:1:0.3:wake", (0.9, 0.3, True), (0, 1)),  # on the present default
])
def test_the_committed_wake_aware_networks_trained_on_three_trace_families_reproduce_their_training_cost(
        directory: str, fallback: str, gate: tuple[float, float, bool], seeds: tuple[int, ...]) -> None:
    """The opt-in networks trained on a wake-aware gate with ``--extra-trace`` July and August load by the
    registry's name on that gate, say what they trained on, and cost exactly their record's kept cost on a tight
    training day of each Bitbrains month."""
    from llmvirt.model.score import consolidation_cost
    from llmvirt.policy import consolidate_net as cn
    from llmvirt.sim.cloudsim_policies import run_policy
    from llmvirt.sim.engine import Simulation
    from llmvirt.strategies import registry

    root = Path(__file__).resolve().parents[1] / "policies" / directory
    months = [SHARED / "traces" / "bitbrains-rnd" / n for n in ("rnd_2013-7_week1.tar.gz", "rnd_2013-8.tar.gz")]
    days = [episodes.usage_days(m, "train", 2)[1] for m in months]
    for seed in seeds:
        policy = registry.resolve(f"llmvirt-net:{root / f'seed{seed}'}", "consolidate").policy
        assert isinstance(policy, cn.NeuralConsolidation) and policy.forecaster is not None
        assert (policy.detector.threshold, policy.below, policy.wake_cost) == gate
        _, meta = cn.load(root / f"seed{seed}")
        assert meta["fallback_point"] == fallback and meta["seed"] == seed
        assert [t["trace"] for t in meta["training_data"]["extra_traces"]] == [m.name for m in months]
        record = meta["training"]
        for day in days:
            label = episodes.label(day)
            base = consolidation_cost(run_policy(Simulation(episodes.datacenter(day)), cn.policy(
                None, fallback=fallback)))
            assert record["fallback_cost"][label] == pytest.approx(base, rel=1e-12)
            kept = consolidation_cost(run_policy(Simulation(episodes.datacenter(day)), policy))
            assert kept == pytest.approx(record["kept_cost"][label]["cost"], rel=1e-12), label
