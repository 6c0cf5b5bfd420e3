"""A throwaway PostgreSQL server for the tests: Debian's server binaries, a cluster in a temporary
directory owned by the unprivileged ``postgres`` user, reached only over a Unix socket (no TCP port)."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), default=Path("/usr/lib/postgresql/15/bin"))
USER = "postgres"  #: PostgreSQL refuses to run as root


def _as_user(cmd: list[str], **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
    run_as = ["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []
    res = subprocess.run(run_as + cmd, capture_output=True, text=True, timeout=120, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.strip() or res.stdout.strip()}")
    return res


@dataclass
class PostgresServer:
    """One running cluster; :meth:`new_database` hands out a fresh database per test."""

    root: Path
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def socket_dir(self) -> Path:
        """Where the server's Unix socket lives."""
        return self.root / "sock"

    @classmethod
    def start(cls, root: Path) -> PostgresServer:
        """initdb and start a cluster under ``root`` (made the postgres user's)."""
        assert (BIN / "initdb").exists(), f"PostgreSQL server binaries not found under {BIN}: install `postgresql`"
        server = cls(root)
        data = root / "data"
        server.socket_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(USER)
            for p in (root, server.socket_dir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            root.chmod(0o700)
            _allow_traverse(root)
        _as_user([str(BIN / "initdb"), "-D", str(data), "-U", "llmvirt", "--auth=trust", "-E", "UTF8",
                  "--no-sync"])
        _as_user([str(BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "server.log"), "-o",
                  f"-k {server.socket_dir} -c listen_addresses='' -c fsync=off", "start"])
        return server

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of one database (psycopg 3, over the socket)."""
        return f"postgresql+psycopg://llmvirt@/{database}?host={self.socket_dir}"

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        import psycopg
        from psycopg import sql

        name = f"t{next(self.counter)}"
        with psycopg.connect(host=str(self.socket_dir), user="llmvirt", dbname="postgres", autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and remove its files."""
        if os.geteuid() == 0:
            _allow_traverse(self.root)  # another pytest on this machine may have closed /tmp/pytest-of-root again
        _as_user([str(BIN / "pg_ctl"), "-D", str(self.root / "data"), "-w", "-m", "immediate", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)


def _allow_traverse(path: Path) -> None:
    """pytest's temporary directories are root's (0700): let the postgres user pass through to ``path``."""
    for parent in path.parents:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
