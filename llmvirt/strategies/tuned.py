"""``tuned:FAMILY``: the best parameters of a baseline family, as tuned on the training split and
committed: the cloudsim scenario's families in ``policies/tuned.json`` (``llmvirt tune``,
:mod:`llmvirt.bench.tune`), the balance and memory scenarios' in ``policies/tuned_balance.json`` and
``policies/tuned_memory.json`` (``bench/tuned_scenarios.py``, from the benchmarks' training grids)."""

from __future__ import annotations

import json
from pathlib import Path

from llmvirt.paths import POLICIES_ROOT

TUNED_FILE = POLICIES_ROOT / "tuned.json"
TUNED_BALANCE_FILE = POLICIES_ROOT / "tuned_balance.json"
TUNED_MEMORY_FILE = POLICIES_ROOT / "tuned_memory.json"
#: the cloudsim scenario's baselines tuned by the tail objective on PlanetLab and Bitbrains training days
TUNED_TAIL_FILE = POLICIES_ROOT / "tuned_tail.json"
#: the same days and families by the scale-free tail objective (each trace family relative to thr-mmt-0.8)
TUNED_RELATIVE_FILE = POLICIES_ROOT / "tuned_relative_tail.json"
#: the cloudsim scenario's name prefixes of a tuned point, and the file each reads
TUNED_SOURCES = {"tuned:": TUNED_FILE, "tail-tuned:": TUNED_TAIL_FILE, "relative-tuned:": TUNED_RELATIVE_FILE}


def tuned_fleet_file(fleet: str, objective: str = "mean") -> Path:
    """Where the cloudsim scenario's baselines tuned on ``fleet``'s hosts by ``objective`` are kept (CloudSim's own
    by the mean: :data:`TUNED_FILE`; by ``tail``: :data:`TUNED_TAIL_FILE`; by ``relative-tail``:
    :data:`TUNED_RELATIVE_FILE`), so that tuning by one objective never overwrites another's file."""
    parts = [p.replace("-", "_") for p in (fleet, objective) if p not in ("cloudsim", "mean")]
    return POLICIES_ROOT / f"{'_'.join(['tuned', *parts])}.json"


def tuned_families(path: Path) -> tuple[str, ...]:
    """The families ``path`` holds a tuned point for (none when the file is missing or unreadable)."""
    try:
        return tuple(json.loads(path.read_text()).get("families", {}))
    except (OSError, ValueError):
        return ()


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
