"""What every command shares: the error boundary, the store handle, the consoles."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from typer.core import TyperGroup, TyperOption

from llmvirt.errors import LlmvirtError, UsageError

if TYPE_CHECKING:  # SQLAlchemy loads when a command first opens the store, not at start-up
    from sqlalchemy import Engine

    from llmvirt.store.plain import SqliteFile, ViaEngine

def lazy(module: str) -> Any:
    """A stand-in for ``module`` that imports it on first attribute access: commands import the store,
    the policies and the inventory only when they run, so ``--help`` and light commands start fast.
    Modules bind it under ``if not TYPE_CHECKING`` and import the real module for type checkers."""
    return _LazyModule(module)


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


_typed_display = getattr(TyperOption, "display_type_rich", None)


def _flag_takes_no_value(self: TyperOption, ctx: Any) -> str | None:
    """Help shows no type for a flag (typer 0.29 prints ``<bool>``, as if ``--json`` took a value)."""
    return None if self.is_flag else _typed_display(self, ctx)


if _typed_display is not None:
    TyperOption.display_type_rich = _flag_takes_no_value  # type: ignore[method-assign]

out = Console(highlight=False, emoji=False)  # ":x:" in a name or message stays ":x:"
err = Console(stderr=True, highlight=False, emoji=False)


class ReportingGroup(TyperGroup):
    """A command group that turns llmvirt errors into one line on stderr and their exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        """Run the command; report :class:`LlmvirtError` without a traceback."""
        try:
            return super().invoke(ctx)
        except LlmvirtError as exc:
            err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None


def literal(*values: object) -> list[Text]:
    """Table cells and titles shown as written: VM, host and policy names and reasons may hold brackets, which rich
    would otherwise read as markup and drop (``[rebalance]`` vanished from a plan's title)."""
    return [Text(str(v)) for v in values]


def new_app(help_text: str) -> typer.Typer:
    """A Typer (sub)app with llmvirt's error boundary and no rich tracebacks."""
    return typer.Typer(cls=ReportingGroup, help=help_text, no_args_is_help=True,
                       pretty_exceptions_enable=False, add_completion=False)


@dataclass
class State:
    """Global options, and the store opened once on first use."""

    db_url: str | None = None  #: --db / LLMVIRT_DB
    config_path: Path | None = None  #: --config / LLMVIRT_CONFIG
    _engine: Engine | None = field(default=None, repr=False)
    _store: SqliteFile | ViaEngine | None = field(default=None, repr=False)

    def engine(self) -> Engine:
        """The store, opened and upgraded, with the config file's hosts registered."""
        if self._engine is None:
            from llmvirt.store import database

            self._engine = database.open_engine(self.db_url)
            self._sync_config(self._engine)
        return self._engine

    def store(self) -> SqliteFile | ViaEngine:
        """The store for the hot path (``hosts list``, ``status``, ``scan``): a SQLite file at the newest schema
        opens through the stdlib driver without importing SQLAlchemy; anything else as :meth:`engine` does."""
        if self._store is None:
            from llmvirt.store import opening

            self._store = opening.open_store(self.db_url)
            self._sync_config(self._store)
        return self._store

    def _sync_config(self, store: object) -> None:
        from llmvirt import config
        from llmvirt.store import registry

        hosts = config.load_hosts(self.config_path)
        if hosts and not registry.config_in_sync(store, hosts):
            registry.sync_config_hosts(store, hosts)


def state(ctx: typer.Context) -> State:
    """The :class:`State` of this invocation."""
    obj = ctx.find_root().obj
    if not isinstance(obj, State):
        obj = State()
        ctx.find_root().obj = obj
    return obj


_AGE_RE = re.compile(r"^(\d+)\s*([smhdw])$")
_AGE_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """Parse ``30d``, ``12h``, ``90m``, ``45s`` or ``2w``."""
    m = _AGE_RE.match(text.strip())
    if not m:
        raise UsageError(f"invalid age {text!r}: use a number and s, m, h, d or w (e.g. 30d)")
    return timedelta(**{_AGE_UNIT[m.group(2)]: int(m.group(1))})


def parse_size_mib(text: str) -> int:
    """``64``, ``64M``, ``64MiB``, ``4G``, ``4GiB`` or ``1T`` (``1TiB``) in MiB."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = {"t": 1024 * 1024, "g": 1024}.get(t[-1:], 1)
    t = t[:-1] if t[-1:] in ("m", "g", "t") else t
    if not t.isdigit():
        raise UsageError(f"invalid size {text!r}: use e.g. 512M, 4G or 1T")
    return int(t) * mult
