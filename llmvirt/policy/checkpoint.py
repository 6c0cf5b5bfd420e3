"""Policy checkpoints: weights in safetensors, metadata in JSON; nothing is unpickled.

A checkpoint is a directory ``NAME/`` with ``model.safetensors`` and ``policy.json``.
The JSON records the format version, the feature spec and its order, the scenario and
goal, the training data, the seed, metrics, the git commit and the SHA-256 of the
weights file. Loading refuses a different format, a different feature spec, or
weights whose hash does not match (a tampered or truncated file), with one clear line.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from llmvirt.errors import UsageError
from llmvirt.policy.features import FEATURE_SPEC_VERSION, FEATURES
from llmvirt.policy.model import PlacementScorer

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "policy.json"


class CheckpointError(UsageError):
    """A policy checkpoint is missing, corrupted, tampered with or made for other features."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_commit() -> str:
    """The current git commit, or "unknown" outside a checkout."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
        return res.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save(model: PlacementScorer, directory: Path, meta: dict[str, Any]) -> Path:
    """Write weights and metadata to ``directory``; returns the metadata path."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    doc = {
        "format_version": FORMAT_VERSION,
        "feature_spec": {"version": FEATURE_SPEC_VERSION, "features": list(FEATURES)},
        "model": {"class": "PlacementScorer", **model.config()},
        "weights_sha256": _sha256(weights),
        "git_commit": git_commit(),
        **meta,
    }
    path = directory / META
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load(directory: Path) -> tuple[PlacementScorer, dict[str, Any]]:
    """Load and verify a checkpoint; raises :class:`CheckpointError` with the reason."""
    meta_path, weights = directory / META, directory / WEIGHTS
    if not meta_path.is_file() or not weights.is_file():
        raise CheckpointError(f"{directory} is not a policy checkpoint (needs {META} and {WEIGHTS})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable metadata: {exc}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{directory}: checkpoint format {meta.get('format_version')!r}, "
                              f"this llmvirt reads {FORMAT_VERSION}")
    spec = meta.get("feature_spec", {})
    if spec.get("version") != FEATURE_SPEC_VERSION or spec.get("features") != list(FEATURES):
        raise CheckpointError(f"{directory}: made for a different feature spec "
                              f"(version {spec.get('version')!r}); retrain it with this llmvirt")
    if _sha256(weights) != meta.get("weights_sha256"):
        raise CheckpointError(f"{weights}: SHA-256 does not match {META}: the weights were changed or damaged")
    cfg = meta.get("model", {})
    try:
        model = PlacementScorer(int(cfg["n_features"]), int(cfg["hidden"]))
        state = load_file(str(weights))
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{directory}: weights do not fit the model: {exc}") from None
    model.eval()
    return model, meta


def score(model: PlacementScorer, features: torch.Tensor) -> torch.Tensor:
    """Scores without gradients."""
    with torch.no_grad():
        return model(features)
