"""Proxmox VE's own CRS test cases (../shared/peers): baseline:proxmox-crs makes Proxmox's decisions,
llmvirt's default is compared with them, and the CRS runs on the same arrays in the simulator and on
a scanned cluster (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

from llmvirt.errors import UsageError
from llmvirt.model.arrays import ClusterArrays, FleetSetup
from llmvirt.model.cluster import Cluster, Host, Vm
from llmvirt.peers import conformance, pve_case, pve_crs, pve_replay
from llmvirt.peers.llmvirt_scheduler import LlmvirtScheduler
from llmvirt.peers.pve_crs import Candidate, Load, Node, Usage
from llmvirt.policy import decide
from llmvirt.sim.field_policies import ProxmoxCrs, make_balancer
from llmvirt.strategies import registry

CASES = SHARED / "peers/pve-ha-manager-crs"
GIB = 1024**3


def _cases() -> list[Path]:
    return conformance.case_dirs([CASES])


def test_the_peer_suite_is_all_there() -> None:
    assert len(_cases()) == 29


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.name.removeprefix("test-crs-"))
def test_baseline_proxmox_crs_makes_every_decision_proxmox_made(case: Path) -> None:
    expected = pve_case.expected_decisions(case)
    run = pve_replay.replay(case)
    assert run.decisions == expected
    assert run.unsupported == []


def test_the_log_parser_reads_each_kind_of_decision() -> None:
    kinds = {d.kind for c in _cases() for d in pve_case.expected_decisions(c)}
    assert kinds == {"start", "recover", "migrate", "rebalance"}
    failed = pve_case.expected_decisions(CASES / "test-crs-static-rebalance-resource-affinity3")
    assert pve_case.Decision("recover", "vm:200", None) in failed  # logged every round, kept once


def _three_nodes() -> Load:
    return Load([Node(f"node{i}", 24, 32 * GIB) for i in (1, 2, 3)])


def test_imbalance_is_the_coefficient_of_variation_of_cpu_plus_memory_shares() -> None:
    """Proxmox's log: four equal guests on one node, 1.41; one moved, 0.94; two moved, 0.35."""
    load = _three_nodes()
    vm = Usage(2.0, 8 * GIB)
    for _ in range(4):
        load.add("node1", vm)
    assert round(pve_crs.imbalance(load), 2) == 1.41
    load.add("node1", vm, -1)
    load.add("node2", vm)
    assert round(pve_crs.imbalance(load), 2) == 0.94
    load.add("node1", vm, -1)
    load.add("node3", vm)
    assert round(pve_crs.imbalance(load), 2) == 0.35
    assert pve_crs.imbalance(_three_nodes()) == 0.0


def test_choosing_a_node_weighs_memory_above_cpu() -> None:
    load = Load([Node("cpu-rich", 64, 100 * GIB), Node("mem-rich", 32, 300 * GIB)])
    assert pve_crs.best_node(load, Usage(2, 4 * GIB), ["cpu-rich", "mem-rich"]) == "mem-rich"
    assert pve_crs.best_node(load, Usage(2, 4 * GIB), []) is None
    # equal scores: the first by name
    assert pve_crs.best_node(_three_nodes(), Usage(1, GIB), ["node3", "node2"]) == "node2"


def test_move_effects_in_closed_form_equal_a_full_recount() -> None:
    rng = np.random.default_rng(3)
    nodes = [Node(f"n{i}", float(rng.choice([8, 16, 32])), float(rng.choice([32, 64]) * GIB)) for i in range(6)]
    load = Load(nodes, unlimited_cpu=True)
    usages = {f"v{k}": Usage(float(rng.choice([0, 1, 2, 4])), float(rng.integers(1, 8) * GIB)) for k in range(20)}
    where = {sid: nodes[int(rng.integers(6))].name for sid in usages}
    for sid, node in where.items():
        load.add(node, usages[sid])
    cands = [Candidate((sid,), where[sid], n.name) for sid in usages for n in nodes if n.name != where[sid]]
    cands.append(Candidate(("v0", "v1"), where["v0"], "n5" if where["v0"] != "n5" else "n4"))
    where["v1"] = where["v0"]
    imb, crit = pve_crs.move_effects(load, usages, cands)
    for k, c in enumerate(cands):
        if c.sids == ("v0", "v1"):
            continue  # v1 is not on v0's node in `load`; the bundle row is checked below
        after = pve_crs.after_move(load, usages, c)
        assert imb[k] == pytest.approx(pve_crs.imbalance(after), abs=1e-12)
        assert crit[k] == pytest.approx(pve_crs.criteria(after), abs=1e-12)


