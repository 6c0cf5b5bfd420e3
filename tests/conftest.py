"""Shared fixtures: test-driver host files, a private database, the CLI runner."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmvirt.cli import app

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``LLMVIRT_TEST_ORDER=reverse`` or ``shuffle:SEED`` reorders the tests inside each module (modules keep
    their order, so a module's lab starts once): a run that shows no test depends on another's order."""
    order = os.environ.get("LLMVIRT_TEST_ORDER", "")
    if not order:
        return
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    rng = random.Random(int(order.split(":", 1)[1]) if order.startswith("shuffle:") else 0)
    for group in modules.values():
        if order == "reverse":
            group.reverse()
        else:
            rng.shuffle(group)
    items[:] = [item for group in modules.values() for item in group]


def fixture_uri(name: str) -> str:
    """The test-driver URI of a fixture host file."""
    return f"test://{FIXTURES / name}"


#: ``LLMVIRT_TEST_DB=postgresql`` runs every store-using test against a real PostgreSQL server (issue 19)
ON_POSTGRES = os.environ.get("LLMVIRT_TEST_DB", "") == "postgresql"


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a generator of PostgresServer
    """A PostgreSQL server of its own for this test session (Debian's server binaries, a throwaway cluster)."""
    from pg_server import PostgresServer

    server = PostgresServer.start(tmp_path_factory.mktemp("pg"))
    yield server
    server.stop()


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh database per test, used by the CLI through LLMVIRT_DB: a SQLite file, or under
    ``LLMVIRT_TEST_DB=postgresql`` a new database on the session's PostgreSQL server."""
    if ON_POSTGRES:
        url = request.getfixturevalue("postgres_server").new_database()
    else:
        url = f"sqlite:///{tmp_path / 'llmvirt.db'}"
    monkeypatch.setenv("LLMVIRT_DB", url)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LLMVIRT_CONFIG", raising=False)
    monkeypatch.delenv("LLMVIRT_NVML_SAMPLE", raising=False)
    return url


class Cli:
    """Runs llmvirt commands in-process and returns (exit code, stdout, stderr)."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str) -> tuple[int, str, str]:
        res = self.runner.invoke(app, list(args), catch_exceptions=False)
        return res.exit_code, res.stdout, res.stderr


@pytest.fixture
def cli(db_url: str) -> Cli:
    """The CLI bound to this test's database."""
    return Cli()
