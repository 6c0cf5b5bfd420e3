"""Where policies live: the shipped default and names under ``policies/`` (no heavy imports).

In a source checkout that is the tree's own ``policies/``; in an installed wheel or the Debian
package it is the data package ``llmvirt_policies`` (the same directory, shipped beside llmvirt).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _policies_root() -> Path:
    checkout = Path(__file__).resolve().parents[1] / "policies"
    if checkout.is_dir():
        return checkout
    spec = importlib.util.find_spec("llmvirt_policies")
    if spec is None or spec.origin is None:
        return checkout  # nothing shipped: every load then names this path in its error
    return Path(spec.origin).resolve().parent


POLICIES_ROOT = _policies_root()  #: shipped policies and ``tuned.json``
DEFAULT_POLICY = POLICIES_ROOT / "default"


def policy_dir(spec: str | None) -> Path:
    """A policy's directory: a path, a name under policies/, or None for the default policy."""
    path = DEFAULT_POLICY if spec is None else Path(spec)
    if spec and not path.exists():
        path = DEFAULT_POLICY.parent / spec
    return path
