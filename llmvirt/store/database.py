"""Opening the store: where it lives, file mode 0600, WAL, and automatic schema upgrade.

Where it lives: :mod:`llmvirt.store.location`. Two llmvirt processes may use one SQLite
file at once: WAL lets readers run beside a writer, ``busy_timeout`` makes a
writer wait for another, and schema upgrades are serialised by a lock file.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

from llmvirt.errors import StoreError
from llmvirt.store.location import (  # noqa: F401 - re-exported: where the store lives
    DB_ENV,
    SCHEMA_HEAD,
    default_db_path,
    resolve_url,
    sqlite_path,
)
from llmvirt.store.plain import BUSY_TIMEOUT_S, SQLITE_PRAGMAS


def _create_private(path: Path) -> None:
    """Create the database file with mode 0600 before SQLite opens it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"database path {path} is not writable: {exc.strerror}") from None


def _check_sqlite_file(path: Path) -> None:
    """Refuse an unreadable file. The file is never opened here: closing any descriptor of a database
    file drops every POSIX lock this process's SQLite connections hold on it, after which another
    process may checkpoint and remove the WAL under them (stale reads, then "file is not a
    database"). SQLite itself reports a file that is not a database (see :func:`open_engine`)."""
    if path.exists() and not os.access(path, os.R_OK):
        raise StoreError(f"database {path} is not readable")


def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    cur = dbapi_conn.cursor()
    for pragma in SQLITE_PRAGMAS:
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def alembic_config():  # noqa: ANN201 - alembic.config.Config, imported only when needed
    """An Alembic config pointing at the installed migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("llmvirt_migrations")))
    return cfg


@contextmanager
def _upgrade_lock(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def head_revision() -> str:
    """The newest schema revision this llmvirt knows (read from the migrations by Alembic)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None when empty): Alembic's version table, read directly."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, path: Path | None = None) -> None:
    """Bring the schema to the newest revision (a no-op when already there). Concurrent upgraders wait for
    each other: a file lock beside a SQLite store, an advisory lock inside PostgreSQL's transaction."""
    with _upgrade_lock(path):
        if current_revision(engine) == SCHEMA_HEAD:
            return
        from alembic import command

        cfg = alembic_config()
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                from llmvirt.store.server_lock import lock_key

                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key("llmvirt schema upgrade")})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


def open_engine(url: str | None = None, migrate: bool = True) -> Engine:
    """Open (creating if needed, mode 0600) the store and upgrade its schema.

    Raises :class:`StoreError` with one clear line when the database cannot be
    created, read or written, or is not a database at all.
    """
    resolved = resolve_url(url)
    path = sqlite_path(resolved)
    if path is not None:
        _check_sqlite_file(path)
        old_umask = os.umask(0o077)  # WAL and SHM files follow the database's mode too
        try:
            _create_private(path)
        finally:
            os.umask(old_umask)
    try:
        engine = create_engine(resolved, connect_args={"timeout": BUSY_TIMEOUT_S} if path else {})
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot use database {resolved!r}: {exc}") from None
    if path is not None:
        event.listen(engine, "connect", _on_connect)
    try:
        if migrate:
            upgrade(engine, path)
        else:
            current_revision(engine)
    except OperationalError as exc:
        raise StoreError(f"cannot open database {path or resolved}: {exc.orig}") from None
    except DatabaseError as exc:
        raise StoreError(f"database {path or resolved} is corrupted ({exc.orig}); "
                         "it was left untouched") from None
    return engine
