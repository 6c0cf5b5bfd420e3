"""Opening the store for the hot path: a SQLite file at the newest schema through the stdlib driver (no
SQLAlchemy import), anything else through :func:`llmvirt.store.database.open_engine` (which creates files
with mode 0600, upgrades schemas and reports a broken store in one line)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmvirt.store.location import SCHEMA_HEAD, resolve_url, sqlite_path
from llmvirt.store.plain import SqliteFile, ViaEngine

if TYPE_CHECKING:
    from sqlalchemy import Engine


def _revision(path: Path) -> str | None:
    """The schema revision of an existing, writable SQLite store; None when it cannot be read here (then the
    SQLAlchemy path opens it, upgrades it or says clearly what is wrong)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def open_store(url: str | None = None) -> SqliteFile | ViaEngine:
    """The store for the hot path: a SQLite file already at :data:`SCHEMA_HEAD` opens without SQLAlchemy;
    a new, older or unreadable file, and every other database, go through ``open_engine`` (created with
    mode 0600, upgraded, or refused with one clear line)."""
    resolved = resolve_url(url)
    path = sqlite_path(resolved)
    if path is not None and path.is_file() and os.access(path, os.R_OK | os.W_OK) and _revision(path) == SCHEMA_HEAD:
        return SqliteFile(path)
    from llmvirt.store.database import open_engine

    engine = open_engine(resolved)
    return SqliteFile(path) if path is not None and os.access(path, os.W_OK) else ViaEngine(engine)


def engine_of(store: Any) -> Engine:
    """The SQLAlchemy engine behind ``store`` (opened now for a :class:`SqliteFile`): for the parts of the store
    that are not on the hot path."""
    if isinstance(store, ViaEngine):
        return store.engine
    if isinstance(store, SqliteFile):
        from llmvirt.store.database import open_engine

        return open_engine(f"sqlite:///{store.path}", migrate=False)
    return store
