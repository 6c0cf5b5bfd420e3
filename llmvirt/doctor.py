"""``llmvirt doctor``: check a set-up before trusting it, one line per check with a fix hint.

Per registered host: reachable and authenticated; libvirt and hypervisor versions; KVM or only
TCG; guests without balloon statistics (no virtio_balloon driver, so balloon plans cannot see their
use); NVML where the host has NVIDIA GPUs and is local. Across hosts: CPU models that differ (live
migration needs a CPU model every host offers) and hostnames that repeat (libvirt derives the
migration address from the destination's hostname), guests whose disks another host cannot see
(llmvirt migrates memory, never disks) and hostnames that do not resolve
(:mod:`llmvirt.migration_readiness`). Globally: the store is writable and at this
llmvirt's schema, and unattended runs are installed (cron or systemd).

A check is ``ok``, ``warn`` (works, but an operator should know) or ``fail`` (llmvirt cannot do its
job there); ``doctor`` exits 1 when any check fails.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmvirt.errors import HostError

OK, WARN, FAIL = "ok", "warn", "fail"
UNIT_PATHS = (Path("/etc/systemd/system/timers.target.wants/llmvirt-rebalance.timer"),  # the timer, enabled
              Path("/etc/cron.d/llmvirt"))
PACKAGED_TIMER = Path("/lib/systemd/system/llmvirt-rebalance.timer")  #: the Debian package's, installed disabled


@dataclass
class Check:
    """One finding."""

    scope: str  #: a host's name, "cluster" or "store"
    check: str  #: what was checked
    status: str  #: ok, warn or fail
    detail: str  #: what was found
    fix: str = ""  #: what to do about it (warn and fail)


def _kvm(caps_xml: str) -> bool:
    root = ET.fromstring(caps_xml)
    return any(d.get("type") == "kvm" for d in root.iter("domain"))


def _volumes(conn: Any) -> set[str]:
    """Every volume path in the host's active storage pools."""
    import libvirt

    paths: set[str] = set()
    try:
        pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
    except libvirt.libvirtError:
        return paths  # a daemon without a storage driver: no pool sees anything
    for pool in pools:
        try:
            paths |= {v.path() for v in pool.listAllVolumes()}
        except libvirt.libvirtError:
            continue  # a pool that went away or cannot list: its volumes count as unseen
    return paths


def _probe(name: str, uri: str) -> tuple[Any, bool, dict[str, Any]]:
    """The host as a scan reads it, whether it offers KVM, and its guests' disks and pool volumes, over one
    connection."""
    import libvirt

    from llmvirt.errors import translate_libvirt
    from llmvirt.migration_readiness import guest_disks
    from llmvirt.observe.inventory import read_host

    with translate_libvirt(f"host {name} ({uri})", connecting=True):
        conn = libvirt.open(uri)
    try:
        with translate_libvirt(f"host {name}"):
            storage = {"disks": guest_disks(conn), "volumes": _volumes(conn)}
            return read_host(conn, name, uri), _kvm(conn.getCapabilities()), storage
    finally:
        conn.close()


