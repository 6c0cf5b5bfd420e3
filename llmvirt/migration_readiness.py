"""Can guests live-migrate between the registered hosts? Two checks ``llmvirt doctor`` runs.

- **Storage**: llmvirt live-migrates memory only, never disks. A running guest's disk must be on
  storage the destination sees: a network-backed storage pool on its host (netfs, rbd, iSCSI, ...),
  or the same path in a storage pool on every other host. A disk in a local pool (dir, fs, logical)
  or in no pool at all would need ``--copy-storage``, which llmvirt does not do. Network disks
  (``<disk type='network'>``), CD-ROMs, floppies and read-only or shareable disks need nothing.
- **Migration address**: libvirt sends a migration to the destination's hostname unless
  ``[apply] migrate_uri`` names an address. That hostname must resolve (checked from this controller;
  local hosts migrate over 127.0.0.1).
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: storage pool types whose volumes every host that defines the pool sees
SHARED_POOL_TYPES = frozenset({"netfs", "rbd", "gluster", "iscsi", "iscsi-direct", "sheepdog", "vstorage", "zfs"})


@dataclass(frozen=True)
class GuestDisk:
    """One disk of a running guest that lives on some host's storage."""

    vm: str
    path: str
    shared_pool: str | None  #: the network-backed pool holding it on its own host, if any


def _local_disk_paths(domain_xml: str) -> list[str]:
    root = ET.fromstring(domain_xml)
    paths = []
    for disk in root.iterfind("devices/disk"):
        if disk.get("device") in ("cdrom", "floppy") or disk.find("readonly") is not None \
                or disk.find("shareable") is not None:
            continue
        src = disk.find("source")
        kind = disk.get("type")
        path = None if src is None else src.get("file") if kind == "file" else src.get("dev") if kind == "block" \
            else None
        if path:
            paths.append(path)
    return paths


def pool_of(conn: Any, path: str) -> tuple[str, str] | None:
    """The (name, type) of the storage pool holding ``path`` on this connection's host, or None."""
    import libvirt

    try:
        pool = conn.storageVolLookupByPath(path).storagePoolLookupByVolume()
        return pool.name(), ET.fromstring(pool.XMLDesc(0)).get("type", "")
    except libvirt.libvirtError:
        return None


def guest_disks(conn: Any) -> list[GuestDisk]:
    """The host-storage disks of every running guest on this connection."""
    import libvirt

    out = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        for path in _local_disk_paths(dom.XMLDesc(0)):
            pool = pool_of(conn, path)
            out.append(GuestDisk(dom.name(), path, pool[0] if pool and pool[1] in SHARED_POOL_TYPES else None))
    return out


def stranded(disks: dict[str, list[GuestDisk]], sees: Callable[[str, str], bool]) -> dict[str, dict[str, list[str]]]:
    """Per source host, per guest, the disks some other host cannot see (``sees(host, path)``).
    Disks in a network-backed pool are shared by definition."""
    out: dict[str, dict[str, list[str]]] = {}
    for host, found in disks.items():
        others = [h for h in disks if h != host]
        for d in found:
            if d.shared_pool is None and not all(sees(o, d.path) for o in others):
                out.setdefault(host, {}).setdefault(d.vm, []).append(d.path)
    return out


def resolves(hostname: str, lookup: Callable[..., Any] = socket.getaddrinfo) -> str | None:
    """The first address ``hostname`` resolves to from here, or None."""
    try:
        return str(lookup(hostname, None)[0][4][0])
    except (OSError, IndexError, UnicodeError):
        return None
