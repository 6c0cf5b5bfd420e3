"""Policy checkpoints: weights in safetensors, metadata in JSON; nothing is unpickled.

A checkpoint is a directory ``NAME/`` with ``model.safetensors`` and ``policy.json`` (the
placement/migration head) and, beside them, one ``HEAD.safetensors`` + ``HEAD.json`` pair per
further head (``balloon``, ``pin``): one policy, several heads, each loaded with the same checks.
The JSON records the format version, the feature spec and its order, the scenario and
goal, the training data, the seed, metrics, the git commit and the SHA-256 of the
weights file. Loading refuses a different format, a different feature spec, or
weights whose hash does not match (a tampered or truncated file), with one clear line.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llmvirt.policy.features import FEATURE_SPEC_VERSION, FEATURES, SPECS, spec_of
from llmvirt.policy.model import PlacementScorer
from llmvirt.policy.weights import (  # noqa: F401 - re-exported: the checks live with the torch-free reader
    FORMAT_VERSION,
    META,
    WEIGHTS,
    CheckpointError,
    sha256,
    verify,
)

WRITTEN_KEYS = ("format_version", "head", "feature_spec", "model", "weights_sha256", "git_commit")  #: set on save


def user_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata a caller gave on save, without the keys the checkpoint writes itself (to re-save it)."""
    return {k: v for k, v in meta.items() if k not in WRITTEN_KEYS}


_sha256 = sha256


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
    version, names = spec_of(model.n_features)  # a network of the older spec (fine-tuned) keeps declaring it
    doc = {
        "format_version": FORMAT_VERSION,
        "feature_spec": {"version": version, "features": names},
        "model": {"class": "PlacementScorer", **model.config()},
        "weights_sha256": _sha256(weights),
        "git_commit": git_commit(),
        **meta,
    }
    path = directory / META
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


_verify = verify


def _load_weights(directory: Path, model: nn.Module, weights: Path) -> None:
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except (KeyError, ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{directory}: weights do not fit the model: {exc}") from None
    model.eval()


def load(directory: Path) -> tuple[PlacementScorer, dict[str, Any]]:
    """Load and verify a checkpoint; raises :class:`CheckpointError` with the reason."""
    meta = _verify(directory, directory / META, directory / WEIGHTS, FEATURE_SPEC_VERSION, list(FEATURES), SPECS)
    cfg = meta.get("model", {})
    try:
        model = PlacementScorer(int(cfg["n_features"]), int(cfg["hidden"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{directory}: model parameters missing or wrong: {exc}") from None
    _load_weights(directory, model, directory / WEIGHTS)
    return model, meta


@dataclass(frozen=True)
class HeadSpec:
    """A further head of the policy: its file stem, feature spec and how to build its module."""

    name: str  #: file stem: ``NAME.safetensors`` and ``NAME.json``
    version: int  #: version of the head's feature spec
    features: tuple[str, ...]  #: feature names in order
    build: Callable[[dict[str, Any]], nn.Module]  #: module from the stored constructor parameters


def save_head(model: nn.Module, directory: Path, spec: HeadSpec, config: dict[str, Any],
              meta: dict[str, Any]) -> Path:
    """Write one head's weights and metadata beside the policy; returns the metadata path."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{spec.name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return _write_head_meta(directory, spec, config, meta)


def save_head_arrays(arrays: dict[str, np.ndarray], directory: Path, spec: HeadSpec, config: dict[str, Any],
                     meta: dict[str, Any]) -> Path:
    """:func:`save_head` for weights held as numpy arrays (an ensemble stacked from other checkpoints)."""
    from safetensors.numpy import save_file as save_numpy

    directory.mkdir(parents=True, exist_ok=True)
    save_numpy({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(directory / f"{spec.name}.safetensors"))
    return _write_head_meta(directory, spec, config, meta)


def _write_head_meta(directory: Path, spec: HeadSpec, config: dict[str, Any], meta: dict[str, Any]) -> Path:
    weights = directory / f"{spec.name}.safetensors"
    doc = {"format_version": FORMAT_VERSION, "head": spec.name,
           "feature_spec": {"version": spec.version, "features": list(spec.features)},
           "model": config, "weights_sha256": _sha256(weights), "git_commit": git_commit(), **meta}
    path = directory / f"{spec.name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load_head(directory: Path, spec: HeadSpec) -> tuple[nn.Module, dict[str, Any]]:
    """Load and verify one head (same checks as :func:`load`)."""
    meta = _verify(directory, directory / f"{spec.name}.json", directory / f"{spec.name}.safetensors",
                   spec.version, list(spec.features))
    try:
        model = spec.build(meta.get("model", {}))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{directory}: {spec.name} head parameters missing or wrong: {exc}") from None
    _load_weights(directory, model, directory / f"{spec.name}.safetensors")
    return model, meta


def score(model: PlacementScorer, features: torch.Tensor) -> torch.Tensor:
    """Scores without gradients."""
    with torch.no_grad():
        return model(features)
