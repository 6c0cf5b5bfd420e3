"""Where the store lives.

The default database is ``$XDG_DATA_HOME/llmvirt/llmvirt.db`` (for root:
``/root/.local/share/llmvirt/llmvirt.db``); ``--db URL`` or ``LLMVIRT_DB``
select any SQLAlchemy URL instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

from llmvirt.errors import StoreError

DB_ENV = "LLMVIRT_DB"
SCHEMA_HEAD = "0005"  #: the newest migration; a test holds it equal to Alembic's head (Alembic loads only to upgrade)


def default_db_path() -> Path:
    """The XDG data location of the default database."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "llmvirt" / "llmvirt.db"


def resolve_url(url: str | None) -> str:
    """The database URL: explicit, else ``LLMVIRT_DB``, else the default SQLite file."""
    chosen = url or os.environ.get(DB_ENV)
    if chosen:
        if "://" not in chosen:  # a bare path is accepted as SQLite
            return f"sqlite:///{Path(chosen).expanduser().resolve()}"
        return chosen
    return f"sqlite:///{default_db_path()}"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases or an in-memory one), as SQLAlchemy reads it:
    ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite+pysqlite:///...``, a query string ignored."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or any(c.isspace() for c in scheme):
        raise StoreError(f"invalid database URL {url!r}")
    if scheme.split("+")[0] != "sqlite" or not rest.startswith("/"):
        return None
    database = unquote(rest[1:].partition("?")[0])
    return None if database in ("", ":memory:") else Path(database)
