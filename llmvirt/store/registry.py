"""The host registry: which libvirt hosts llmvirt manages.

Plain SQL (:mod:`llmvirt.store.plain`): every function takes an engine or a plain store, and ``hosts list``
reads the registry without importing SQLAlchemy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmvirt.errors import UsageError
from llmvirt.store.plain import begin

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9]*(\+(ssh|libssh|libssh2|tls|tcp|unix|ext))?$")


@dataclass(frozen=True)
class RegisteredHost:
    """A host as registered: name, URI, maintenance flag and where it came from."""

    name: str  #: unique name; the host's identity in llmvirt
    uri: str  #: libvirt connection URI
    maintenance: bool = False  #: no new VMs, drained by rebalance
    source: str = "cli"  #: ``cli`` (hosts add) or ``config`` (TOML file)


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid host name, else raise UsageError."""
    if not NAME_RE.match(name):
        raise UsageError(f"invalid host name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def validate_uri(uri: str) -> str:
    """Return ``uri`` if it looks like a libvirt URI (``driver[+transport]://[host]/path``)."""
    parts = urlsplit(uri)
    if "://" not in uri or not _SCHEME_RE.match(parts.scheme) or any(c.isspace() for c in uri):
        raise UsageError(f"malformed libvirt URI {uri!r}: expected driver[+transport]://[host]/path, "
                         "e.g. qemu:///system or qemu+ssh://root@kvm1/system")
    if parts.scheme == "test" and parts.path not in ("/default",):
        if not Path(parts.path).is_absolute() or not Path(parts.path).is_file():
            raise UsageError(f"test driver URI {uri!r} must name an existing absolute XML file "
                             "or /default")
    return uri


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


_UNKNOWN = "unknown host {!r} (see `llmvirt hosts list`)"
_COLUMNS = "SELECT name, uri, maintenance, source FROM hosts"


def _host(r: Any) -> RegisteredHost:
    return RegisteredHost(r.name, r.uri, bool(r.maintenance), r.source)


def list_hosts(store: Any) -> list[RegisteredHost]:
    """Every registered host, in registration order."""
    with begin(store) as c:
        return [_host(r) for r in c.rows(_COLUMNS + " ORDER BY id")]


def get_host(store: Any, name: str) -> RegisteredHost:
    """The host called ``name``; UsageError if unknown."""
    with begin(store) as c:
        rows = c.rows(_COLUMNS + " WHERE name = :name", {"name": name})
    if not rows:
        raise UsageError(_UNKNOWN.format(name))
    return _host(rows[0])


_INSERT = "INSERT INTO hosts (name, uri, maintenance, source, added_at) VALUES (:name, :uri, :m, :source, :t)"


def add_host(store: Any, host: RegisteredHost) -> None:
    """Register a host; UsageError on a bad name or URI or a duplicate name."""
    validate_name(host.name)
    validate_uri(host.uri)
    with begin(store) as c:
        if c.rows("SELECT id FROM hosts WHERE name = :name", {"name": host.name}):
            raise UsageError(f"host {host.name!r} is already registered")
        c.run(_INSERT, {"name": host.name, "uri": host.uri, "m": host.maintenance, "source": host.source,
                        "t": _now()})


def remove_host(store: Any, name: str) -> None:
    """Forget a host and its snapshot history; UsageError if unknown."""
    with begin(store) as c:
        if c.run("DELETE FROM hosts WHERE name = :name", {"name": name}) == 0:
            raise UsageError(_UNKNOWN.format(name))


def set_maintenance(store: Any, name: str, on: bool) -> None:
    """Put a host in or out of maintenance; UsageError if unknown."""
    with begin(store) as c:
        if c.run("UPDATE hosts SET maintenance = :m WHERE name = :name", {"m": on, "name": name}) == 0:
            raise UsageError(_UNKNOWN.format(name))


def config_in_sync(store: Any, hosts: list[RegisteredHost]) -> bool:
    """Whether every config-file host is registered from the file with its URI (nothing to sync)."""
    have = {h.name: h for h in list_hosts(store)}
    return all(h.name in have and have[h.name].source == "config" and have[h.name].uri == h.uri for h in hosts)


def sync_config_hosts(store: Any, hosts: list[RegisteredHost]) -> None:
    """Make config-file hosts registered: add new ones and follow URI changes.

    The file's ``maintenance`` is the initial flag only; ``hosts maintenance``
    changes it from then on.
    A config host whose name is already registered from the CLI with another
    URI is a conflict (UsageError), never a silent overwrite.
    """
    with begin(store) as c:
        for h in hosts:
            validate_name(h.name)
            validate_uri(h.uri)
            rows = c.rows("SELECT uri, source FROM hosts WHERE name = :name", {"name": h.name})
            if not rows:
                c.run(_INSERT, {"name": h.name, "uri": h.uri, "m": h.maintenance, "source": "config", "t": _now()})
            elif rows[0].source == "config":
                c.run("UPDATE hosts SET uri = :uri WHERE name = :name", {"uri": h.uri, "name": h.name})
            elif rows[0].uri != h.uri:
                raise UsageError(f"host {h.name!r} in the config file conflicts with the registered "
                                 f"host of that name ({rows[0].uri})")
