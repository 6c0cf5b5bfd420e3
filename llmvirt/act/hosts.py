"""Connections to registered hosts, opened on first use and shared by the executor's action threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import libvirt
from sqlalchemy import Engine

from llmvirt.errors import translate_libvirt
from llmvirt.store import registry


@dataclass
class Hosts:
    """Connections to registered hosts by name (safe to share between action threads)."""

    engine: Engine  #: the store holding the host registry
    _conns: dict[str, libvirt.virConnect] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def conn(self, name: str) -> libvirt.virConnect:
        """An open connection to host ``name``."""
        with self._lock:
            if name not in self._conns:
                host = registry.get_host(self.engine, name)
                with translate_libvirt(f"host {name} ({host.uri})", connecting=True):
                    self._conns[name] = libvirt.open(host.uri)
            return self._conns[name]

    def uri(self, name: str) -> str:
        """The host's libvirt URI."""
        return registry.get_host(self.engine, name).uri

    def maintenance(self, name: str) -> bool:
        """The host's maintenance flag as registered now."""
        return registry.get_host(self.engine, name).maintenance

    def close(self) -> None:
        """Close every connection."""
        for c in self._conns.values():
            try:
                c.close()
            except libvirt.libvirtError:
                pass
        self._conns = {}
