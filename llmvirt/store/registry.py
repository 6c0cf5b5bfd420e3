"""The host registry: which libvirt hosts llmvirt manages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from llmvirt.errors import UsageError
from llmvirt.store.schema import HostRow

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


def list_hosts(engine: Engine) -> list[RegisteredHost]:
    """Every registered host, in registration order."""
    with Session(engine) as s:
        rows = s.scalars(select(HostRow).order_by(HostRow.id)).all()
        return [RegisteredHost(r.name, r.uri, r.maintenance, r.source) for r in rows]


def get_host(engine: Engine, name: str) -> RegisteredHost:
    """The host called ``name``; UsageError if unknown."""
    with Session(engine) as s:
        row = s.scalars(select(HostRow).where(HostRow.name == name)).first()
        if row is None:
            raise UsageError(f"unknown host {name!r} (see `llmvirt hosts list`)")
        return RegisteredHost(row.name, row.uri, row.maintenance, row.source)


def add_host(engine: Engine, host: RegisteredHost) -> None:
    """Register a host; UsageError on a bad name or URI or a duplicate name."""
    validate_name(host.name)
    validate_uri(host.uri)
    with Session(engine) as s, s.begin():
        if s.scalars(select(HostRow.id).where(HostRow.name == host.name)).first() is not None:
            raise UsageError(f"host {host.name!r} is already registered")
        s.add(HostRow(name=host.name, uri=host.uri, maintenance=host.maintenance,
                      source=host.source, added_at=_now()))


def remove_host(engine: Engine, name: str) -> None:
    """Forget a host and its snapshot history; UsageError if unknown."""
    with Session(engine) as s, s.begin():
        if s.execute(delete(HostRow).where(HostRow.name == name)).rowcount == 0:
            raise UsageError(f"unknown host {name!r} (see `llmvirt hosts list`)")


def set_maintenance(engine: Engine, name: str, on: bool) -> None:
    """Put a host in or out of maintenance; UsageError if unknown."""
    with Session(engine) as s, s.begin():
        res = s.execute(update(HostRow).where(HostRow.name == name).values(maintenance=on))
        if res.rowcount == 0:
            raise UsageError(f"unknown host {name!r} (see `llmvirt hosts list`)")


def sync_config_hosts(engine: Engine, hosts: list[RegisteredHost]) -> None:
    """Make config-file hosts registered: add new ones and follow URI changes.

    The file's ``maintenance`` is the initial flag only; ``hosts maintenance``
    changes it from then on.
    A config host whose name is already registered from the CLI with another
    URI is a conflict (UsageError), never a silent overwrite.
    """
    with Session(engine) as s, s.begin():
        for h in hosts:
            validate_name(h.name)
            validate_uri(h.uri)
            row = s.scalars(select(HostRow).where(HostRow.name == h.name)).first()
            if row is None:
                s.add(HostRow(name=h.name, uri=h.uri, maintenance=h.maintenance, source="config",
                              added_at=_now()))
            elif row.source == "config":
                row.uri = h.uri
            elif row.uri != h.uri:
                raise UsageError(f"host {h.name!r} in the config file conflicts with the registered "
                                 f"host of that name ({row.uri})")
