"""End-to-end tests on the lab's real libvirtd and QEMU: migration, pinning, ballooning, teardown.

These need root and QEMU; `.ci/run` (make test) installs QEMU and libvirt and runs as root.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from conftest import REPO, Cli

from llmvirt.act.runner import Guardrails
from llmvirt.errors import UsageError
from llmvirt.lab import daemons, lab
from llmvirt.model.action import Action
from llmvirt.store import journal

pytestmark = pytest.mark.lab
HOT_GUESTS = ("vm-1", "vm-3", "vm-4")  # three of the four guests lab-1 starts with; driven to 100 % CPU


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One lab (3 hosts, 6 guests) for the whole module, torn down at the end."""
    root = tmp_path_factory.mktemp("lab")
    url = f"sqlite:///{root / 'lab.db'}"
    old = os.environ.get("LLMVIRT_DB")
    os.environ["LLMVIRT_DB"] = url
    from llmvirt.store import database

    engine = database.open_engine(url)
    lab.up(root / "lab", 3, 6, engine, say=lambda *_: None)
    try:
        yield root / "lab", url
    finally:
        lab.down(root / "lab", engine, quiet=True)
        if old is None:
            os.environ.pop("LLMVIRT_DB", None)
        else:
            os.environ["LLMVIRT_DB"] = old


APPLY_IN_SUBPROCESS = (  # executor.apply on explicit actions, in its own process, as `rebalance --apply` runs it
    "import json, sys\n"
    "from llmvirt.act import executor\nfrom llmvirt.act.runner import Guardrails, MigrationSettings\n"
    "from llmvirt.errors import LlmvirtError\nfrom llmvirt.model.action import Action\n"
    "from llmvirt.store import database, journal\n"
    "url = sys.argv[1]\n"
    "settings = MigrationSettings(**json.loads(sys.argv[3])) if len(sys.argv) > 3 else MigrationSettings()\n"
    "try:\n"
    "    a = json.loads(sys.argv[2])\n"
    "    action = Action.from_params(a['kind'], a['vm'], a['src'], a['dst'], a['params'], a['vm_uuid'])\n"
    "    executor.apply(database.open_engine(url), url, journal.NewPlan('balance', 'test', {}, [action]),"
    " Guardrails(settings=settings))\n"
    "except LlmvirtError as e:\n"
    "    print(f'error: {e}', file=sys.stderr)\n"
    "    sys.exit(e.exit_code)\n")


@pytest.fixture(autouse=True)
def _lab_as_started(request: pytest.FixtureRequest) -> None:
    """Every lab test starts from the lab as `lab up` left it (issue 17: no test depends on another's order):
    guests home, unpaused, balloons full, nothing pinned, the starting load, no host in maintenance."""
    if "lab_env" not in request.fixturenames:
        return
    from llmvirt.lab.reset import reset
    from llmvirt.store import database

    lab_dir, url = request.getfixturevalue("lab_env")
    reset(lab_dir, database.open_engine(url), say=lambda *_: None)


