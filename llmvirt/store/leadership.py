"""Which of several controllers leads: the one holding the store's leader lock.

On PostgreSQL the lock is a session-level advisory lock held on a connection of its own. The server
frees it when that session ends: a leader killed by SIGKILL, or cut off from the database, loses it as
soon as the server notices (at once over a Unix socket; over TCP within the server's
``tcp_keepalives_*`` settings), and a follower takes it on its next try. A leader asks
:meth:`Leadership.holds` before every action: if its session is gone, it stops acting.

On SQLite every controller is on the machine that holds the file, and the lock is a file lock beside it
(freed by the kernel when the process dies).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from llmvirt.store.server_lock import lock_key

LEADER_LOCK = "llmvirt leader"


class Leadership:
    """This controller's claim to lead; :meth:`try_lead` is cheap enough to call every interval."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self._server = make_url(db_url).get_backend_name() == "postgresql"
        self._conn: Any = None  # the lock's own connection (PostgreSQL)
        self._engine: Any = None
        self._fd: int | None = None  # the lock file (SQLite)
        self._mutex = threading.RLock()  # holds() is asked from the executor's worker threads

    @property
    def leading(self) -> bool:
        """Whether this controller held the lock at its last check."""
        return self._conn is not None or self._fd is not None

    def try_lead(self) -> bool:
        """Keep the lead if held and alive, else try once to take it. Never waits."""
        if self.leading:
            return self.holds()
        return self._take_server() if self._server else self._take_file()

    def holds(self) -> bool:
        """Whether the lock is still ours: the lock's session answers (PostgreSQL), or the file is locked."""
        with self._mutex:
            if self._fd is not None:
                return True
            if self._conn is None:
                return False
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except DBAPIError:
                self.release()
                return False

    def release(self) -> None:
        """Give up the lead (closing the lock's session frees the advisory lock)."""
        with self._mutex:
            self._release()

    def _release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except DBAPIError:
                pass
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _take_server(self) -> bool:
        self._engine = create_engine(self.db_url, poolclass=NullPool)
        try:
            conn = self._engine.connect()
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(LEADER_LOCK)}).scalar())
            conn.commit()
        except DBAPIError:
            self.release()
            return False
        if got:
            self._conn = conn
        else:
            conn.close()
            self.release()
        return got

    def _take_file(self) -> bool:
        url = make_url(self.db_url)
        path = Path(url.database or "llmvirt.db")
        lock = path.with_name(path.name + ".leader.lock")
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True
