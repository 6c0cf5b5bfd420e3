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
    """SQLite: an immutable file. PostgreSQL: a database in read-only mode (the write probe is refused)."""
    from llmvirt.store import database

    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    path = database.sqlite_path(db_url)
    if path is None:
        _read_only_server_database(db_url)
        code, checks = _checks(cli)
        assert "read-only" in checks[("store", "writable")]["detail"]
    else:
        subprocess.run(["chattr", "+i", str(path)], check=True)  # read-only even for root
        try:
            code, checks = _checks(cli)
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    assert code == 1 and checks[("store", "writable")]["status"] == "fail"


def _read_only_server_database(db_url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    engine = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:  # the name is the fixture's own counter, quoted as an identifier
        conn.execute(text(f'ALTER DATABASE "{url.database}" SET default_transaction_read_only = on'))
    engine.dispose()


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


_NODE = """<node>
  <cpu><mhz>2000</mhz><model>X</model><active>4</active><nodes>1</nodes><sockets>1</sockets><cores>4</cores>
       <threads>1</threads></cpu>
  <memory>8388608</memory>
  {domain}
  {pools}
</node>"""
_GUEST = """<domain type='test'><name>g1</name><memory>262144</memory><vcpu>1</vcpu><os><type>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><source file='/nfs/images/g1.qcow2'/><target dev='vda'/></disk>
    <disk type='file' device='disk'><source file='/local/images/g1-data.qcow2'/><target dev='vdb'/></disk>
    <disk type='file' device='cdrom'><source file='/iso/install.iso'/><target dev='hdc'/><readonly/></disk>
    <disk type='network' device='disk'><source protocol='rbd' name='rbd/g1-scratch'/><target dev='vdc'/></disk>
  </devices></domain>"""


def _pool(kind: str, name: str, directory: str, volume: str | None) -> str:
    vol = "" if volume is None else (f"<volume type='file'><name>{volume}</name><key>{directory}/{volume}</key>"
                                     f"<target><path>{directory}/{volume}</path></target>"
                                     "<capacity>1073741824</capacity></volume>")
    src = "<source><host name='nas'/><dir path='/export'/></source>" if kind == "netfs" else ""
    return f"<pool type='{kind}'><name>{name}</name>{src}<target><path>{directory}</path></target>{vol}</pool>"


def test_shared_storage_names_the_disks_another_host_cannot_see(cli, tmp_path: Path) -> None:
    """A disk in a network-backed pool, a CD-ROM and a network disk need nothing; a disk in a local pool
    that the other host does not have would need copying, which llmvirt never does."""
    src = tmp_path / "src.xml"
    src.write_text(_NODE.format(domain=_GUEST, pools=_pool("netfs", "shared", "/nfs/images", "g1.qcow2")
                                + _pool("dir", "local", "/local/images", "g1-data.qcow2")))
    dst = tmp_path / "dst.xml"
    dst.write_text(_NODE.format(domain="", pools=_pool("dir", "local", "/local/images", None)))
    cli("hosts", "add", "src", f"test://{src}")
    cli("hosts", "add", "dst", f"test://{dst}")
    _, checks = _checks(cli)
    storage = checks[("cluster", "shared storage")]
    assert storage["status"] == "warn", storage
    assert "g1 on src: /local/images/g1-data.qcow2" in storage["detail"]
    assert "g1.qcow2," not in storage["detail"] and "install.iso" not in storage["detail"]
    assert "network-backed storage pool" in storage["fix"]

    dst.write_text(_NODE.format(domain="", pools=_pool("dir", "local", "/local/images", "g1-data.qcow2")))
    _, checks = _checks(cli)  # the same path in a pool on the other host: both disks travel
    assert checks[("cluster", "shared storage")]["status"] == "ok", checks[("cluster", "shared storage")]
    assert "(2)" in checks[("cluster", "shared storage")]["detail"]


def test_migration_address_resolves_or_is_configured() -> None:
    from llmvirt.doctor import OK, WARN, _address_check

    remote = "qemu+ssh://root@kvm9/system"
    assert _address_check("h", remote, "localhost", None).status == OK
    bad = _address_check("h", remote, "no-such-host.invalid", None)
    assert bad.status == WARN and "does not resolve" in bad.detail and "migrate_uri" in bad.fix
    assert _address_check("h", remote, "no-such-host.invalid", "tcp://10.0.0.9").status == OK
    assert _address_check("h", "qemu:///system", "no-such-host.invalid", None).status == OK  # local: 127.0.0.1