def host_checks(name: str, uri: str, timeout: float = 10.0,
                migrate_uri: str | None = None) -> tuple[list[Check], dict[str, Any]]:
    """The checks of one host, and what the cluster-wide checks need (CPU model, hostname, disks, volumes)."""
    from llmvirt.observe.inventory import is_local_uri, run_bounded

    found = run_bounded([(name, lambda: _probe(name, uri))], 1, timeout)[name]
    if isinstance(found, BaseException):
        why = str(found) if isinstance(found, HostError) else f"{type(found).__name__}: {found}"
        return [Check(name, "reachable", FAIL, why, "check the URI, that libvirtd runs there, and libvirt's "
                      "authentication (qemu+ssh: the SSH key; qemu+tls: the certificates)")], {}
    host, kvm, storage = found
    out = [Check(name, "reachable", OK, f"{uri}, hostname {host.hostname or '?'}"),
           Check(name, "versions", OK, f"libvirt {host.libvirt_version}, {host.hypervisor}")]
    out.append(Check(name, "virtualisation", OK, "KVM available") if kvm else
               Check(name, "virtualisation", WARN, "no KVM domain type: guests run under TCG (emulation, slow)",
                     "load kvm_intel or kvm_amd and check /dev/kvm; nested hosts need nested virtualisation"))
    blind = [v.name for v in host.vms if v.running and v.balloon.available_mib is None]
    out.append(Check(name, "balloon statistics", OK, "every running guest reports its memory use") if not blind
               else Check(name, "balloon statistics", WARN, f"no guest memory statistics from {', '.join(blind)}",
                          "give those guests a virtio_balloon driver and <memballoon><stats period='10'/>; "
                          "balloon plans leave them alone until then"))
    if host.gpus and is_local_uri(uri):
        has_nvml = any(g.nvml is not None for g in host.gpus)
        nvidia = any(g.vendor_id == "0x10de" for g in host.gpus)
        if nvidia and not has_nvml:
            out.append(Check(name, "NVML", WARN, "NVIDIA GPUs but no NVML: GPU memory and use are not seen",
                             "install the NVIDIA driver's NVML (nvidia-ml-py is in llmvirt's dependencies)"))
    out.append(_address_check(name, uri, host.hostname, migrate_uri))
    return out, {"cpu_model": host.cpu_model, "hostname": host.hostname, **storage}


def _address_check(name: str, uri: str, hostname: str | None, migrate_uri: str | None) -> Check:
    from llmvirt.migration_readiness import resolves
    from llmvirt.observe.inventory import is_local_uri

    if migrate_uri:
        return Check(name, "migration address", OK, f"[apply] migrate_uri = {migrate_uri}")
    if is_local_uri(uri):
        return Check(name, "migration address", OK, "a local host: migrations go over 127.0.0.1")
    addr = resolves(hostname or "")
    if addr is None:
        return Check(name, "migration address", WARN, f"its hostname {hostname!r} does not resolve from here",
                     "libvirt sends migrations to the destination's hostname: make it resolve on every host, "
                     "or set [apply] migrate_uri")
    return Check(name, "migration address", OK, f"hostname {hostname} resolves to {addr}")


def _storage_check(facts: dict[str, dict[str, Any]]) -> Check:
    from llmvirt.migration_readiness import stranded

    answered = {h: f for h, f in facts.items() if f}
    bad = stranded({h: f["disks"] for h, f in answered.items()}, lambda h, path: path in answered[h]["volumes"])
    if not bad:
        n = sum(len(f["disks"]) for f in answered.values())
        return Check("cluster", "shared storage", OK, f"every running guest's disks ({n}) are on storage every "
                     "host sees" if n else "no running guest has a disk on host storage")
    what = "; ".join(f"{vm} on {h}: {', '.join(paths)}" for h, vms in bad.items() for vm, paths in vms.items())
    return Check("cluster", "shared storage", WARN, f"disks another host cannot see: {what}",
                 "llmvirt migrates memory, never disks: put them in a network-backed storage pool (NFS, Ceph) "
                 "defined on every host; until then those guests cannot live-migrate")


def cluster_checks(facts: dict[str, dict[str, Any]]) -> list[Check]:
    """CPU models, hostnames and shared storage across the hosts that answered."""
    out = []
    models = {f["cpu_model"] for f in facts.values() if f}
    if len(models) > 1:
        out.append(Check("cluster", "CPU models", WARN, f"hosts differ: {', '.join(sorted(models))}",
                         "give guests a CPU model every host offers (custom/host-model with a common baseline), "
                         "or live migrations between these hosts may be refused"))
    elif models:
        out.append(Check("cluster", "CPU models", OK, f"every host: {models.pop()}"))
    names: dict[str, list[str]] = {}
    for host, f in facts.items():
        if f:
            names.setdefault(f["hostname"], []).append(host)
    dup = {h: hs for h, hs in names.items() if len(hs) > 1}
    if dup:
        out.append(Check("cluster", "hostnames", WARN, "; ".join(f"{', '.join(hs)} all say {h!r}"
                                                                for h, hs in dup.items()),
                         "libvirt derives the migration address from the hostname: set [apply] migrate_uri or "
                         "give each host its own name"))
    if any(facts.values()):
        out.append(_storage_check(facts))
    return out


