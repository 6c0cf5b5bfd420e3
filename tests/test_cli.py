"""The CLI, through typer's CliRunner and through the installed ``llmvirt`` command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES, Cli, fixture_uri

from llmvirt.errors import EXIT_PARTIAL, EXIT_STORE, EXIT_USAGE


def _register_fleet(cli: Cli) -> None:
    assert cli("hosts", "add", "gpu1", fixture_uri("gpu-host.xml"))[0] == 0
    assert cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))[0] == 0
    assert cli("hosts", "add", "spare", fixture_uri("small-host.xml"), "--maintenance")[0] == 0


def test_hosts_add_list_maintenance_remove(cli: Cli) -> None:
    _register_fleet(cli)
    code, out, _ = cli("hosts", "list", "--json")
    hosts = json.loads(out)["hosts"]
    assert [(h["name"], h["maintenance"]) for h in hosts] == [("gpu1", False), ("busy", False), ("spare", True)]
    assert cli("hosts", "maintenance", "busy", "on")[0] == 0
    assert cli("hosts", "maintenance", "spare", "off")[0] == 0
    hosts = json.loads(cli("hosts", "list", "--json")[1])["hosts"]
    assert [h["maintenance"] for h in hosts] == [False, True, False]
    assert cli("hosts", "remove", "spare")[0] == 0
    assert [h["name"] for h in json.loads(cli("hosts", "list", "--json")[1])["hosts"]] == ["gpu1", "busy"]


def test_bad_host_input_is_one_line_and_nonzero(cli: Cli) -> None:
    _register_fleet(cli)
    for args, needle in [
        (("hosts", "add", "gpu1", fixture_uri("busy-host.xml")), "already registered"),
        (("hosts", "add", "x", "not a uri"), "malformed libvirt URI"),
        (("hosts", "add", "x", "qemu:/system"), "malformed libvirt URI"),
        (("hosts", "add", "x", "test:///no/such/file.xml"), "existing absolute XML file"),
        (("hosts", "add", "bad name!", "qemu:///system"), "invalid host name"),
        (("hosts", "remove", "nope"), "unknown host"),
        (("hosts", "maintenance", "gpu1", "maybe"), "'on' or 'off'"),
        (("scan", "--host", "nope"), "unknown host"),
        (("db", "prune", "--older-than", "soon"), "invalid age"),
    ]:
        code, out, err = cli(*args)
        assert code == EXIT_USAGE, args
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)
    # nothing already stored was lost
    assert len(json.loads(cli("hosts", "list", "--json")[1])["hosts"]) == 3


def test_scan_and_status_json_contract(cli: Cli) -> None:
    _register_fleet(cli)
    code, out, _ = cli("scan", "--json")
    assert code == 0, out
    assert {h["name"]: h["vms"] for h in json.loads(out)["hosts"]} == {"gpu1": 2, "busy": 3, "spare": 0}
    cli("scan")
    doc = json.loads(cli("status", "--json")[1])
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert set(hosts) == {"gpu1", "busy", "spare"}
    for h in hosts.values():
        for key in ("name", "uri", "maintenance", "scanned_at", "cpus", "memory_mib", "numa_cells", "gpus", "vms"):
            assert key in h
        assert h["scanned_at"].endswith("Z")
    assert hosts["spare"]["maintenance"] is True
    gpu1 = hosts["gpu1"]
    assert gpu1["cpus"] == 32 and gpu1["memory_mib"] == 262144
    assert [c["cpus"] for c in gpu1["numa_cells"]] == [list(range(16)), list(range(16, 32))]
    gpus = {g["pci"]: g for g in gpu1["gpus"]}
    assert gpus["0000:41:00.0"]["assigned_to"] == "train1"
    assert gpus["0000:41:00.0"]["vendor"] == "NVIDIA Corporation" and "H100" in gpus["0000:41:00.0"]["model"]
    assert gpus["0000:c1:00.0"]["assigned_to"] == "infer1"
    assert {"type": "nvidia-1156", "name": "NVIDIA L40S-24Q", "available": 1} in gpus["0000:c1:00.0"]["mdev_types"]
    vms = {v["name"]: v for v in gpu1["vms"]}
    assert vms["train1"]["gpus"] == [{"kind": "passthrough", "pci": "0000:41:00.0"}]
    assert vms["train1"]["live_migratable"] is False
    assert vms["train1"]["pinning"]["7"] == [7]
    assert vms["infer1"]["gpus"] == [{"kind": "vgpu", "mdev_uuid": "c2177883-f1bb-47f0-914d-32a22e3a8804",
                                      "mdev_type": "nvidia-1155", "parent_pci": "0000:c1:00.0"}]
    busy = {v["name"]: v for v in hosts["busy"]["vms"]}
    db1 = busy["db1"]
    assert db1["vcpus"] == 4 and db1["pinning"] == {"0": [8], "1": [9], "2": [10, 11], "3": [10, 11]}
    assert db1["memory_mib"] == 8192 and db1["balloon_mib"] == 6144
    assert db1["balloon"]["usable_mib"] is not None and db1["balloon"]["unused_mib"] is not None
    assert isinstance(db1["cpu_util"], float)  # two snapshots exist
    assert busy["batch-off"]["state"] == "shutoff" and busy["batch-off"]["cpu_util"] is None
    assert cli("status")[0] == 0
    assert cli("status", "--host", "busy", "--json")[0] == 0


def test_unreachable_host_exit_3_others_stored(cli: Cli) -> None:
    _register_fleet(cli)
    cli("hosts", "add", "dead", "qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    code, out, err = cli("scan")
    assert code == EXIT_PARTIAL
    assert "dead" in err and "/nonexistent/libvirt-sock" in err
    hosts = {h["name"]: h for h in json.loads(cli("status", "--json")[1])["hosts"]}
    assert hosts["busy"]["scanned_at"] is not None and len(hosts["busy"]["vms"]) == 3
    assert hosts["dead"]["scanned_at"] is None and "/nonexistent" in hosts["dead"]["last_error"]


def test_cpu_util_null_until_two_snapshots(cli: Cli) -> None:
    _register_fleet(cli)
    cli("scan")
    hosts = {h["name"]: h for h in json.loads(cli("status", "--json")[1])["hosts"]}
    assert all(v["cpu_util"] is None for v in hosts["busy"]["vms"])


def test_config_file_hosts(cli: Cli, tmp_path: Path) -> None:
    cfg = tmp_path / "hosts.toml"
    cfg.write_text(f'[hosts.cfg1]\nuri = "{fixture_uri("small-host.xml")}"\nmaintenance = true\n')
    code, out, _ = cli("--config", str(cfg), "hosts", "list", "--json")
    assert json.loads(out)["hosts"] == [{"name": "cfg1", "uri": fixture_uri("small-host.xml"),
                                         "maintenance": True, "source": "config"}]
    assert cli("--config", str(cfg), "scan")[0] == 0


def test_default_config_location(cli: Cli, tmp_path: Path) -> None:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "llmvirt" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(f'[hosts.dflt]\nuri = "{fixture_uri("small-host.xml")}"\n')
    assert [h["name"] for h in json.loads(cli("hosts", "list", "--json")[1])["hosts"]] == ["dflt"]


def test_bad_config_files(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[hosts.x\nuri=")
    nouri = tmp_path / "nouri.toml"
    nouri.write_text("[hosts.x]\nurl = 'qemu:///system'\n")
    unreadable = tmp_path / "dir.toml"
    unreadable.mkdir()
    for path, needle in [(broken, "not valid TOML"), (nouri, "needs a string 'uri'"),
                         (tmp_path / "missing.toml", "does not exist"), (unreadable, "cannot read")]:
        code, _, err = cli("--config", str(path), "hosts", "list")
        assert code == EXIT_USAGE and needle in err and "Traceback" not in err, (path, err)


def test_store_errors_exit_4(cli: Cli, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"garbage" * 1000)
    code, _, err = cli("--db", str(corrupt), "hosts", "list")
    assert code == EXIT_STORE and "corrupted" in err and "Traceback" not in err
    assert corrupt.read_bytes() == b"garbage" * 1000
    code, _, err = cli("--db", "sqlite:////proc/llmvirt/x.db", "hosts", "list")
    assert code == EXIT_STORE and "not writable" in err


def test_nvml_sample_through_cli(cli: Cli, monkeypatch) -> None:
    monkeypatch.setenv("LLMVIRT_NVML_SAMPLE", str(FIXTURES / "nvml-sample.json"))
    cli("hosts", "add", "gpu1", fixture_uri("gpu-host.xml"))
    assert cli("scan")[0] == 0
    gpus = {g["pci"]: g for g in json.loads(cli("status", "--json")[1])["hosts"][0]["gpus"]}
    assert gpus["0000:41:00.0"]["nvml"]["uuid"].startswith("GPU-")


def test_installed_command(db_url: str) -> None:
    beside = Path(sys.executable).with_name("llmvirt")
    exe = str(beside) if beside.exists() else shutil.which("llmvirt")
    assert exe is not None, "the llmvirt console script must be installed"
    env = dict(os.environ)
    add = subprocess.run([exe, "hosts", "add", "busy", fixture_uri("busy-host.xml")], env=env,
                         capture_output=True, text=True)
    assert add.returncode == 0, add.stderr
    scan = subprocess.run([exe, "scan"], env=env, capture_output=True, text=True)
    assert scan.returncode == 0, scan.stderr
    bad = subprocess.run([exe, "hosts", "add", "x", "nonsense"], env=env, capture_output=True, text=True)
    assert bad.returncode == EXIT_USAGE and "Traceback" not in bad.stderr
    missing = subprocess.run([exe, "no-such-command"], env=env, capture_output=True, text=True)
    assert missing.returncode == EXIT_USAGE
    status = subprocess.run([exe, "status", "--json"], env=env, capture_output=True, text=True)
    assert json.loads(status.stdout)["hosts"][0]["name"] == "busy"


def test_plan_from_a_snapshot_file_equals_the_store_and_answers_what_if(cli, tmp_path) -> None:
    """``--snapshot FILE`` (issue 14): the status contract read back plans as the store does; an edited copy
    (a host put in maintenance) gives the what-if plan; bad files get one line and exit 2."""
    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    cli("hosts", "add", "spare", fixture_uri("small-host.xml"))
    cli("scan")
    cli("scan")
    code, out, err = cli("status", "--json")
    assert code == 0, err
    doc = json.loads(out)
    snap = tmp_path / "status.json"
    snap.write_text(json.dumps(doc))
    for args in (["rebalance", "--policy", "baseline:least-loaded"], ["rebalance", "--goal", "consolidate",
                                                                      "--policy", "baseline:thr-mmt-0.8"],
                 ["place", "--vcpus", "2", "--memory", "1G", "--policy", "baseline:best-fit"]):
        a = json.loads(cli(*args, "--json")[1])
        b = json.loads(cli(*args, "--snapshot", str(snap), "--json")[1])
        assert a == b, args
    for h in doc["hosts"]:
        h["maintenance"] = h["name"] == "busy"
    snap.write_text(json.dumps(doc))
    code, out, err = cli("rebalance", "--policy", "baseline:least-loaded", "--snapshot", str(snap), "--json")
    plan = json.loads(out)
    assert code == 0 and plan["moves"] and all(m["src"] == "busy" and m["dst"] == "spare" for m in plan["moves"])
    assert all("drain busy" in m["reason"] for m in plan["moves"])
    assert cli("rebalance", "--snapshot", str(snap), "--apply")[0] == 2  # a what-if is never applied
    vm = '"vms": [{"name": "v", "vcpus": %s, "memory_mib": 512, "cpu_util": %s}]'
    for bad, words in (("{", "not JSON"), ('{"hosts": [{"name": "x", "cpus": 4}]}', "memory_mib"),
                       ('{"format": 9, "hosts": []}', "status format 9"), ("[]", "JSON object"),
                       ('{"hosts": [{"name": "x", "cpus": -4, "memory_mib": 4096}]}', "cpus -4 is below 1"),
                       ('{"hosts": [{"name": "x", "cpus": 4, "memory_mib": 4096, %s}]}' % (vm % (0, 0.1)),
                        "vcpus 0 is below 1"),
                       ('{"hosts": [{"name": "x", "cpus": 4, "memory_mib": 4096, %s}]}' % (vm % (1, "NaN")),
                        "NaN is not a number"),
                       ('{"hosts": [{"name": "x", "cpus": 4, "memory_mib": 4096, %s}]}' % (vm % (1, -0.5)),
                        "cpu_util -0.5 is below 0")):
        snap.write_text(bad)
        code, out, err = cli("rebalance", "--snapshot", str(snap))
        assert code == 2 and words in err and "Traceback" not in err, (bad, err)
    assert cli("place", "--vcpus", "1", "--memory", "1G", "--snapshot", str(tmp_path / "none.json"))[0] == 2


def test_listings_fit_80_columns_without_cutting_names(cli, db_url) -> None:
    """Issue 18: every listing of the demo reads at 80 columns; long names and URIs wrap, none is cut with …"""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from llmvirt.measure import outcomes
    from llmvirt.model.action import Action
    from llmvirt.store import database, journal
    from llmvirt.store.schema import ActionRow

    cli("hosts", "add", "a-rather-long-host-name-1", fixture_uri("busy-host.xml"))
    cli("hosts", "add", "a-rather-long-host-name-2", fixture_uri("small-host.xml"))
    cli("scan")
    cli("scan")
    engine = database.open_engine(db_url)
    plan = journal.create_plan(engine, journal.NewPlan("balance", "v0:default", {}, [Action.migrate(
        "web1", "a-rather-long-host-name-1", "a-rather-long-host-name-2", "test",
        uuid="b2b2b2b2-0000-4000-8000-000000000002")]))
    aid = journal.plan_actions(engine, plan)[0].id
    journal.set_status(engine, aid, "running")
    journal.set_status(engine, aid, "done", "moved", {"seconds": 1.0})
    with engine.begin() as conn:
        conn.execute(update(ActionRow).where(ActionRow.id == aid).values(
            finished_at=datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=2)))
    outcomes.score_due(engine, window_s=60)
    for args in (["hosts", "list"], ["status"], ["plans", "list"], ["actions"], ["outcomes"], ["rebalance"],
                 ["place", "--vcpus", "1", "--memory", "1G"], ["doctor"]):
        code, out, err = cli(*args)
        assert "…" not in out, (args, out)
        assert max(len(line) for line in out.splitlines()) <= 80, (args, out)


def test_tables_show_scan_ages_as_people_read_them() -> None:
    from datetime import datetime, timedelta

    from llmvirt.status_view import ago

    now = datetime(2026, 12, 1, 12, 0, 0)
    assert ago(None, now) == "never"
    assert ago(now - timedelta(seconds=12), now) == "12 s ago"
    assert ago(now - timedelta(minutes=5, seconds=59), now) == "5 min ago"
    assert ago(now - timedelta(hours=3), now) == "3 h ago"
    assert ago(now - timedelta(days=2, hours=1), now) == "2 d ago"
    assert ago(now + timedelta(seconds=3), now) == "0 s ago"  # a clock a little ahead never reads negative


def test_help_shows_no_type_for_flags() -> None:
    """Issue 18: a flag takes no value, so help shows no ``<bool>``; options that take one keep their type."""
    res = subprocess.run([sys.executable, "-m", "llmvirt", "rebalance", "--help"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "COLUMNS": "100"})
    assert res.returncode == 0, res.stderr
    assert "<bool>" not in res.stdout
    assert re.search(r"--max-migrations\s+<int>", res.stdout) and re.search(r"--apply\s+Execute", res.stdout)


def test_place_refuses_a_rebalance_strategy_in_one_line_before_the_store(cli, db_url: str) -> None:
    """The learned balance policy plans moves, not placements: ``place --policy llmvirt-rl`` says so and where it
    runs, before any store is opened (it once answered that policies/llmvirt-rl was not a checkpoint)."""
    for name in ("llmvirt-rl", "tuned:cp-sat", "llmvirt-rl-fallback:0.9"):
        code, _, err = cli("place", "--vcpus", "1", "--memory", "1G", "--policy", name)
        assert code == 2 and "is a rebalance strategy" in err and f"rebalance --policy {name}" in err, err
    if db_url.startswith("sqlite:///"):
        assert not Path(db_url.removeprefix("sqlite:///")).exists()