def test_rebalancing_needs_the_margin() -> None:
    load = _three_nodes()
    load.add("node1", Usage(8, 8 * GIB))
    usages = {"vm:1": Usage(8, 8 * GIB)}
    cands = [Candidate(("vm:1",), "node1", "node2")]
    choice = pve_crs.choose_rebalance(load, usages, cands)
    assert choice is not None and not choice.accepted  # moving the only guest changes nothing
    assert pve_crs.choose_rebalance(load, usages, []) is None


def test_a_case_that_is_not_one_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a Proxmox CRS case"):
        pve_case.load_case(tmp_path)
    (tmp_path / "hardware_status").write_text("{ not json")
    with pytest.raises(UsageError, match="hardware_status: not JSON"):
        pve_case.load_case(tmp_path)


def _write_case(root: Path, cmds: list[list[str]], rules: str = "") -> Path:
    root.mkdir()
    (root / "hardware_status").write_text(json.dumps(
        {n: {"power": "off", "network": "off", "maxcpu": 16, "maxmem": 64 * GIB} for n in ("node1", "node2")}))
    (root / "datacenter.cfg").write_text(json.dumps({"crs": {"ha": "static", "ha-auto-rebalance": 1}}))
    (root / "service_config").write_text(json.dumps(
        {f"vm:10{i}": {"node": "node1", "state": "started"} for i in range(4)}))
    (root / "static_service_stats").write_text(json.dumps(
        {f"vm:10{i}": {"maxcpu": 2, "maxmem": 8 * GIB} for i in range(4)}))
    (root / "cmdlist").write_text(json.dumps(cmds))
    (root / "log.expect").write_text("")
    if rules:
        (root / "rules_config").write_text(rules)
    return root


def test_commands_it_does_not_model_are_reported_not_guessed(tmp_path: Path) -> None:
    case = _write_case(tmp_path / "c", [["power node1 on", "power node2 on"], ["service vm:100 lock backup"]])
    run = pve_replay.replay(case)
    assert run.unsupported == ["service vm:100 lock backup"]
    assert [d.kind for d in run.decisions] == ["rebalance", "rebalance"]  # 4 guests on node1: 2 moves even it


@pytest.mark.parametrize(("cmds", "error"), [
    ([["power node1 on", "power node3 on"]], "'power node3 on' names node 'node3', which hardware_status"),
    ([["power node1 on"], ["service vm:200 add node9 started"]], "adds vm:200 on node 'node9'"),
    ([["power node1 on"], ["service vm:100 set-static-stats maxcpu lots"]], "every value must be a number"),
])
def test_a_case_that_names_what_it_lacks_is_one_clear_error(tmp_path: Path, cmds: list[list[str]],
                                                            error: str) -> None:
    """Proxmox's own simulator dies on these ("did not get static node usage"); a traceback says less."""
    with pytest.raises(UsageError, match=error):
        pve_replay.replay(_write_case(tmp_path / "c", cmds))


def test_a_case_whose_nodes_lack_sizes_or_hold_unknown_guests_is_one_clear_error(tmp_path: Path) -> None:
    case = _write_case(tmp_path / "c", [["power node1 on"]])
    (case / "service_config").write_text(json.dumps({"vm:100": {"node": "node7", "state": "started"}}))
    with pytest.raises(UsageError, match="vm:100 is on node 'node7', which hardware_status does not list"):
        pve_case.load_case(case)
    (case / "hardware_status").write_text(json.dumps({"node1": {"power": "off", "maxcpu": 4}}))
    with pytest.raises(UsageError, match="every node needs a numeric maxcpu and maxmem"):
        pve_case.load_case(case)


