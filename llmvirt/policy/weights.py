"""Reading policy checkpoints without torch: verification and weights as numpy arrays.

``place`` and ``rebalance`` only run inference of small networks, so they read the safetensors
weights into numpy (nothing is unpickled) after the same checks every checkpoint passes: format
version, feature spec and order, and the SHA-256 of the weights file. Training and fine-tuning
write checkpoints with torch (:mod:`llmvirt.policy.checkpoint`), which imports these checks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from llmvirt.errors import UsageError

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "policy.json"


class CheckpointError(UsageError):
    """A policy checkpoint is missing, corrupted, tampered with or made for other features."""


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(directory: Path, meta_path: Path, weights: Path, version: int, features: list[str],
           older: dict[int, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """Read the metadata and check format, feature spec and weights hash; returns the metadata. ``older``: further
    specs (version -> features) still read, where today's features extend them."""
    if not meta_path.is_file() or not weights.is_file():
        raise CheckpointError(f"{directory} is not a policy checkpoint (needs {meta_path.name} and {weights.name})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable metadata: {exc}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{directory}: checkpoint format {meta.get('format_version')!r}, "
                              f"this llmvirt reads {FORMAT_VERSION}")
    spec = meta.get("feature_spec", {})
    known = {version: list(features), **{v: list(f) for v, f in (older or {}).items()}}
    if known.get(spec.get("version")) != spec.get("features"):
        raise CheckpointError(f"{meta_path}: made for a different feature spec "
                              f"(version {spec.get('version')!r}); retrain it with this llmvirt")
    if sha256(weights) != meta.get("weights_sha256"):
        raise CheckpointError(f"{weights}: SHA-256 does not match {meta_path.name}: "
                              "the weights were changed or damaged")
    return meta


def load_arrays(directory: Path, stem: str | None, version: int, features: list[str],
                older: dict[int, tuple[str, ...]] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Verified weights (name -> array) and metadata of the placement head (``stem`` None) or a further head
    (``older``: as in :func:`verify`)."""
    from safetensors.numpy import load_file

    meta_path = directory / (META if stem is None else f"{stem}.json")
    weights = directory / (WEIGHTS if stem is None else f"{stem}.safetensors")
    meta = verify(directory, meta_path, weights, version, features, older)
    try:
        return dict(load_file(str(weights))), meta
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{directory}: unreadable weights: {exc}") from None


class NumpyMLP:
    """Inference of :class:`llmvirt.policy.model.PlacementScorer` in numpy (ReLU MLP, one score per row)."""

    LAYERS = ("trunk.0", "trunk.2", "place")  #: the torch module's state-dict prefixes, in order

    def __init__(self, arrays: dict[str, np.ndarray], n_features: int, hidden: int) -> None:
        """Check shapes against the stored constructor parameters."""
        shapes = {"trunk.0": (hidden, n_features), "trunk.2": (hidden, hidden), "place": (1, hidden)}
        try:
            self.layers = [(arrays[f"{p}.weight"].astype(np.float32), arrays[f"{p}.bias"].astype(np.float32))
                           for p in self.LAYERS]
        except KeyError as exc:
            raise CheckpointError(f"weights do not fit the model: missing {exc}") from None
        for (w, b), p in zip(self.layers, self.LAYERS, strict=True):
            if w.shape != shapes[p] or b.shape != (shapes[p][0],):
                raise CheckpointError(f"weights do not fit the model: {p} has shape {w.shape}")

    @property
    def n_features(self) -> int:
        """Columns the network reads."""
        return int(self.layers[0][0].shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Scores of the rows of ``x`` (shape (..., n_features))."""
        h = np.asarray(x, dtype=np.float32)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h[..., 0]
