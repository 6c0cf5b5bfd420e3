"""Placement reads each host's recent peak CPU use (issue 15): the same feature from a store's history on real
clusters and from the load so far in the placement scenario, and checkpoints of the older spec still decide."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from llmvirt.errors import UsageError
from llmvirt.model.cluster import Host, ScanResult, Vm
from llmvirt.model.usage import PEAK_QUANTILE, PEAK_SCANS
from llmvirt.policy import decide
from llmvirt.policy.arrivals import WeightedScorer, chooser, parse_weighted
from llmvirt.policy.constraints import Request
from llmvirt.policy.features import FEATURES, SPECS, recent_peaks
from llmvirt.sim.placement_env import Arrival, recent_peak
from llmvirt.store import database, registry, snapshots

SPIKY, STEADY = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"


def _host(name: str, uuid: str, cpu_s: float) -> Host:
    vm = Vm(f"vm-{name}", uuid, vcpus=4, memory_mib=2048, current_memory_mib=2048, cpu_time_ns=int(cpu_s * 1e9))
    return Host(name, "test:///default", cpus=8, memory_mib=16384, hostname=name, vms=[vm])


def _store_with_history(url: str) -> None:
    """Two hosts of one 4-vCPU VM each, scanned every 5 minutes: ``spiky``'s VM used all 4 vCPUs for ten
    intervals and 10 % for the last two; ``steady``'s half of them throughout."""
    engine = database.open_engine(url)
    for name in ("spiky", "steady"):
        registry.add_host(engine, registry.RegisteredHost(name, "test:///default"))
    spiky = steady = 0.0
    start = datetime(2026, 12, 1)
    for i in range(13):
        if i:
            spiky += 300 * 4 * (1.0 if i <= 10 else 0.1)
            steady += 300 * 4 * 0.5
        snapshots.record_scan(engine, ScanResult([_host("spiky", SPIKY, spiky), _host("steady", STEADY, steady)],
                                                 {}, 0.1), taken_at=start + timedelta(minutes=5 * i))