@pytest.mark.parametrize(("name", "text", "error"), [
    ("datacenter.cfg", json.dumps({"crs": {"ha-auto-rebalance": 1, "ha-auto-rebalance-threshold": "x"}}),
     "crs ha-auto-rebalance-threshold 'x' is not a number"),
    ("datacenter.cfg", json.dumps(["crs"]), "must be a JSON object with a 'crs' object"),
    ("static_service_stats", json.dumps({"vm:100": {"maxcpu": "two"}}), "each guest needs numeric maxcpu and maxmem"),
    ("cmdlist", json.dumps(["power node1 on"]), "must be a list of command lists"),
    ("service_config", json.dumps(["vm:100"]), "service_config: must be a JSON object of guests"),
    ("rules_config", "node-affinity: r\n\tnodes node1:high\n\tresources vm:100\n", "'node1:high' is not a whole"),
])
def test_a_case_file_with_values_of_the_wrong_kind_is_one_clear_error(tmp_path: Path, name: str, text: str,
                                                                      error: str) -> None:
    """Cases this project has not seen (a newer pve-ha-manager, an operator's own) get one line, not a traceback."""
    case = _write_case(tmp_path / "c", [["power node1 on"]])
    (case / name).write_text(text)
    with pytest.raises(UsageError, match=error):
        pve_case.load_case(case)


def test_a_case_without_its_log_has_no_oracle_and_says_so(tmp_path: Path) -> None:
    case = _write_case(tmp_path / "c", [["power node1 on"]])
    (case / "log.expect").unlink()
    with pytest.raises(UsageError, match="no log.expect, so there are no Proxmox decisions to compare with"):
        conformance.run_case(case, LlmvirtScheduler())


def test_a_timeline_with_every_node_down_replays_under_llmvirt(tmp_path: Path) -> None:
    """Auto-rebalancing asks llmvirt for a plan while no node is up: an empty cluster plans nothing (it used to
    fail in the plan's summary)."""
    case = _write_case(tmp_path / "c", [["power node1 on", "power node2 on"], ["power node1 off", "power node2 off"]])
    run = pve_replay.replay(case, LlmvirtScheduler())
    assert [d.text() for d in run.decisions] == [f"recover vm:10{i} -> (none)" for i in range(4)]  # no node is up
    assert decide.summary(Cluster([])) == {"overloaded_hosts": 0, "hot_hosts": 0, "imbalance": 0.0, "power_w": 0.0}
    assert pve_crs.imbalance(Load([])) == 0.0


def test_affinity_rules_bind_the_replay(tmp_path: Path) -> None:
    rules = ("node-affinity: pinned\n\tnodes node1\n\tresources vm:100,vm:101,vm:102,vm:103\n\tstrict 1\n")
    case = _write_case(tmp_path / "c", [["power node1 on", "power node2 on"]], rules)
    assert pve_replay.replay(case).decisions == []  # every guest is bound to node1: nothing may move
    rules = ("resource-affinity: together\n\tresources vm:100,vm:101,vm:102,vm:103\n\taffinity positive\n")
    case = _write_case(tmp_path / "d", [["power node1 on", "power node2 on"]], rules)
    assert pve_replay.replay(case).decisions == []  # one bundle: moving it all changes nothing


def test_the_conformance_table_classifies_llmvirt_and_states_why() -> None:
    results = [conformance.run_case(c, LlmvirtScheduler()) for c in _cases()]
    assert all(r.baseline_matches for r in results)
    assert {r.status for r in results} <= {"match", "equal-or-better", "differs"}
    by = {r.case: r for r in results}
    assert by["test-crs-static1"].status == "match"
    spread = by["test-crs-static-auto-rebalance2"]  # nothing is hot: llmvirt leaves it, and says so
    assert spread.status == "differs" and "does not even out" in spread.reason
    assert all(r.reason for r in results)
    overcommit = by["test-crs-static-rebalance1"]
    assert "memory" in overcommit.reason and "without a node" in overcommit.reason
    md = conformance.table(results)
    assert md.count("\n") == len(results) + 1


