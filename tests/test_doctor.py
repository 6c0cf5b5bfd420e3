"""``llmvirt doctor`` on libvirt's test driver and on broken set-ups (issue 18): a host behind a wrong socket,
a guest without a balloon driver, a read-only store; one line per check, exit 1 when one fails."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import fixture_uri


def _checks(cli) -> tuple[int, dict[tuple[str, str], dict]]:  # noqa: ANN001
    code, out, err = cli("doctor", "--json")
    assert "Traceback" not in err
    doc = json.loads(out)
    return code, {(c["scope"], c["check"]): c for c in doc["checks"]}


def test_healthy_test_driver_hosts_pass(cli) -> None:
    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    code, checks = _checks(cli)
    assert code == 0
    assert checks[("busy", "reachable")]["status"] == "ok"
    assert checks[("busy", "balloon statistics")]["status"] == "ok"
    assert checks[("store", "schema")]["status"] == "ok" and checks[("store", "writable")]["status"] == "ok"
    assert checks[("busy", "virtualisation")]["status"] == "warn"  # the test driver offers no KVM


def test_broken_set_ups_are_named_with_a_fix(cli) -> None:
    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    cli("hosts", "add", "gpu", fixture_uri("gpu-host.xml"))
    cli("hosts", "add", "nodrv", fixture_uri("noballoon-host.xml"))
    cli("hosts", "add", "gone", "qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    code, checks = _checks(cli)
    assert code == 1
    gone = checks[("gone", "reachable")]
    assert gone["status"] == "fail" and "/nonexistent/libvirt-sock" in gone["detail"]
    assert "authentication" in gone["fix"]
    nodrv = checks[("nodrv", "balloon statistics")]
    assert nodrv["status"] == "warn" and "nodrv" in nodrv["detail"] and "virtio_balloon" in nodrv["fix"]
    assert checks[("cluster", "CPU models")]["status"] == "warn"  # Intel Gold, AMD EPYC, Intel E5
    assert checks[("cluster", "hostnames")]["status"] == "warn"  # every test host says 'vm'
    assert checks[("gpu", "NVML")]["status"] == "warn"


def test_read_only_store_fails_the_writable_check(cli, db_url: str, tmp_path) -> None:
    from llmvirt.store import database

    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    path = database.sqlite_path(db_url)
    assert path is not None
    subprocess.run(["chattr", "+i", str(path)], check=True)  # read-only even for root
    try:
        code, checks = _checks(cli)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert code == 1 and checks[("store", "writable")]["status"] == "fail"


def test_unattended_runs_tells_an_installed_timer_from_an_enabled_one(tmp_path: Path) -> None:
    """The Debian package installs the timer disabled: doctor says how to enable it; once linked, ok."""
    from llmvirt.doctor import OK, WARN, unattended_check

    wants = tmp_path / "etc" / "timers.target.wants" / "llmvirt-rebalance.timer"
    packaged = tmp_path / "lib" / "llmvirt-rebalance.timer"
    nothing = unattended_check((wants,), packaged)
    assert nothing.status == WARN and "cron print" in nothing.fix
    packaged.parent.mkdir(parents=True)
    packaged.write_text("[Timer]\n")
    disabled = unattended_check((wants,), packaged)
    assert disabled.status == WARN and "systemctl enable --now llmvirt-rebalance.timer" in disabled.fix
    wants.parent.mkdir(parents=True)
    wants.symlink_to(packaged)
    assert unattended_check((wants,), packaged).status == OK
