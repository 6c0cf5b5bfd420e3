"""``llmvirt bench --scenario fleets``: the hard balance scenario on a trace the project does not have.

A reviewer or an operator brings a trace in the generic format; the same fleets, cost and policy names
the benchmarks use run on it from the command line, the learned policy among them.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from llmvirt.bench import fleets
from llmvirt.sim.traces import load_generic


def generic_trace(path: Path, vms: int = 36, samples: int = 120, seed: int = 0) -> Path:
    """A generic-format CSV: a daily-ish wave per VM and bursts, 300 s apart."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["vm", "timestamp", "cpu_pct", "mem_mib", "vcpus", "mem_capacity_mib"])
        for v in range(vms):
            vcpus, cap, phase = int(rng.choice([1, 2, 4])), int(rng.choice([2048, 4096, 8192])), rng.uniform()
            for t in range(samples):
                burst = 55.0 if rng.uniform() < 0.08 else 0.0
                cpu = min(100.0, max(0.0, 35 + 25 * math.sin(2 * math.pi * (t / 96 + phase)) + burst))
                w.writerow([f"vm{v}", 1_700_000_000 + 300 * t, f"{cpu:.1f}", cap // 2, vcpus, cap])
    return path


def test_fleets_scenario_runs_the_learned_policy_and_tuned_baselines_on_a_generic_trace(cli, tmp_path) -> None:
    trace = generic_trace(tmp_path / "wave.csv")
    code, out, err = cli("bench", "--scenario", "fleets", "--trace", str(trace), "--seeds", "2", "--fleets", "3",
                         "--policies", "none,tuned:cp-sat,llmvirt-rl", "--json")
    assert code == 0, err
    doc = json.loads(out)
    rows = {r["policy"]: r for r in doc["policies"]}
    assert list(rows) == ["none", "tuned:cp-sat", "llmvirt-rl"]
    assert rows["tuned:cp-sat"]["runs"] == "cp-sat:2:0.1"  # the committed tuned point
    assert doc["seeds"] == [0, 1] and all(len(r["cost"]) == 2 for r in rows.values())
    assert rows["none"]["unmet_demand_pct"] > 0 and rows["none"]["migrations"] == 0  # the fleets do overload
    for r in rows.values():
        assert r["cost_mean"] >= r["bound_core_h"] - 1e-9  # no policy under the fluid bound
        assert r["refused"] == 0
    assert rows["llmvirt-rl"]["migrations"] > 0


def test_a_generic_trace_counts_a_vcpu_at_full_use_as_a_core(tmp_path) -> None:
    trace = load_generic(generic_trace(tmp_path / "wave.csv"))
    cfg = fleets.scenario_config(trace, mixed=False)
    assert cfg.mhz_per_core == 1000.0
    assert cfg.episode_steps == 120 - 12 - 1  # shorter than a day: as long as the trace allows
    assert fleets.scenario_config(trace, mixed=True).mixed_sizes


def test_fleets_scenario_refuses_a_too_short_trace_and_unknown_names_in_one_line(cli, tmp_path) -> None:
    short = generic_trace(tmp_path / "short.csv", vms=4, samples=20)
    code, out, err = cli("bench", "--scenario", "fleets", "--trace", str(short))
    assert code == 2 and "needs at least 25" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli("bench", "--scenario", "fleets", "--trace", str(short), "--policies", "no-such-policy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, out, err = cli("bench", "--scenario", "fleets", "--trace", str(short), "--policies", "tuned:nobody")
    assert code == 2 and "no tuned 'nobody'" in err


def test_mixed_fleets_from_the_command_line(cli, tmp_path) -> None:
    trace = generic_trace(tmp_path / "wave.csv", vms=48)
    code, out, err = cli("bench", "--scenario", "fleets", "--trace", str(trace), "--seeds", "1", "--fleets", "2",
                         "--mixed", "--policies", "none,tuned:watcher-wb", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["mixed"] is True and len(doc["policies"]) == 2


def test_placement_scenario_runs_place_scorers_on_a_generic_trace(cli, tmp_path) -> None:
    """``bench --scenario placement``: place's scorers side by side on any trace, the tuned baseline by name."""
    trace = generic_trace(tmp_path / "wave.csv", vms=48)
    code, out, err = cli("bench", "--scenario", "placement", "--trace", str(trace), "--seeds", "2", "--fleets", "3",
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    rows = {r["policy"]: r for r in doc["policies"]}
    assert list(rows) == ["baseline:first-fit", "baseline:best-fit", "baseline:least-loaded", "tuned", "default",
                          "place-rl"]
    for r in rows.values():
        assert r["seeds"] == 2 and r["cost_min"] >= r["bound_core_h"] - 1e-9 and r["rejected"] >= 0
    assert rows["baseline:best-fit"]["cost_median"] > rows["baseline:least-loaded"]["cost_median"]  # packing hurts
    code, _, err = cli("bench", "--scenario", "placement", "--trace", str(trace), "--policies", "nope")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_consolidation_scenario_runs_each_whole_day_of_a_generic_trace(cli, tmp_path) -> None:
    """`bench --scenario cloudsim` on a trace the project does not have: each of its whole days on CloudSim's hosts,
    the shipped default among the policies; the held-back VMs alone with --held-out."""
    trace = generic_trace(tmp_path / "wave.csv", vms=40, samples=2 * 288 + 30)  # two whole days and a part
    code, out, err = cli("bench", "--scenario", "cloudsim", "--trace", str(trace), "--json",
                         "--policies", "thr-mmt-0.8,relative-tuned:gated-wake-thr-mmt")
    assert code == 0, err
    doc = json.loads(out)
    days = ["wave.csv:all:0:0.76", "wave.csv:all:1:0.76"]
    assert sorted({r["trace"] for r in doc["runs"]}) == days and sorted(doc["lower_bound"]) == days
    for r in doc["runs"]:
        assert r["energy_kwh"] >= doc["lower_bound"][r["trace"]]["energy_kwh"] - 1e-9  # none under the bound
    code, out, err = cli("bench", "--scenario", "cloudsim", "--trace", str(trace), "--json", "--held-out",
                         "--policies", "thr-mmt-0.8")
    assert code == 0, err
    assert sorted({r["trace"] for r in json.loads(out)["runs"]}) == ["wave.csv:held:0:0.76", "wave.csv:held:1:0.76"]
    code, out, err = cli("bench", "--scenario", "cloudsim", "--trace", str(generic_trace(tmp_path / "short.csv")))
    assert code == 2 and err.strip() == f"error: {tmp_path / 'short.csv'}: less than a day of samples; the cloudsim " \
        "scenario simulates whole days"
    day = tmp_path / "20110101"  # a PlanetLab day: its VMs are not split, its days are
    day.mkdir()
    (day / "vm0").write_text("10\n" * 288)
    code, out, err = cli("bench", "--scenario", "cloudsim", "--trace", str(day), "--held-out")
    assert code == 2 and "--held-out splits a usage trace's VMs; PlanetLab is split by day" in err


def test_scans_scenario_judges_the_balance_default_as_it_was_judged_on_a_generic_trace(cli, tmp_path) -> None:
    """``bench --scenario scans``: the held-back table's three rows (the default before, the tuned heuristic, the
    learned default) on the fleets of any trace, each deciding on what scans show; the learned estimate is used."""
    trace = generic_trace(tmp_path / "wave.csv")
    code, out, err = cli("bench", "--scenario", "scans", "--trace", str(trace), "--seeds", "2", "--fleets", "3",
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    rows = {r["policy"]: r for r in doc["policies"]}
    assert doc["scenario"] == "scans" and list(rows) == ["baseline:cp-sat:2:0.1:0.95", "scan-heuristic", "llmvirt"]
    for r in rows.values():
        assert len(r["cost"]) == 2 and r["cost_mean"] >= r["bound_core_h"] - 1e-9 and r["migrations"] > 0
    reading, learned = rows["baseline:cp-sat:2:0.1:0.95"], rows["llmvirt"]
    assert (learned["cost"], learned["migrations"]) != (reading["cost"], reading["migrations"])  # it decides otherwise


def test_scans_scenario_refuses_what_cannot_decide_on_a_scan_in_one_line(cli, tmp_path) -> None:
    trace = generic_trace(tmp_path / "wave.csv", vms=8, samples=40)
    for name, said in (("llmvirt-rl", "acts on the simulator's state"), ("no-such", "unknown balancer"),
                       ("scan-heuristic:nope", "unknown heuristic"),
                       ("scan-heuristic:host:much", "must be a number"),
                       ("scan-heuristic:host:1:2", "unknown heuristic"),
                       (f"llmvirt-scan:{tmp_path}", "has no scan recovery")):
        code, _out, err = cli("bench", "--scenario", "scans", "--trace", str(trace), "--policies", name)
        assert code == 2 and said in err and len(err.strip().splitlines()) == 1, (name, err)


def test_a_scan_heuristic_runs_at_its_tuned_point_or_at_a_gain_it_is_given() -> None:
    from llmvirt.bench.scans import HEURISTIC_POINTS, heuristic_point

    assert heuristic_point("scan-heuristic") == ("last-clear", *HEURISTIC_POINTS["last-clear"])
    assert heuristic_point("scan-heuristic:host:1.5") == ("host", HEURISTIC_POINTS["host"][0], 1.5)


def test_the_scan_heuristics_points_are_the_ones_their_tuning_chose() -> None:
    """Each heuristic of the scenario runs at the point bench/balance_scan_recovery.py chose on the training fleets,
    over the grid and its extension above the edge (``--stage gains``), and so does the shipped estimate."""
    from llmvirt.bench.scans import HEURISTIC_POINTS

    root = Path(__file__).resolve().parents[1]
    families = ("bitbrains-jul", "bitbrains-aug")
    extra = [json.loads((root / f"bench/balance_scan_recovery_gains_{f}.json").read_text())["costs"] for f in families]
    for which, point in HEURISTIC_POINTS.items():
        prefix = "" if which == "last-clear" else f"{which}_"
        docs = [json.loads((root / f"bench/balance_scan_recovery_tune_{prefix}{f}.json").read_text())["costs"]
                for f in families]
        summed = {k: sum(d[k] for d in docs) for k in docs[0]} | {k: sum(e[which][k] for e in extra)
                                                                 for k in extra[0][which]}
        assert len(summed) == 6 and tuple(float(v) for v in min(summed, key=summed.__getitem__).split(":")) == point
    shipped = json.loads((root / "policies/default/scan_recovery.json").read_text())
    summed = shipped["grid_costs"] | {k: sum(e["shipped estimate"][k] for e in extra)
                                      for k in extra[0]["shipped estimate"]}
    assert min(summed, key=summed.__getitem__) == f"{shipped['trigger']}:{shipped['gain']}"


def test_scans_scenario_reproduces_the_held_back_figure_the_balance_default_was_judged_on(cli) -> None:
    """An operator's rerun is the judgement itself: the shipped default on July's held-back fleets, seed 0, from the
    command line, costs what bench/balance_scan_recovery.py recorded for training seed 1 (its byte copy)."""
    from conftest import SHARED

    recorded = json.loads((Path(__file__).resolve().parents[1] / "bench/balance_scan_recovery_bitbrains-jul.json")
                          .read_text())["scenarios"]["identical"]["learned seed1"]["held"][0]
    code, out, err = cli("bench", "--scenario", "scans", "--trace",
                         str(SHARED / "traces/bitbrains-rnd/rnd_2013-7_week1.tar.gz"), "--held-out", "--seeds", "1",
                         "--fleets", "16", "--policies", "llmvirt", "--json")
    assert code == 0, err
    (row,) = json.loads(out)["policies"]
    assert abs(row["cost"][0] - recorded) < 1e-6, (row["cost"], recorded)
