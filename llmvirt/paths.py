"""Where policies live: the shipped default and names under ``policies/`` (no heavy imports)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "policies" / "default"


def policy_dir(spec: str | None) -> Path:
    """A policy's directory: a path, a name under policies/, or None for the default policy."""
    path = DEFAULT_POLICY if spec is None else Path(spec)
    if spec and not path.exists():
        path = DEFAULT_POLICY.parent / spec
    return path
