"""Alembic migrations of the llmvirt store (installed as the ``llmvirt_migrations`` package)."""