def test_place_reads_the_hosts_recent_peaks_from_the_store(cli, db_url: str) -> None:
    _store_with_history(db_url)
    code, out, err = cli("place", "--vcpus", "2", "--memory", "1G", "--policy", "baseline:least-loaded", "--json")
    assert code == 0, err
    assert json.loads(out)["chosen"] == "spiky"  # least CPU use now: 0.4 of 8 cores against 2
    code, out, err = cli("place", "--vcpus", "2", "--memory", "1G", "--policy", "baseline:weighted:0:0:0:1",
                         "--expected-cpu", "0.25", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["chosen"] == "steady"  # its recent peak (2 cores) is below spiky's (4)
    spiky = next(r for r in doc["ranked"] if r["host"] == "spiky")
    assert "recent peak after 56 %" in spiky["reasons"]  # (4 + 2 x 0.25 expected) / 8 cores


def test_without_history_a_hosts_peak_is_its_use_now(cli, db_url: str, tmp_path) -> None:
    _store_with_history(db_url)
    code, out, _ = cli("status", "--json")
    assert code == 0
    snap = tmp_path / "cluster.json"
    snap.write_text(out)
    code, out, err = cli("place", "--vcpus", "2", "--memory", "1G", "--policy", "baseline:weighted:0:0:0:1",
                         "--snapshot", str(snap), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["chosen"] == "spiky"  # a file has no history: the peak reads as the use now
    assert not any("recent peak" in r for row in doc["ranked"] for r in row["reasons"])


def test_recent_peaks_sum_the_vms_aligned_at_their_newest_sample() -> None:
    a = Vm("a", "ua", vcpus=2)
    b = Vm("b", "ub", vcpus=4)
    off = Vm("c", "uc", vcpus=8, state="shutoff")
    hosts = [Host("h0", "x", cpus=8, vms=[a, b, off]), Host("h1", "x", cpus=8, vms=[Vm("d", "ud")])]
    history = {"ua": [0.5, 1.0, 0.5], "ub": [0.25], "uc": [1.0, 1.0, 1.0]}
    peaks = recent_peaks(hosts, history)
    assert peaks[0] == pytest.approx(np.quantile([1.0, 2.0, 1.0 + 1.0], PEAK_QUANTILE))
    assert np.isnan(peaks[1])
    long = {"ua": [1.0] * 10 + [0.0] * PEAK_SCANS}  # only the last PEAK_SCANS intervals count
    assert recent_peaks(hosts[:1], long)[0] == 0.0


def test_the_scenario_gives_each_arrival_the_quantile_of_the_load_so_far() -> None:
    load = np.arange(2 * 400, dtype=float).reshape(2, 400)
    assert np.allclose(recent_peak(load, 9), np.quantile(load[:, :10], PEAK_QUANTILE, axis=1))
    assert np.allclose(recent_peak(load, 399), np.quantile(load[:, 400 - PEAK_SCANS:], PEAK_QUANTILE, axis=1))
    assert np.array_equal(recent_peak(load, 399, 12, 1.0), load[:, 388:].max(axis=1))  # bench's other windows


def test_the_weighted_family_takes_a_peak_weight() -> None:
    assert parse_weighted("weighted:1:0.75:0").name == "baseline:weighted:1:0.75:0"
    assert not parse_weighted("weighted:1:0.75:0").reads_peaks
    four = parse_weighted("weighted:1:0:0:0.5")
    assert four.name == "baseline:weighted:1:0:0:0.5" and four.reads_peaks
    for bad in ("weighted:1:1", "weighted:1:1:1:1:1", "weighted:-1:0:0:1", "weighted:0:0:0:0", "weighted:nan:0:0"):
        with pytest.raises(UsageError):
            parse_weighted(bad)
    # two hosts alike now; the second's recent peak is higher: the peak weight avoids it, least CPU use cannot tell
    a = Arrival(np.array([2.0, 2.0]), np.zeros(2), np.zeros(2), np.ones(2), np.full(2, 8.0), np.full(2, 64.0),
                2.0, 4.0, 4.0, 1.0, peak=np.array([6.0, 3.0]))
    assert chooser(WeightedScorer((0, 0, 0, 1)), 0.5)(a) == 1
    assert chooser(WeightedScorer((1, 0, 0)), 0.5)(a) == 0


def test_a_checkpoint_of_the_older_spec_reads_its_columns_and_decides_as_before() -> None:
    scorer = decide.load_scorer(None)  # policies/default: feature spec 1
    assert scorer.meta["feature_spec"]["features"] == list(SPECS[1]) and not scorer.reads_peaks
    x = np.random.default_rng(3).random((50, len(FEATURES))).astype(np.float32)
    changed = x.copy()
    changed[:, FEATURES.index("host_cpu_peak_after")] += 5
    assert np.array_equal(scorer.scores(x, []), scorer.scores(changed, []))
    assert np.array_equal(scorer.scores(x, []), scorer.model(x[:, :11]))


def test_a_checkpoint_declaring_another_spec_is_refused(tmp_path) -> None:
    import shutil

    from llmvirt.policy.weights import CheckpointError

    shutil.copytree(decide.DEFAULT_POLICY, tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "policy.json").read_text())
    meta["feature_spec"]["features"] = meta["feature_spec"]["features"][:-1]
    (tmp_path / "p" / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="different feature spec"):
        decide.load_scorer(str(tmp_path / "p"))
    meta["feature_spec"] = {"version": 2, "features": list(SPECS[1])}
    (tmp_path / "p" / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="different feature spec"):
        decide.load_scorer(str(tmp_path / "p"))


def test_place_without_history_ranks_as_before() -> None:
    """No history: the peak column is the use-now column, and decide.place ranks as it did."""
    hosts = [Host(f"h{i}", "x", cpus=8, memory_mib=16384, vms=[Vm(f"v{i}", f"u{i}", vcpus=2, cpu_util=0.2 * i)])
             for i in range(4)]
    from llmvirt.model.cluster import Cluster

    got = decide.place(Cluster(hosts), Request(vcpus=1, memory_mib=512, expected_cpu=0.5),
                       WeightedScorer((0, 0, 0, 1)))
    assert [r["host"] for r in got.ranked] == ["h0", "h1", "h2", "h3"]
