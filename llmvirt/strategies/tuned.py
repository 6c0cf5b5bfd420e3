"""``tuned:FAMILY``: the best parameters of a baseline family, as tuned on the training split
(``llmvirt tune``, :mod:`llmvirt.bench.tune`) and committed in ``policies/tuned.json``."""

from __future__ import annotations

import json
from pathlib import Path

from llmvirt.paths import POLICIES_ROOT

TUNED_FILE = POLICIES_ROOT / "tuned.json"


def tuned_name(family: str, path: Path = TUNED_FILE) -> str:
    """The strategy name ``tuned:FAMILY`` stands for (the best of its grid in ``policies/tuned.json``)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"no tuned baselines in {path}: {exc}; run `llmvirt tune` first") from None
    fams = doc.get("families", {})
    if family not in fams:
        raise ValueError(f"no tuned {family!r} in {path}: tuned families are {', '.join(fams) or 'none'}")
    return str(fams[family]["best"])