def store_checks(engine_factory: Any, db_path: Path | None) -> list[Check]:
    """The store opens, is writable and is at this llmvirt's schema; unattended runs are installed."""
    from llmvirt.errors import StoreError
    from llmvirt.store import database

    out = []
    try:
        engine = engine_factory()
        rev = database.current_revision(engine)
        out.append(Check("store", "schema", OK, f"revision {rev}") if rev == database.SCHEMA_HEAD else
                   Check("store", "schema", FAIL, f"revision {rev}, this llmvirt needs {database.SCHEMA_HEAD}",
                         "run any llmvirt command against it with write access to upgrade it"))
    except StoreError as exc:
        out.append(Check("store", "opens", FAIL, str(exc), "check the path, its permissions and the disk"))
        return out
    if db_path is not None:
        writable = os.access(db_path, os.W_OK) and os.access(db_path.parent, os.W_OK)
        out.append(Check("store", "writable", OK, str(db_path)) if writable else
                   Check("store", "writable", FAIL, f"{db_path} is read-only",
                         "scans and plans cannot be recorded: fix the file's or directory's permissions"))
    else:
        out.append(_server_writable(engine))
    out.append(unattended_check())
    return out


def _server_writable(engine: Any) -> Check:
    """A database server (PostgreSQL): one write in a transaction that is rolled back."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn, conn.begin() as tx:
            conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
            tx.rollback()
    except DBAPIError as exc:
        why = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        return Check("store", "writable", FAIL, f"{where}: {why}",
                     "scans and plans cannot be recorded: grant the role UPDATE/INSERT on llmvirt's tables, "
                     "or take the database out of read-only mode")
    return Check("store", "writable", OK, where)


def unattended_check(units: tuple[Path, ...] = UNIT_PATHS, packaged: Path = PACKAGED_TIMER) -> Check:
    """Whether scan-then-rebalance runs unattended: an enabled timer or a cron file."""
    installed = [str(p) for p in units if p.exists()]
    if installed:
        return Check("store", "unattended runs", OK, ", ".join(installed))
    if packaged.exists():
        return Check("store", "unattended runs", WARN, f"{packaged} is installed but not enabled",
                     f"after a dry run you agree with: systemctl enable --now {packaged.name}")
    return Check("store", "unattended runs", WARN, "no cron file or enabled systemd timer found",
                 "`llmvirt cron print` writes the crontab line and the systemd units")


def all_checks(engine_factory: Any, db_path: Path | None, timeout: float = 10.0,
               migrate_uri: str | None = None) -> list[Check]:
    """The store, every registered host and the cluster, in that order: what ``llmvirt doctor`` prints
    (hosts are skipped when the store does not open)."""
    from llmvirt.store import registry

    checks = store_checks(engine_factory, db_path)
    engine = engine_factory() if not any(c.status == FAIL and c.check == "opens" for c in checks) else None
    facts: dict[str, dict[str, Any]] = {}
    for h in registry.list_hosts(engine) if engine is not None else []:
        found, facts[h.name] = host_checks(h.name, h.uri, timeout, migrate_uri)
        checks += found
    return checks + cluster_checks(facts)


def as_json(checks: list[Check]) -> dict[str, Any]:
    """The ``doctor --json`` document."""
    return {"checks": [asdict(c) for c in checks], "failed": sum(c.status == FAIL for c in checks),
            "warnings": sum(c.status == WARN for c in checks)}