def test_cli_runs_the_cases_and_exits_cleanly_on_bad_input(cli) -> None:
    two = (str(CASES / "test-crs-static1"), str(CASES / "test-crs-dynamic-auto-rebalance2"))
    code, out, err = cli("peers", "pve-crs", *two, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["baseline_matches"] == 2
    assert [c["case"] for c in doc["cases"]] == ["test-crs-static1", "test-crs-dynamic-auto-rebalance2"]
    assert doc["cases"][1]["proxmox"][0] == "rebalance vm:101 -> node2 (1.41 -> 0.94)"
    code, out, err = cli("peers", "pve-crs", "/nonexistent/case")
    assert code == 2 and "no such case directory" in err and "Traceback" not in err


def _view(on_host: list[int], n_hosts: int = 3) -> ClusterArrays:
    n = len(on_host)
    setup = FleetSetup(host_cores=24, mhz_per_core=1000.0, host_mem_mib=32768.0)
    cap = np.full(n, 8192.0)
    return ClusterArrays(setup, np.array(on_host), np.full(n, 2), cap, np.full(n, 1500.0), cap.copy(), cap.copy(),
                     np.zeros(n), n_hosts, np.zeros(n_hosts, dtype=bool))


def test_the_simulator_balancer_decides_as_proxmox_did() -> None:
    """Proxmox's static-auto-rebalance2 (four 2-CPU, 8 GiB guests on one of three 24-CPU, 32 GiB nodes):
    vm:101 to node2, then vm:102 to node3, then nothing clears the margin."""
    moves = make_balancer("proxmox-crs:static").decide(_view([0, 0, 0, 0]))
    assert moves == [(0, 1), (1, 2)]
    assert ProxmoxCrs(threshold=2.0).decide(_view([0, 0, 0, 0])) == []
    view = _view([0, 0, 0, 0])
    view.maintenance[0] = True  # hosts in maintenance are emptied first
    assert sorted(h for _, h in ProxmoxCrs().decide(view)[:4]) == [1, 1, 2, 2]
    with pytest.raises(ValueError, match="proxmox-crs"):
        make_balancer("proxmox-crs:hot")


def test_rebalance_runs_the_crs_on_a_scanned_cluster() -> None:
    hosts = [Host(name=f"kvm{i}", uri="test:///default", cpus=16, memory_mib=65536) for i in (1, 2, 3)]
    hosts[0].vms = [Vm(name=f"vm{k}", uuid=f"u{k}", vcpus=4, max_vcpus=4, memory_mib=8192,
                       current_memory_mib=8192, cpu_util=0.8) for k in range(4)]
    strategy = registry.resolve("baseline:proxmox-crs")
    plan = strategy.plan(Cluster(hosts), "balance", decide.Context())
    assert [m.src for m in plan.moves] == ["kvm1", "kvm1"]
    assert sorted(m.dst for m in plan.moves) == ["kvm2", "kvm3"]
    with pytest.raises(UsageError, match="proxmox-crs"):
        registry.resolve("baseline:proxmox-crs:0.1:0.2:0.3")


def test_a_proxmox_case_is_a_snapshot_rebalance_and_place_plan_on(cli) -> None:
    """`--snapshot CASE_DIR` imports a case's initial state; the CRS plans Proxmox's own moves on it, with
    Proxmox's imbalance figures as the reasons."""
    case = str(CASES / "test-crs-static-auto-rebalance2")
    code, out, err = cli("rebalance", "--snapshot", case, "--policy", "baseline:proxmox-crs:static", "--json")
    assert code == 0, err
    moves = [(m["vm"], m["src"], m["dst"]) for m in json.loads(out)["moves"]]
    assert moves == [("vm:101", "node1", "node2"), ("vm:102", "node1", "node3")]
    assert "1.41 -> 0.94" in json.loads(out)["moves"][0]["reason"]
    code, out, err = cli("place", "--snapshot", case, "--vcpus", "2", "--memory", "8G", "--json")
    assert code == 0, err
    assert json.loads(out)["chosen"] in ("node2", "node3")  # node1's 32 GiB are taken
    code, out, err = cli("rebalance", "--snapshot", str(CASES), "--policy", "baseline:proxmox-crs")
    assert code == 2 and "not a Proxmox CRS case" in err


@pytest.mark.parametrize("policy", ["llmvirt-rl", "baseline:tuned:cp-sat", "baseline:watcher-wb:100"])
def test_every_case_runs_under_the_learned_policy_and_the_fleet_baselines(cli, policy: str) -> None:
    """Proxmox's cases hold nodes of different sizes and cases with no running guest: the learned policy and
    the fleet baselines plan on every one of them (they refused mixed sizes, and the learned policy crashed
    on a fleet without VMs, before)."""
    code, out, err = cli("peers", "pve-crs", str(CASES), "--policy", policy, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["cases"]) == len(_cases()) and sum(doc["tested"].values()) == len(_cases())