@pytest.fixture(autouse=True)
def _lab_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TCG guests on 2 shared cores never reach a full core each: the lab states a lower hot threshold."""
    cfg = tmp_path / "llmvirt.toml"
    cfg.write_text("[rebalance]\nhot = 0.6\ncold = 0.1\n")
    monkeypatch.setenv("LLMVIRT_CONFIG", str(cfg))


def _status(cli: Cli) -> dict:
    code, out, err = cli("status", "--json")
    assert code == 0, err
    return {h["name"]: h for h in json.loads(out)["hosts"]}


def _conn(lab_dir: Path, host: str) -> libvirt.virConnect:
    return libvirt.open(daemons.LabHost(host, 0, lab_dir / "hosts" / host, "").uri)


def _wait_guest_stats(cli: Cli, vm: str, pred, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        cli("scan")
        for h in _status(cli).values():
            for v in h["vms"]:
                if v["name"] == vm and v["state"] == "running" and pred(v):
                    return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{vm}: condition not met within {timeout} s")
        time.sleep(2)


def test_scan_shows_three_hosts_six_guests_with_guest_memory(lab_env, monkeypatch) -> None:
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    code, _, err = cli("scan")
    assert code == 0, err
    hosts = _status(cli)
    assert sorted(hosts) == ["lab-1", "lab-2", "lab-3"]
    running = [v for h in hosts.values() for v in h["vms"] if v["state"] == "running"]
    assert len(running) == 6
    counts = sorted(len(h["vms"]) for h in hosts.values())
    assert counts[0] < counts[-1]  # spread unevenly: a rebalance has something to do
    v = _wait_guest_stats(cli, "vm-1", lambda v: v["balloon"]["usable_mib"] is not None)
    b = v["balloon"]
    assert b["unused_mib"] > 0 and b["available_mib"] > 0 and b["current_mib"] == 192


def test_live_migration_moves_a_running_guest(lab_env, monkeypatch) -> None:
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    src, dst = _conn(lab_dir, "lab-1"), _conn(lab_dir, "lab-2")
    dom = src.lookupByName("vm-2")
    assert dom.isActive()
    dom.migrate3(dst, {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"},
                 libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
    assert dst.lookupByName("vm-2").isActive()
    assert "vm-2" not in [d.name() for d in src.listAllDomains()]
    # the guest still runs its userland after the move: it answers on its console there
    assert lab.load(lab_dir, "vm-2", 5, 8).name == "lab-2"
    cli = Cli()
    cli("scan")
    hosts = _status(cli)
    assert "vm-2" in [v["name"] for v in hosts["lab-2"]["vms"]]
    assert "vm-2" not in [v["name"] for v in hosts["lab-1"]["vms"]]


def test_vcpu_pinning_is_visible_after_scan(lab_env, monkeypatch) -> None:
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    dom = _conn(lab_dir, "lab-1").lookupByName("vm-3")
    dom.pinVcpuFlags(0, (False, True), libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    dom.pinEmulator((True, False), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    cli = Cli()
    cli("scan")
    vm = next(v for v in _status(cli)["lab-1"]["vms"] if v["name"] == "vm-3")
    assert vm["pinning"] == {"0": [1]} and vm["persistent_pinning"] == {"0": [1]}
    assert vm["emulator_pinning"] == [0]


def test_balloon_change_is_visible_after_scan(lab_env, monkeypatch) -> None:
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    dom = _conn(lab_dir, "lab-1").lookupByName("vm-4")
    dom.setMemoryFlags(144 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    cli = Cli()
    v = _wait_guest_stats(cli, "vm-4", lambda v: v["balloon"]["current_mib"] == 144)
    assert v["balloon_mib"] == 144 and v["balloon"]["available_mib"] <= 144


def test_load_generator_changes_guest_memory(lab_env, monkeypatch) -> None:
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    before = _wait_guest_stats(cli, "vm-6", lambda v: v["balloon"]["usable_mib"] is not None)
    lab.load(lab_dir, "vm-6", 0, 96)
    after = _wait_guest_stats(
        cli, "vm-6", lambda v: (v["balloon"]["usable_mib"] or 10**9) < before["balloon"]["usable_mib"] - 48)
    assert after["balloon"]["unused_mib"] < before["balloon"]["unused_mib"]


def test_place_and_rebalance_on_real_hosts(lab_env, monkeypatch) -> None:
    """A hotspot on lab-1 (three guests driven to 100 % CPU) gets a plan that moves load off it: the balance
    default, CP-SAT on the learned scan recovery read from the store's scans, its trigger the configured hot."""
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    for vm in HOT_GUESTS:
        assert _running_on(lab_dir, vm) == ["lab-1"]
    _hotspot(lab_dir, cli)
    code, out, err = cli("rebalance", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["dry_run"] and plan["moves"], plan
    first = plan["moves"][0]
    assert first["src"] == "lab-1" and first["dst"] in ("lab-2", "lab-3")
    assert first["src_cpu_after"] < first["src_cpu_before"]
    assert "llmvirt balance=llmvirt-scan (trigger " in plan["policy"], plan["policy"]
    assert all("learned estimate: the source reads" in m["reason"] for m in plan["moves"]), plan["moves"]
    code, out, err = cli("place", "--vcpus", "1", "--memory", "128M", "--json")
    assert code == 0, err
    assert json.loads(out)["chosen"] in ("lab-2", "lab-3")  # not the hotspot
    for vm in HOT_GUESTS:
        lab.load(lab_dir, vm, 0, 8)


def _hotspot(lab_dir: Path, cli: Cli, scans: int = 5) -> float:
    """Drive the busy guests on lab-1 to 100 % CPU and scan; returns a hot threshold that lab-1 exceeds in
    each of its last three scan intervals (four fifths of its lowest measured load there, at most 0.6),
    set as the test's ``[rebalance] hot``. How much CPU TCG guests get depends on this machine and on what
    else runs on it, so the threshold is measured rather than fixed (issue 17)."""
    import re

    from llmvirt.store import database, snapshots

    for vm in HOT_GUESTS:
        if "lab-1" in _running_on(lab_dir, vm):
            lab.load(lab_dir, vm, 100, 8)
    for _ in range(scans):
        cli("scan")
        time.sleep(3)
    cli("scan")
    engine = database.open_engine(os.environ["LLMVIRT_DB"])
    loads = snapshots.host_load_history(engine, "lab-1", 3)
    others = [x for h in ("lab-2", "lab-3") for x in snapshots.host_load_history(engine, h, 3)]
    hot = round(min(0.6, 0.8 * min(loads)), 3)
    assert len(loads) == 3 and hot > max(others, default=0.0) + 0.05, (loads, others)  # lab-1 is the hotspot
    cfg = Path(os.environ["LLMVIRT_CONFIG"])
    cfg.write_text(re.sub(r"(?m)^hot = .*$", f"hot = {hot}", cfg.read_text()))
    return hot


def _running_on(lab_dir: Path, vm: str) -> list[str]:
    return [h for h in ("lab-1", "lab-2", "lab-3") if vm in [d.name() for d in _conn(lab_dir, h).listAllDomains(
        libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]]


def test_apply_migrates_off_a_persistent_hotspot(lab_env, monkeypatch) -> None:
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    _hotspot(lab_dir, cli)
    code, applied, err = cli("rebalance", "--apply", "--max-migrations", "1")
    assert code == 0, applied + err
    code, out, _ = cli("actions", "--json")
    acts = json.loads(out)["actions"]
    moved = next((a for a in acts if a["kind"] == "migrate"), None)
    assert moved is not None, applied + err  # the plan and what was held back, if nothing moved
    assert moved["status"] == "done" and moved["src"] == "lab-1", moved
    assert _running_on(lab_dir, moved["vm"]) == [moved["dst"]]  # on exactly one host, the destination
    code, out, _ = cli("plans", "show", str(moved["plan_id"]), "--json")
    events = json.loads(out)["actions"][0]["events"]
    assert [e["status"] for e in events] == ["pending", "running", "done"]
    # the scan pair that straddles the move counts the busy guest on its destination (issue 17): its
    # CPU-time counter started again in the destination's new QEMU process
    time.sleep(4)
    cli("scan")
    dst = _status(cli)[moved["dst"]]
    [vm] = [v for v in dst["vms"] if v["name"] == moved["vm"]]
    assert vm["cpu_util"] is not None and vm["cpu_util"] > 0.1, vm
    from llmvirt.store import database, snapshots

    [load] = snapshots.host_load_history(database.open_engine(url), moved["dst"], 1)
    assert load >= vm["cpu_util"] * vm["vcpus"] / dst["cpus"] - 1e-3, (load, vm)
    for vm_name in HOT_GUESTS:
        lab.load(lab_dir, vm_name, 0, 8)


def test_learned_balance_policy_plans_and_its_loop_applies_on_the_lab(lab_env, monkeypatch) -> None:
    """`rebalance --policy llmvirt-rl` runs the learned policy on the scanned lab with the guests' CPU history
    from the store (issue 15): any move it plans leaves lab-1 and says what drove it. CP-SAT on the learned scan
    recovery (`llmvirt-scan`, the store's hour of scans) plans moves off lab-1, each naming the estimate. The same
    loop with its fallback (triggered at the hotspot threshold this machine measurably exceeds) then applies a real
    live migration off the hotspot."""
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    hot = _hotspot(lab_dir, cli)
    code, out, err = cli("rebalance", "--policy", "llmvirt-rl", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["policy"] == "llmvirt-rl" and plan["dry_run"]
    for m in plan["moves"]:
        assert m["src"] == "lab-1" and m["dst"] != "lab-1" and "forecast" in m["reason"], m  # what drove it
    assert len(plan["moves"]) <= 1  # one move per decision step, as it was trained
    forecast = f"llmvirt-forecast:{REPO / 'policies/balance-forecast/seed1'}"  # the loop on a learned forecast
    code, out, err = cli("rebalance", "--policy", forecast, "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["policy"] == forecast and plan["dry_run"] and len(plan["moves"]) <= 1
    for m in plan["moves"]:
        assert m["src"] == "lab-1" and m["dst"] != "lab-1" and "forecast" in m["reason"], m
    scan = f"llmvirt-scan:{REPO / 'policies/scan-recovery/seed1'}"  # CP-SAT on what the scans hide, hot = trigger
    code, out, err = cli("rebalance", "--policy", scan, "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["policy"] == scan and plan["dry_run"] and 1 <= len(plan["moves"]) <= 2, plan
    for m in plan["moves"]:
        assert m["src"] == "lab-1" and m["dst"] != "lab-1" and "learned estimate" in m["reason"], m
    code, out, err = cli("rebalance", "--policy", f"llmvirt-rl-fallback:{hot}", "--apply")
    assert code == 0, out + err
    code, out, _ = cli("actions", "--json")
    moved = next(a for a in json.loads(out)["actions"] if a["kind"] == "migrate")
    assert moved["status"] == "done" and moved["src"] == "lab-1", moved
    assert _running_on(lab_dir, moved["vm"]) == [moved["dst"]]
    for vm_name in HOT_GUESTS:
        lab.load(lab_dir, vm_name, 0, 8)


def test_neural_consolidation_plans_and_applies_on_the_lab(lab_env, monkeypatch) -> None:
    """`rebalance --goal consolidate --policy llmvirt-net` (issue 15) on the idle lab: the shipped network reads
    each guest's history from the store, every move it plans says what drove it (a host emptied to save
    energy), and applying the plan live-migrates each guest to where the plan said. The default for the goal
    (the tuned wake-aware gate) plans there too, with its reasons."""
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    for vm in [f"vm-{i}" for i in range(1, 7)]:
        lab.load(lab_dir, vm, 0, 8)
    for _ in range(3):
        cli("scan")
        time.sleep(2)
    code, out, err = cli("rebalance", "--goal", "consolidate", "--json")  # the default: a tuned wake-aware gate
    default = json.loads(out)
    assert code == 0 and default["policy"] == "v0:default consolidate=relative-tuned:gated-wake-thr-mmt", out + err
    assert default["moves"], default
    for m in default["moves"]:
        assert m["reason"].startswith(("default consolidate=relative-tuned:gated-wake-thr-mmt: energy saved",
                                       "v0:default consolidate=relative-tuned:gated-wake-thr-mmt: energy saved")), m
        assert m["reason"].endswith("a switched-off host counted at its idle power") and m["dst"] != m["src"], m
    code, out, err = cli("rebalance", "--goal", "consolidate", "--policy", "llmvirt-net", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["policy"] == "llmvirt-net" and plan["dry_run"] and plan["moves"], plan
    for m in plan["moves"]:
        assert m["reason"].startswith("llmvirt-net: energy saved") and m["dst"] != m["src"], m
    code, out, err = cli("rebalance", "--goal", "consolidate", "--policy", "llmvirt-net", "--apply", "--json")
    assert code == 0, out + err
    assert json.loads(out)["outcomes"]["done"] == len(plan["moves"]), out
    last = {m["vm"]: m["dst"] for m in plan["moves"]}
    for vm, dst in last.items():
        assert _running_on(lab_dir, vm) == [dst], (vm, dst)


def test_mcp_applies_a_shown_plan_on_the_lab(lab_env, monkeypatch) -> None:
    """`llmvirt mcp --allow-apply` (issue 21), driven by the MCP SDK's client over stdio: the plan it shows
    for the hotspot is the one it applies, through the executor, and the journal says who asked; a shown
    balloon plan is applied the same way."""
    from test_mcp import call, session

    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    away = [vm for vm in HOT_GUESTS if _running_on(lab_dir, vm) != ["lab-1"]]
    for vm in away[:max(0, len(away) - 1)]:  # two busy guests on lab-1, whatever earlier tests moved
        [src] = _running_on(lab_dir, vm)
        _conn(lab_dir, src).lookupByName(vm).migrate3(
            _conn(lab_dir, "lab-1"), {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"},
            libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
    hot = _hotspot(lab_dir, cli)

    async def fn(c) -> tuple:  # noqa: ANN001
        shown = (await call(c, "rebalance_plan", {"policy": f"llmvirt-rl-fallback:{hot}"}))[1]
        done = await call(c, "apply_plan", {"plan_id": shown["plan_id"]})
        balloons = (await call(c, "rebalance_plan", {"only": "balloon"}))[1]
        return shown, done, balloons, await call(c, "apply_plan", {"plan_id": balloons["plan_id"]})

    shown, (is_error, done), balloons, (b_error, b_done) = session(fn, "--allow-apply", "--apply-interval", "0")
    assert balloons["actions"] and all(a["kind"] == "balloon" for a in balloons["actions"]), balloons
    assert not b_error and b_done["outcomes"]["failed"] == 0, b_done
    assert b_done["outcomes"]["done"] >= 1, b_done  # balloon changes, as shown, through the executor
    assert not is_error, done
    [move] = shown["moves"]
    assert move["src"] == "lab-1" and done["applied"] and done["outcomes"]["done"] == 1, done
    assert _running_on(lab_dir, move["vm"]) == [move["dst"]]
    code, out, _ = cli("plans", "show", str(done["journal_plan_id"]), "--json")
    body = json.loads(out)["plan"]
    assert body["requested_by"]["client"] == "llmvirt-tests" and body["shown_plan_id"] == shown["plan_id"]
    for vm_name in HOT_GUESTS:
        lab.load(lab_dir, vm_name, 0, 8)


def test_second_apply_exits_at_once(lab_env, monkeypatch) -> None:
    from llmvirt.act import executor

    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    cli("scan")
    with executor.apply_lock(url):
        code, out, err = cli("rebalance", "--apply", "--only", "balloon")
    assert code == executor.EXIT_LOCKED and "another `llmvirt rebalance --apply` is running" in err


def test_two_processes_race_to_apply(lab_env, monkeypatch) -> None:
    """Two real processes apply the same migration at once (issue 17): exactly one runs it, the other exits 5
    at once with the lock's message, and the guest ends on exactly one host, the destination."""
    import subprocess
    import sys

    from llmvirt.store import database, journal

    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    Cli()("scan")
    engine = database.open_engine(url)
    before = {a["id"] for a in journal.all_actions(engine)}
    src, dst, action = _migration(lab_dir, "vm-5")
    slow = json.dumps({"bandwidth_mib_s": 16, "timeout_base_s": 120, "timeout_per_gib_s": 0})
    procs = [subprocess.Popen([sys.executable, "-c", APPLY_IN_SUBPROCESS, url, json.dumps(action.row()), slow],
                              env=dict(os.environ, LLMVIRT_DB=url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = sorted(((p.wait(timeout=180), p.communicate()[1]) for p in procs), key=lambda r: r[0])
    assert [code for code, _ in results] == [0, 5], results
    assert "another `llmvirt rebalance --apply` is running" in results[1][1]
    new = [a for a in journal.all_actions(engine) if a["id"] not in before]
    assert [a["status"] for a in new] == ["done"], new  # one journaled run, not two
    assert _running_on(lab_dir, "vm-5") == [dst]


def _running(cli: Cli) -> dict[str, dict]:
    return {v["name"]: v for h in _status(cli).values() for v in h["vms"] if v["state"] == "running"}


def test_apply_pins_as_the_pin_head_chose(lab_env, monkeypatch) -> None:
    """--only pin: the head's plan (here with host CPU 0 reserved) is what the guests end up pinned to."""
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cfg = Path(os.environ["LLMVIRT_CONFIG"])
    base = cfg.read_text()
    cfg.write_text(base + "[limits]\nreserved_cpus = 1\n")
    cli = Cli()
    cli("scan")
    code, out, err = cli("rebalance", "--only", "pin", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["policy"].endswith("default/pin") and plan["actions"]
    assert all(a["params"]["reason"].startswith("head:") for a in plan["actions"])
    assert all(c == [1] for a in plan["actions"] for c in a["params"]["pins"].values())  # CPU 0 is reserved
    code, out, err = cli("rebalance", "--apply", "--only", "pin")
    assert code == 0, out + err
    cli("scan")
    live = _running(cli)
    for a in plan["actions"]:
        assert live[a["vm"]]["pinning"] == a["params"]["pins"]
    cfg.write_text(base)  # nothing reserved: the head floats the guests over every CPU again
    code, out, err = cli("rebalance", "--apply", "--only", "pin")
    assert code == 0, out + err
    cli("scan")
    assert all(set(map(tuple, v["pinning"].values())) <= {(0, 1)} for v in _running(cli).values())
    code, out, err = cli("rebalance", "--apply", "--only", "pin", "--policy", "baseline:rules")
    assert code == 0, out + err
    cli("scan")
    for h in _status(cli).values():  # the rules pin one-to-one and never share a host CPU
        cpus = [c[0] for v in h["vms"] if v["state"] == "running" for c in v["pinning"].values() if len(c) == 1]
        assert len(cpus) == len(set(cpus))


def test_balloon_head_shrinks_within_limits_and_deflates_under_load(lab_env, monkeypatch) -> None:
    """--only balloon: real balloons move to the head's targets, one safe step at a time, a guest whose
    memory load rises is given its memory back at once, and its margin grows (pressure feedback)."""
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    _wait_guest_stats(cli, "vm-5", lambda v: v["balloon"]["usable_mib"] is not None)
    before = _running(cli)
    code, out, err = cli("rebalance", "--only", "balloon", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["policy"].endswith("default/balloon")
    shrink = {a["vm"]: a["params"]["target_mib"] for a in plan["actions"]}
    assert "vm-5" in shrink and all("forecast need" in a["params"]["reason"] for a in plan["actions"])
    first_why = next(a["params"]["reason"] for a in plan["actions"] if a["vm"] == "vm-5")
    assert "pressure feedback" in first_why
    for vm, target in shrink.items():
        b = before[vm]["balloon"]
        used = b["available_mib"] - b["unused_mib"]
        assert abs(target - b["current_mib"]) <= 0.05 * b["current_mib"] + 1  # one step of at most 5 %, either way
        assert target >= used + 0.2 * b["current_mib"] - 1  # never below the floor
    code, out, err = cli("rebalance", "--apply", "--only", "balloon")
    assert code == 0, out + err
    for vm, target in shrink.items():
        _wait_guest_stats(cli, vm, lambda v, t=target: v["balloon"]["current_mib"] == t)
    dom = next(_conn(lab_dir, h).lookupByName("vm-5") for h in ("lab-1", "lab-2", "lab-3")
               if "vm-5" in [d.name() for d in _conn(lab_dir, h).listAllDomains()])
    lab.load(lab_dir, "vm-5", 0, 96)  # the guest's memory load rises ...
    dom.setMemoryFlags(128 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # ... into a balloon that someone squeezed
    _wait_guest_stats(cli, "vm-5", lambda v: (v["balloon"]["usable_mib"] or 10**9) < 0.1 * v["balloon"]["current_mib"],
                      timeout=60)
    code, out, err = cli("rebalance", "--apply", "--only", "balloon", "--json")
    assert code == 0, out + err
    v = _wait_guest_stats(cli, "vm-5", lambda v: v["balloon"]["current_mib"] == 192)  # deflated to the maximum
    lab.load(lab_dir, "vm-5", 0, 0)
    assert v["balloon"]["maximum_mib"] == 192
    # pressure feedback (issue 16): once calm again, vm-5 is offered a smaller balloon with a wider margin
    _wait_guest_stats(cli, "vm-5", lambda v: (v["balloon"]["usable_mib"] or 0) > 0.3 * v["balloon"]["current_mib"],
                      timeout=60)
    code, out, err = cli("rebalance", "--only", "balloon", "--json")
    assert code == 0, err
    doc = json.loads(out)
    again = (next((a["params"]["reason"] for a in doc["actions"] if a["vm"] == "vm-5"), None)
             or doc["left_alone"]["vm-5"])
    assert _margin_pct(again) > _margin_pct(first_why), (first_why, again)


def _margin_pct(why: str) -> int:
    """The margin a balloon plan's reason states, in percent ("... + 12 % margin (pressure feedback) ...")."""
    return int(why.split(" % margin")[0].rsplit("+ ", 1)[1])


def test_sigkill_mid_plan_then_rerun_reconciles(lab_env, monkeypatch, tmp_path) -> None:
    """Kill llmvirt while its migration is mid-transfer (libvirt reports the job active, issue 17); the next
    run of any command (here a plain `scan`, not another plan) finds where the VM is and records it."""
    import os
    import signal
    import subprocess
    import sys

    from llmvirt.store import database, journal

    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    cli("scan")
    engine = database.open_engine(url)
    before = {a["id"] for a in journal.all_actions(engine)}
    src, dst, action = _migration(lab_dir, "vm-1")
    slow = {"bandwidth_mib_s": 2, "timeout_base_s": 60, "timeout_per_gib_s": 0}
    proc = subprocess.Popen([sys.executable, "-c", APPLY_IN_SUBPROCESS, url, json.dumps(action.row()),
                             json.dumps(slow)],
                            env=dict(os.environ, LLMVIRT_DB=url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    running = None
    while time.monotonic() < deadline and running is None:
        acts = journal.all_actions(engine)
        running = next((a for a in acts if a["id"] not in before and a["status"] == "running"),
                       None)
        time.sleep(0.05)
    assert running is not None, proc.communicate(timeout=60)[0]
    job = _wait_job_active(lab_dir, src, running["vm"])
    assert job["data_remaining"] > 0, job
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60  # the source daemon cancels a migration whose client died
    while time.monotonic() < deadline and len(_running_on(lab_dir, running["vm"])) != 1:
        time.sleep(0.5)
    where = _running_on(lab_dir, running["vm"])
    assert len(where) == 1  # never lost, never duplicated
    code, out, err = cli("scan")
    assert code == 0, out + err
    after = next(a for a in journal.all_actions(engine) if a["id"] == running["id"])
    assert after["status"] in ("done", "failed") and after["reason"].startswith("reconciled"), after
    assert (after["status"] == "done") == (where == [running["dst"]])
    assert "reconciled" in err  # the scan says what it set right
    assert cli("scan")[0] == 0 and next(a for a in journal.all_actions(engine)
                                        if a["id"] == running["id"])["reason"] == after["reason"]  # never twice


def test_sigkill_mid_balloon_then_rerun_reconciles(lab_env, monkeypatch) -> None:
    """Kill llmvirt while its balloon change is under way (issue 17). The guest is paused first, so after
    libvirt takes the new target the guest cannot reach it and the action waits in its post-condition; the
    kill lands there. Once resumed the guest reaches the target llmvirt set, and the next scan reads the
    balloon back and closes the action as done, once."""
    import subprocess
    import sys

    from llmvirt.store import database

    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    assert cli("scan")[0] == 0
    engine = database.open_engine(url)
    before = {a["id"] for a in journal.all_actions(engine)}
    vm = "vm-2"
    (host,) = _running_on(lab_dir, vm)
    dom = _conn(lab_dir, host).lookupByName(vm)
    start = dom.info()[2] // 1024
    target = start - 32
    action = Action.balloon(vm, host, target, "test", uuid=dom.UUIDString())
    dom.suspend()
    try:
        proc = subprocess.Popen([sys.executable, "-c", APPLY_IN_SUBPROCESS, url, json.dumps(action.row())],
                                env=dict(os.environ, LLMVIRT_DB=url), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        running = _wait_running(url, before)
        time.sleep(1.5)  # the pre-condition and the set take milliseconds; the post-condition waits 10 s
        assert proc.poll() is None, proc.communicate()[0]
        assert abs(dom.memoryStats()["actual"] // 1024 - start) <= 1  # paused: the guest has not moved
        proc.kill()
        proc.wait(timeout=30)
    finally:
        dom.resume()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and abs(dom.memoryStats()["actual"] // 1024 - target) > 1:
        time.sleep(0.5)
    assert abs(dom.memoryStats()["actual"] // 1024 - target) <= 1  # the kill came after libvirt took the target
    assert _running_on(lab_dir, vm) == [host]
    code, out, err = cli("scan")
    assert code == 0, out + err
    status, reason = next((a["status"], a["reason"]) for a in journal.all_actions(engine) if a["id"] == running["id"])
    assert status == "done" and reason.startswith(f"reconciled: {vm} balloon at"), reason
    assert "reconciled" in err
    assert cli("scan")[0] == 0 and next(a["reason"] for a in journal.all_actions(engine)
                                        if a["id"] == running["id"]) == reason  # closed once, never replayed
    dom.setMemoryFlags(start * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # leave the guest as found


def _lab_host(lab_dir: Path, name: str) -> daemons.LabHost:
    return daemons.LabHost(name, int(name.split("-")[1]), lab_dir / "hosts" / name, "")


def _apply_in_background(url: str, actions: list[Action], settings=None):  # noqa: ANN001, ANN202
    """Run executor.apply in a thread (as `rebalance --apply` would) and return (thread, result box)."""
    import threading

    from llmvirt.act import executor
    from llmvirt.act.runner import MigrationSettings
    from llmvirt.store import database

    box: dict = {}

    def go() -> None:
        try:
            box["result"] = executor.apply(database.open_engine(url), url,
                                           journal.NewPlan("balance", "test", {}, actions),
                                           Guardrails(settings=settings or MigrationSettings()), say=lambda *_: None)
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    return t, box


def _wait_running(url: str, before: set[int]) -> dict:
    from llmvirt.store import database, journal

    engine = database.open_engine(url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for a in journal.all_actions(engine):
            if a["id"] not in before and a["status"] == "running":
                return a
        time.sleep(0.02)
    raise AssertionError("no action started")


def _uuid(lab_dir: Path, host: str, vm: str) -> str:
    return _conn(lab_dir, host).lookupByName(vm).UUIDString()


def _migration(lab_dir: Path, vm: str) -> tuple[str, str, Action]:
    """(source, destination, journal action) for moving ``vm`` off the host it runs on now."""
    src = _running_on(lab_dir, vm)[0]
    dst = next(h for h in ("lab-1", "lab-2", "lab-3") if h != src)
    return src, dst, Action.migrate(vm, src, dst, "test", uuid=_uuid(lab_dir, src, vm))


def _wait_job_active(lab_dir: Path, host: str, vm: str, timeout: float = 60.0) -> dict:
    """libvirt's job statistics of ``vm`` on ``host`` once a migration job is active and has moved data."""
    dom = _conn(lab_dir, host).lookupByName(vm)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = dom.jobStats()
        if stats.get("type") == libvirt.VIR_DOMAIN_JOB_UNBOUNDED and stats.get("data_processed", 0) > 0:
            return stats
        time.sleep(0.05)
    raise AssertionError(f"{vm}: no active migration job on {host} within {timeout} s")


def test_fault_destination_libvirtd_killed_during_migration(lab_env, monkeypatch) -> None:
    """The destination's libvirtd dies mid-migration: the action fails with libvirt's reason, the
    guest keeps running on its source, and after the daemon returns it runs nowhere else.

    Deterministic: the migration's bandwidth is capped (2 MiB/s for a 192 MiB guest), and the kill comes
    only once libvirt reports the migration job active with data moved and data left (issue 17).
    With the client-driven protocol libvirt notices the dead destination daemon only in its Finish
    phase, after the whole transfer; llmvirt's completion timeout aborts the job first, the action
    fails, and the guest is resumed on its source."""
    import os
    import signal

    from llmvirt.act.runner import MigrationSettings
    from llmvirt.store import database, journal

    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    Cli()("scan")
    src, dst, action = _migration(lab_dir, "vm-6")
    lab.load(lab_dir, "vm-6", 100, 8)  # a busy guest keeps dirtying pages
    before = {a["id"] for a in journal.all_actions(database.open_engine(url))}
    slow = MigrationSettings(bandwidth_mib_s=2, timeout_base_s=12, timeout_per_gib_s=0)
    t, box = _apply_in_background(url, [action], slow)
    _wait_running(url, before)
    job = _wait_job_active(lab_dir, src, "vm-6")
    assert job["data_remaining"] > 0, job  # the kill lands mid-transfer
    os.kill(daemons.read_pid(_lab_host(lab_dir, dst).pidfile("libvirtd")), signal.SIGKILL)
    killed_at = time.monotonic()
    t.join(120)
    assert "result" in box, box
    _plan_id, counts = box["result"]
    assert counts["failed"] == 1
    failed = [a for a in journal.all_actions(database.open_engine(url)) if a["id"] not in before]
    print(f"destination killed mid-transfer ({job['data_processed'] >> 20} MiB sent, "
          f"{job['data_remaining'] >> 20} MiB left); failed after {time.monotonic() - killed_at:.1f} s: "
          f"{failed[0]['reason']}")
    daemons.restart_host(_lab_host(lab_dir, dst))
    # the restarted daemon reconnects to the half-received guest's QEMU and kills it: give it time (on a
    # loaded machine 2 s was not always enough; seen once in CI), then the guest must run on its source only
    deadline = time.monotonic() + 30
    while _running_on(lab_dir, "vm-6") != [src] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _running_on(lab_dir, "vm-6") == [src]
    state, _reason = _conn(lab_dir, src).lookupByName("vm-6").state()
    assert state == libvirt.VIR_DOMAIN_RUNNING  # running, not left paused by the failed migration
    assert lab.load(lab_dir, "vm-6", 0, 8).name == src  # and its userland still answers
    acts = journal.all_actions(database.open_engine(url))
    assert acts[0]["status"] == "failed" and acts[0]["reason"]


def test_controller_leader_killed_mid_migration_on_a_postgresql_store(lab_env, monkeypatch, postgres_server) -> None:
    """Issue 19: two controllers share a PostgreSQL store of the lab. The leader plans a migration off the
    hotspot and is SIGKILLed while libvirt reports the transfer active; the other takes over, reconciles the
    journal, and nothing runs twice: the guest ends on exactly one host and the action is closed once."""
    import signal

    from test_controller import Controller

    from llmvirt.store import database, registry

    lab_dir, sqlite_url = lab_env
    pg = postgres_server.new_database()
    pg_engine = database.open_engine(pg)
    for h in registry.list_hosts(database.open_engine(sqlite_url)):  # the lab's hosts, in the shared store
        registry.add_host(pg_engine, registry.RegisteredHost(h.name, h.uri))
    monkeypatch.setenv("LLMVIRT_DB", pg)
    _hotspot(lab_dir, Cli())
    cfg = Path(os.environ["LLMVIRT_CONFIG"])  # slow migrations, so the kill lands mid-transfer
    cfg.write_text(cfg.read_text() + "[apply]\nbandwidth_mib_s = 2\ntimeout_base_s = 300\ntimeout_per_gib_s = 0\n")
    # it plans every 2 s, not once per 300 s: its first plan's newest scan interval covers its own start-up, which
    # can starve the busy guests below the measured threshold (seen in CI: one plan with no action, then none)
    a = Controller(pg, "--apply", "--max-migrations", "1", "--plan-every", "2")
    b = None
    try:
        try:
            running = _wait_running(pg, set())  # a, the only controller, leads and started its migration
        except AssertionError as exc:  # say what the leader did instead
            ticks = a.ticks()
            raise AssertionError(f"{exc}; the leader's plans: {[t for t in ticks if t['planned']][-5:]}; its last "
                                 f"ticks: {ticks[-3:]}; stderr: {a.stderr()}") from None
        assert running["kind"] == "migrate" and running["src"] == "lab-1", running
        b = Controller(pg, "--dry-run")
        assert b.next_tick(60)["role"] == "follower"
        assert _wait_job_active(lab_dir, "lab-1", running["vm"])["data_remaining"] > 0
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=30)
        tick, waited = b.until("leader", 30)
        assert tick["took_over"] and waited < 30, tick
        deadline = time.monotonic() + 60  # the source daemon cancels a migration whose client died
        while time.monotonic() < deadline and len(_running_on(lab_dir, running["vm"])) != 1:
            time.sleep(0.5)
        where = _running_on(lab_dir, running["vm"])
        assert len(where) == 1, where  # never lost, never duplicated
        b.next_tick(60)  # one more tick after the guest settled
        acts = [x for x in journal.all_actions(pg_engine) if x["kind"] == "migrate"]
        assert [x["id"] for x in acts] == [running["id"]]  # b planned in dry run: no second migration
        closed = acts[0]
        assert closed["status"] in ("done", "failed") and closed["reason"].startswith("reconciled"), closed
        assert (closed["status"] == "done") == (where == [running["dst"]])
        code, out, _ = Cli()("plans", "show", str(closed["plan_id"]), "--json")
        events = [e["status"] for e in json.loads(out)["actions"][0]["events"]]
        assert events.count("running") == 1, events  # started once, by the leader that died
    finally:
        a.stop()
        if b is not None:
            b.stop()
        pg_engine.dispose()


def test_fault_source_host_stopped_during_plan(lab_env, monkeypatch) -> None:
    """The source host's libvirtd is gone when the plan reaches its action: failed, nothing lost."""
    import os
    import signal

    from llmvirt.store import database, journal

    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    Cli()("scan")
    src, dst, action = _migration(lab_dir, "vm-5")  # resolved while the source still answers
    os.kill(daemons.read_pid(_lab_host(lab_dir, src).pidfile("libvirtd")), signal.SIGKILL)
    time.sleep(0.5)
    t, box = _apply_in_background(url, [action])
    t.join(120)
    daemons.restart_host(_lab_host(lab_dir, src))
    time.sleep(2)
    assert box["result"][1]["failed"] == 1
    act = journal.all_actions(database.open_engine(url))[0]
    assert act["status"] == "failed" and src in act["reason"]
    assert _running_on(lab_dir, "vm-5") == [src]


def test_controller_kept_connection_follows_live_pinning_and_a_libvirtd_restart(lab_env) -> None:
    """Issue 19: a controller keeps its connection to each host between scans. Through it a scan still sees
    a pinning changed from elsewhere, and after the host's libvirtd restarts (the kept connection dead)
    the next scan reads the host on a fresh connection, with nothing failed."""
    import signal

    from llmvirt.observe.host_sessions import HostSessions
    from llmvirt.observe.inventory import scan_hosts

    lab_dir, _url = lab_env
    host = _lab_host(lab_dir, "lab-1")
    targets = [("lab-1", host.uri, False)]
    kept = HostSessions()
    try:
        before = scan_hosts(targets, sessions=kept)
        first, _ = kept.get(host.uri)
        _conn(lab_dir, "lab-1").lookupByName("vm-3").pinVcpuFlags(0, (False, True), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        pinned = scan_hosts(targets, sessions=kept)
        assert pinned.hosts[0].vm("vm-3").pinning == {0: (1,)}
        os.kill(daemons.read_pid(host.pidfile("libvirtd")), signal.SIGKILL)  # libvirtd crashes ...
        time.sleep(0.5)
        daemons.restart_host(host)  # ... and is started again; the guests kept running
        after = scan_hosts(targets, sessions=kept)
        assert not after.failures, after.failures
        assert kept.get(host.uri)[0] is not first  # read on a fresh connection
        names = sorted(v.name for v in before.hosts[0].vms)
        assert sorted(v.name for v in after.hosts[0].vms) == names and "vm-3" in names
    finally:
        kept.close()


def test_fault_database_read_only_during_run(lab_env, monkeypatch) -> None:
    """With the store read-only, the real `llmvirt rebalance --apply` (a drain plan of a host put in
    maintenance) stops before acting: one line, exit 4, nothing moved (issue 17: through the command)."""
    import os
    import subprocess
    import sys

    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    db = Path(url.removeprefix("sqlite:///"))
    where = {vm: _running_on(lab_dir, vm) for vm in ("vm-1", "vm-5", "vm-6")}
    host = where["vm-1"][0]
    assert cli("hosts", "maintenance", host, "on")[0] == 0
    try:
        cli("scan")
        code, out, err = cli("rebalance", "--json")
        assert code == 0 and json.loads(out)["moves"], out + err  # there is a plan to apply
        # the database and its write-ahead log become immutable (root ignores file modes)
        files = [p for p in (db, db.with_name(db.name + "-wal")) if p.exists()]
        subprocess.run(["chattr", "+i", *map(str, files)], check=True)
        try:
            res = subprocess.run([sys.executable, "-m", "llmvirt", "rebalance", "--apply"],
                                 env=dict(os.environ, LLMVIRT_DB=url), capture_output=True, text=True, timeout=120)
        finally:
            subprocess.run(["chattr", "-i", *map(str, files)], check=True)
    finally:
        cli("hosts", "maintenance", host, "off")
    code, out, err = res.returncode, res.stdout, res.stderr
    assert code == 4 and "cannot write the journal" in err and "Traceback" not in err, (code, out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert {vm: _running_on(lab_dir, vm) for vm in where} == where  # nothing acted without a journal


def test_migration_timeout_aborts_and_leaves_guest_on_source(lab_env, monkeypatch) -> None:
    from llmvirt.act import executor
    from llmvirt.act.runner import MigrationSettings
    from llmvirt.store import database, journal

    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    Cli()("scan")
    src, dst, action = _migration(lab_dir, "vm-6")
    lab.load(lab_dir, "vm-6", 100, 8)  # busy guest; a 192 MiB guest takes about 2 s to migrate, far over 0.2 s
    settings = MigrationSettings(timeout_base_s=0.2, timeout_per_gib_s=0.0, poll_s=0.1)
    engine = database.open_engine(url)
    _, counts = executor.apply(engine, url, journal.NewPlan("balance", "test", {}, [action]),
                               Guardrails(settings=settings), say=lambda *_: None)
    lab.load(lab_dir, "vm-6", 0, 8)
    act = journal.all_actions(engine)[0]
    assert counts["failed"] == 1 and "aborted" in act["reason"], act
    time.sleep(1)
    assert _running_on(lab_dir, "vm-6") == [src]


def test_peer_to_peer_migration(lab_env, monkeypatch) -> None:
    """[apply] peer_to_peer: the source libvirtd connects to the destination itself (migrateToURI3)."""
    from llmvirt.act import executor
    from llmvirt.act.runner import MigrationSettings
    from llmvirt.store import database

    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    Cli()("scan")
    _src, dst, action = _migration(lab_dir, "vm-5")
    _, counts = executor.apply(database.open_engine(url), url, journal.NewPlan("balance", "test", {}, [action]),
                               Guardrails(settings=MigrationSettings(peer_to_peer=True)), say=lambda *_: None)
    assert counts["done"] == 1, counts
    assert _running_on(lab_dir, "vm-5") == [dst]
    code, out, _ = Cli()("actions", "--json")
    row = next(r for r in json.loads(out)["actions"] if r["vm"] == "vm-5" and r["status"] == "done")
    assert row["reason"] == f"vm-5 moved to {dst} (peer to peer)"  # the journal says how it moved


def test_maintenance_drains_host_with_apply(lab_env, monkeypatch) -> None:
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cli = Cli()
    host = _running_on(lab_dir, "vm-6")[0]
    assert cli("hosts", "maintenance", host, "on")[0] == 0
    try:
        cli("scan")
        code, out, err = cli("rebalance", "--apply")
        assert code == 0, out + err
        cli("scan")
        assert [v for v in _status(cli)[host]["vms"] if v["state"] == "running"] == []
        assert _running_on(lab_dir, "vm-6") not in ([host], [])
    finally:
        cli("hosts", "maintenance", host, "off")


def test_real_actions_are_scored_and_retrain_a_new_version(lab_env, monkeypatch) -> None:
    """The loop on real hosts: a migration, a pinning and a balloon change applied here get outcomes from
    the scans after them, with the migration's libvirt job statistics, and the store's outcomes fine-tune
    a new policy version."""
    from llmvirt.act import executor
    from llmvirt.store import database

    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    cfg = Path(os.environ["LLMVIRT_CONFIG"])
    cfg.write_text(cfg.read_text() + "[outcomes]\nwindow_s = 8\n")
    cli = Cli()
    cli("scan")
    time.sleep(3)
    cli("scan")
    _src, _dst, migrate = _migration(lab_dir, "vm-2")
    pin = Action.pin("vm-3", "lab-1", {0: (1,)}, "test", uuid=_uuid(lab_dir, "lab-1", "vm-3"))
    balloon = Action.balloon("vm-4", "lab-1", 160, "test", uuid=_uuid(lab_dir, "lab-1", "vm-4"))
    _, counts = executor.apply(database.open_engine(url), url,
                               journal.NewPlan("balance", "test", {}, [migrate, pin, balloon]), Guardrails(),
                               say=lambda *_: None)
    assert counts["done"] == 3, counts
    for _ in range(4):
        cli("scan")
        time.sleep(3)
    code, out, err = cli("outcomes", "--json")
    assert code == 0, err
    rows = [r for r in json.loads(out)["outcomes"] if r["outcome"] == "scored"]
    kinds = {r["kind"] for r in rows}
    assert {"migrate", "pin", "balloon"} <= kinds
    moved = [r for r in rows if r["kind"] == "migrate" and r["success"]]
    assert moved and all(r["reward"] < 0 and r["detail"]["score"]["gib_migrated"] > 0 for r in moved)
    assert any("downtime_ms" in r["detail"]["job"] for r in moved)  # libvirt's completed-job statistics
    assert any(r["detail"]["after_scans"] >= 1 and r["detail"]["after"][r["dst"]] is not None for r in moved)
    code, out, err = cli("train", "--from-store")
    assert code == 0, out + err
    code, out, err = cli("policy", "list", "--json")
    new = [v for v in json.loads(out)["versions"] if v["source"] == "fine-tuned"]
    assert new and new[-1]["parent"] == "v0" and Path(new[-1]["path"], "policy.json").is_file()
    code, out, err = cli("policy", "promote", new[-1]["name"], "--json")
    assert code in (0, 1), err  # evaluated on the store's replayed history: promoted only if no worse
    doc = json.loads(out)
    if doc["promoted"]:  # the shipped version active again for whatever test runs next (any order)
        assert cli("policy", "rollback")[0] == 0
        versions = json.loads(cli("policy", "list", "--json")[1])["versions"]
        assert [v["name"] for v in versions if v["active"]] == ["v0"]
    assert "store/balance" in doc["candidate_rewards"] and doc["promoted"] == doc["better_or_equal"]


def test_doctor_on_the_lab(lab_env, monkeypatch) -> None:
    """doctor against real libvirtd: every lab host answers, its guests report memory (virtio_balloon), and
    the shared hostname of hosts on one machine is named with its fix (issue 18)."""
    lab_dir, url = lab_env
    monkeypatch.setenv("LLMVIRT_DB", url)
    code, out, err = Cli()("doctor", "--json")
    checks = {(c["scope"], c["check"]): c for c in json.loads(out)["checks"]}
    assert code == 0, out + err
    for host in ("lab-1", "lab-2", "lab-3"):
        assert checks[(host, "reachable")]["status"] == "ok"
        assert checks[(host, "balloon statistics")]["status"] == "ok", checks[(host, "balloon statistics")]
        assert checks[(host, "migration address")]["detail"].startswith("a local host")
    # the lab's guests boot a kernel and an initramfs: no disk to strand
    assert checks[("cluster", "shared storage")] | {"fix": ""} == {
        "scope": "cluster", "check": "shared storage", "status": "ok", "fix": "",
        "detail": "no running guest has a disk on host storage"}
    assert checks[("cluster", "hostnames")]["status"] == "warn" and "migrate_uri" in checks[("cluster", "hostnames")][
        "fix"]


def test_lab_status_lists_daemons_and_guests(lab_env) -> None:
    lab_dir, _ = lab_env
    st = lab.status(lab_dir)
    assert st["up"] and len(st["hosts"]) == 3
    assert all(all(h["alive"].values()) for h in st["hosts"])
    assert sorted(st["guests"]) == [f"vm-{i}" for i in range(1, 7)]


def test_spread_is_uneven() -> None:
    assert lab.spread(3, 6) == [0, 0, 0, 0, 1, 1]
    assert lab.spread(1, 2) == [0, 0]
    assert lab.spread(4, 6) == [0, 0, 0, 0, 1, 2]


def test_lab_refuses_without_root(monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UsageError, match="needs root"):
        lab.check_prerequisites()


def test_lab_names_missing_programs(monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(lab.shutil, "which", lambda p: None if p == "libvirtd" else "/usr/bin/" + p)
    with pytest.raises(UsageError, match="missing libvirtd"):
        lab.check_prerequisites()


def _lab_mounts(path: Path) -> list[str]:
    found = []
    for mi in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            found += [ln for ln in mi.read_text().splitlines() if str(path) in ln]
        except OSError:
            continue
    return found


def test_down_after_half_finished_up_leaves_nothing(tmp_path: Path, db_url: str) -> None:
    """An `up` that died after starting a host (no state file) is still cleaned by `down`."""
    from llmvirt.store import database

    lab_dir = tmp_path / "lab"
    host = daemons.new_host(lab_dir, 1)
    daemons.start_host(host)
    pids = [daemons.read_pid(host.pidfile(d)) for d in ("libvirtd", "virtlogd")]
    assert all(p and daemons.pid_is(p, n) for p, n in zip(pids, ("libvirtd", "virtlogd"), strict=True))
    assert _lab_mounts(host.dir)  # the namespace's bind mounts exist while the daemons run
    engine = database.open_engine(db_url)
    assert lab.down(lab_dir, engine, quiet=True) == 1
    assert not any(p and (daemons.pid_is(p, "libvirtd") or daemons.pid_is(p, "virtlogd")) for p in pids)
    assert not host.socket.exists() and not host.dir.exists()
    assert _lab_mounts(host.dir) == []
    assert lab.down(lab_dir, engine, quiet=True) == 0  # idempotent


def test_full_down_leaves_no_process_mount_or_socket(tmp_path: Path, db_url: str) -> None:
    from llmvirt.store import database

    engine = database.open_engine(db_url)
    lab_dir = tmp_path / "lab"
    state = lab.up(lab_dir, 2, 1, engine, say=lambda *_: None)
    st = lab.status(lab_dir)
    pids = [(p, n) for h in st["hosts"] for n, p in h["pids"].items()]
    pids += [(p, "qemu-system-x86_64") for h in st["hosts"] for p in h["qemu_pids"]]
    assert len(pids) == 5
    sockets = [h.socket for h in state.hosts]
    lab.down(lab_dir, engine, quiet=True)
    assert [p for p, n in pids if daemons.pid_is(p, n)] == []
    assert [s for s in sockets if s.exists()] == []
    assert _lab_mounts(lab_dir / "hosts") == []
    assert not (lab_dir / "lab.json").exists()
    from llmvirt.store import registry

    assert registry.list_hosts(engine) == []
