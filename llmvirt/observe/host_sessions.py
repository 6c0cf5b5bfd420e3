"""Connections a long-running controller keeps to its hosts between scans, and the domain definitions it
has already parsed.

``llmvirt scan`` from cron opens each host, reads it and closes it. A controller that scans every few
minutes need not: it keeps one libvirt connection per host (over ``qemu+ssh`` an opening costs an SSH
handshake; on the test driver, parsing the host's file) and remembers each domain definition it parsed,
keyed by a digest of the XML, so an unchanged VM is not parsed again. A kept connection that libvirt
reports dead is opened anew; one that fails mid-read is dropped and the host is read once more on a
fresh one (libvirtd restarted). Only the definitions seen in a host's latest scan are remembered.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from llmvirt.errors import quiet_libvirt

if TYPE_CHECKING:
    import libvirt

P = TypeVar("P")  #: what a parser returns


class HostSession:
    """One host's kept connection and the definitions parsed in its latest scans."""

    def __init__(self, conn: libvirt.virConnect, remember: bool = True) -> None:
        self.conn = conn
        self.remember = remember  #: False: parse every definition every scan (the benchmark's comparison)
        self._seen: dict[tuple[str, bytes], object] = {}
        self._now: dict[tuple[str, bytes], object] = {}

    def parsed(self, kind: str, xml: str, parse: Callable[[str], P]) -> P:
        """``parse(xml)``, or what it returned for the same ``kind`` and XML in this or the previous scan."""
        if not self.remember:
            return parse(xml)
        key = (kind, hashlib.blake2b(xml.encode(), digest_size=16).digest())
        hit = self._now.get(key)
        if hit is None:
            hit = self._seen.get(key)
            if hit is None:
                hit = parse(xml)
            self._now[key] = hit
        return hit  # type: ignore[return-value]

    def scan_done(self) -> None:
        """Forget the definitions this scan did not see (VMs gone or changed)."""
        self._seen, self._now = self._now, {}

    @property
    def remembered(self) -> int:
        """How many parsed definitions are kept for the next scan."""
        return len(self._seen)


class HostSessions:
    """Kept connections by URI, shared by the scan's worker threads."""

    def __init__(self, remember_definitions: bool = True) -> None:
        self.remember_definitions = remember_definitions
        self._by_uri: dict[str, HostSession] = {}
        self._lock = threading.Lock()

    def get(self, uri: str) -> tuple[HostSession, bool]:
        """The URI's session and whether it was just opened; libvirt errors on opening escape."""
        lv = quiet_libvirt()
        with self._lock:
            session = self._by_uri.get(uri)
        if session is not None:
            try:
                if session.conn.isAlive():
                    return session, False
            except lv.libvirtError:
                pass
            self.drop(uri)
        session = HostSession(lv.open(uri), self.remember_definitions)
        with self._lock:
            self._by_uri[uri] = session
        return session, True

    def drop(self, uri: str) -> None:
        """Forget the URI's connection (closed when no scan thread still holds it)."""
        with self._lock:
            self._by_uri.pop(uri, None)

    def close(self) -> None:
        """Close every kept connection."""
        lv = quiet_libvirt()
        with self._lock:
            sessions, self._by_uri = list(self._by_uri.values()), {}
        for session in sessions:
            try:
                session.conn.close()
            except lv.libvirtError:
                pass

    def __len__(self) -> int:
        return len(self._by_uri)
