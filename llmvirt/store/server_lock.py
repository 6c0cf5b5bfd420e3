"""A lock held in the database server itself, for controllers on different machines that share one
PostgreSQL store: a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own.

The server releases it when that connection ends, so a controller that dies (even by SIGKILL) or loses
the database hands the lock on without anyone cleaning up. SQLite stores use a file lock instead
(:func:`llmvirt.act.executor.apply_lock`): every process that can open the file is on this machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a lock's name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def supported(db_url: str) -> bool:
    """Whether the URL's database server has advisory locks (PostgreSQL)."""
    from sqlalchemy.engine import make_url

    return make_url(db_url).get_backend_name() == "postgresql"


@contextmanager
def advisory_lock(db_url: str, name: str) -> Iterator[bool]:
    """Try once to take the lock ``name``; yields whether it was taken, and holds it until the block ends."""
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            key = lock_key(name)
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            conn.commit()  # the lock is the session's, not the transaction's: nothing left open while it is held
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
    finally:
        engine.dispose()
