"""The llmvirt store: SQLAlchemy models, Alembic-managed schema, registry and snapshots.

Submodules are imported on first use, so a command that only reads its config stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"open_engine": "database", "resolve_url": "database", "RegisteredHost": "registry",
            "HostView": "snapshots", "latest": "snapshots", "latest_cluster": "snapshots", "record_scan": "snapshots"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"llmvirt.store.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
