"""The llmvirt store: SQLAlchemy models, Alembic-managed schema, registry and snapshots."""

from llmvirt.store.database import open_engine, resolve_url
from llmvirt.store.registry import RegisteredHost
from llmvirt.store.snapshots import HostView, latest, latest_cluster, record_scan

__all__ = ["HostView", "RegisteredHost", "latest", "latest_cluster", "open_engine", "record_scan",
           "resolve_url"]
