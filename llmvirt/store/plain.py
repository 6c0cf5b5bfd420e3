"""The store's hot path in plain, portable SQL: the reads and the write every light command makes.

``hosts list``, ``status`` and ``scan`` run from cron and by hand many times a day; importing
SQLAlchemy alone costs them 0.2-0.3 s on a small machine before any query (issue 18). The queries they
make are written here once, as standard SQL with ``:name`` parameters that both SQLite and PostgreSQL
run, over either a stdlib :mod:`sqlite3` connection (:class:`SqliteFile`: no SQLAlchemy import) or a
SQLAlchemy engine (:class:`ViaEngine`: PostgreSQL, in-memory databases, and every caller that already
holds an engine). The schema stays SQLAlchemy's and Alembic's; a SQLite file is opened here only once it
is at the newest revision (:func:`llmvirt.store.opening.open_store`), so nothing here creates or
migrates anything.

Values come back as the driver gives them (a SQLite file: text for times and JSON, 0/1 for booleans;
PostgreSQL: datetime, dict, bool); :func:`as_time` and :func:`as_json` read both, ``bool()`` the flags.
No SQL is built from input: statements are constants, and :func:`expand` adds one placeholder per value of
an IN list.
"""

from __future__ import annotations

import json
import sqlite3
from collections import namedtuple
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmvirt.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy import Engine

BUSY_TIMEOUT_S = 30  #: how long a writer waits for another process's transaction
SQLITE_PRAGMAS = (f"busy_timeout = {BUSY_TIMEOUT_S * 1000}", "journal_mode = WAL", "synchronous = NORMAL",
                  "foreign_keys = ON")  #: every connection to a SQLite store, through either driver
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  #: how SQLAlchemy stores a DateTime in SQLite (text that sorts by time)


class Conn(Protocol):
    """One transaction's connection: rows with attribute access, parameters by name."""

    dialect: str  #: ``sqlite`` or ``postgresql``

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Run a query; its rows as named tuples."""

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement; the number of rows it changed."""

    def run_many(self, sql: str, rows: Sequence[Mapping[str, Any]], typed: Sequence[str] = ()) -> None:
        """Run a statement once per row of parameters. Only the ``typed`` columns (times, JSON) are converted for
        the driver; the others go as they are (a fleet's scan is 100,000 rows)."""

    def driver(self) -> Any:
        """The DB-API connection underneath (PostgreSQL's COPY)."""


@lru_cache(maxsize=256)
def _row_type(names: tuple[str, ...]) -> type:
    return namedtuple("Row", names)  # noqa: PYI024 - a row type per column list, built at run time


def _named(cur: Any) -> list[Any]:
    row = _row_type(tuple(d[0] for d in cur.description))
    return [row._make(r) for r in cur.fetchall()]


def _sqlite_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.strftime(TIME_FORMAT)
    if isinstance(v, dict | list):
        return json.dumps(v)
    return v


def _server_value(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, dict | list) else v


def _prepared(rows: Sequence[Mapping[str, Any]], typed: Sequence[str], convert: Any) -> Iterator[Mapping[str, Any]]:
    if not typed:
        yield from rows
        return
    for r in rows:
        r = dict(r)
        for k in typed:
            r[k] = convert(r[k])
        yield r


class _SqliteConn:
    dialect = "sqlite"

    def __init__(self, con: sqlite3.Connection) -> None:
        self._con = con

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        cur = self._con.execute(sql, {k: _sqlite_value(v) for k, v in (params or {}).items()})
        return _named(cur)

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        return self._con.execute(sql, {k: _sqlite_value(v) for k, v in (params or {}).items()}).rowcount

    def run_many(self, sql: str, rows: Sequence[Mapping[str, Any]], typed: Sequence[str] = ()) -> None:
        self._con.executemany(sql, _prepared(rows, typed, _sqlite_value))

    def driver(self) -> Any:
        return self._con


class _EngineConn:
    def __init__(self, conn: Any) -> None:
        from sqlalchemy import text

        self._conn, self._text = conn, text
        self.dialect = conn.dialect.name

    def _params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        return {k: self._convert(v) for k, v in (params or {}).items()}

    def _convert(self, v: Any) -> Any:
        # text() has no column types: store times and JSON as SQLAlchemy's types do
        return _sqlite_value(v) if self.dialect == "sqlite" else _server_value(v)

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        res = self._conn.execute(self._text(sql), self._params(params))
        row = _row_type(tuple(res.keys()))
        return [row._make(r) for r in res.all()]

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        return self._conn.execute(self._text(sql), self._params(params)).rowcount

    def run_many(self, sql: str, rows: Sequence[Mapping[str, Any]], typed: Sequence[str] = ()) -> None:
        if not rows:
            return
        if self.dialect == "sqlite":  # the driver's own executemany, in this transaction: a fleet's rows, fast
            self.driver().executemany(sql, _prepared(rows, typed, self._convert))
        else:
            self._conn.execute(self._text(sql), list(_prepared(rows, typed, self._convert)))

    def driver(self) -> Any:
        return self._conn.connection.driver_connection


@dataclass(frozen=True)
class SqliteFile:
    """A SQLite store file at the newest schema revision, opened with the stdlib driver."""

    path: Path

    @contextmanager
    def begin(self) -> Iterator[Conn]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        try:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                for pragma in SQLITE_PRAGMAS:
                    con.execute(f"PRAGMA {pragma}")
                con.execute("BEGIN")
                try:
                    yield _SqliteConn(con)
                except BaseException:
                    con.rollback()
                    raise
                con.commit()
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.path}: {exc}") from None


@dataclass(frozen=True)
class ViaEngine:
    """Any store SQLAlchemy opened (PostgreSQL, an in-memory SQLite, a caller's engine)."""

    engine: Engine

    @contextmanager
    def begin(self) -> Iterator[Conn]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        from sqlalchemy.exc import OperationalError

        try:
            with self.engine.begin() as conn:
                yield _EngineConn(conn)
        except OperationalError as exc:
            raise StoreError(f"database {self.engine.url.render_as_string()}: {exc.orig}") from None


def begin(store: Any) -> Any:
    """A transaction on ``store``: a :class:`SqliteFile`, a :class:`ViaEngine` or a SQLAlchemy engine."""
    if isinstance(store, SqliteFile | ViaEngine):
        return store.begin()
    return ViaEngine(store).begin()


def expand(sql: str, **lists: Iterable[Any]) -> tuple[str, dict[str, Any]]:
    """Expand each ``:name*`` of a constant statement into ``:name_0, :name_1, ...``, one placeholder per value
    of ``lists[name]`` (SQLAlchemy's "expanding" IN parameters); the values never enter the SQL."""
    params: dict[str, Any] = {}
    for name, values in lists.items():
        vals = list(values)
        keys = [f"{name}_{i}" for i in range(len(vals))]
        params.update(zip(keys, vals, strict=True))
        sql = sql.replace(f":{name}*", ", ".join(":" + k for k in keys) or "NULL")
    return sql, params


def as_time(v: Any) -> datetime | None:
    """A stored time as a naive UTC datetime (SQLite text or PostgreSQL's timestamp)."""
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromisoformat(v)


def as_json(v: Any) -> Any:
    """A stored JSON value (SQLite text or PostgreSQL's decoded value)."""
    return json.loads(v) if isinstance(v, str | bytes) else v
