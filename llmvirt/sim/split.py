"""The one train / held-back split: declared here, used by every trainer and every report (issue 14).

- **By VM** (Bitbrains July and August, and any trace in the generic format): a VM trains when
  ``sha256(name)`` read as a fraction is below :data:`TRAIN_FRACTION`; the others are held back.
  Names are the VMs' own (file names for Bitbrains, the ``vm`` column for the generic format),
  so the split needs no list, holds for traces this project has never seen, and a VM held back
  in one month is held back in every month (Bitbrains names are the same VM across months).
- **By time** (PlanetLab, whose VMs are different each day): whole days.
  :data:`TRAIN_DAYS` train; :data:`HELD_DAYS` are held back; any other day is unseen as well.

Nothing is chosen after looking at held-back VMs or days: trainers and tuners receive only the
training side (tests/test_split.py holds every module to this file's constants).
"""

from __future__ import annotations

import hashlib

import numpy as np

TRAIN_FRACTION = 0.6  #: share of VMs (by name hash) that train; the rest is held back
TRAIN_DAYS = ("20110303", "20110306", "20110309")  #: PlanetLab days policies and baselines are tuned on
HELD_DAYS = ("20110325", "20110403", "20110411", "20110412")  #: PlanetLab days held back for reports


def split(names: tuple[str, ...] | list[str], train_fraction: float = TRAIN_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-back indices) of ``names`` by a hash of each VM's name.

    ``train_fraction`` other than :data:`TRAIN_FRACTION` is for tests on tiny synthetic traces only."""
    h = np.array([int(hashlib.sha256(n.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for n in names])
    return np.flatnonzero(h < train_fraction), np.flatnonzero(h >= train_fraction)


def day_role(day: str) -> str:
    """"train" for a training PlanetLab day, "held back" for every other day."""
    return "train" if day in TRAIN_DAYS else "held back"


def split_meta(trace_label: str, train_idx: np.ndarray, held_idx: np.ndarray) -> dict[str, object]:
    """The ``training_data`` entry every head's metadata carries: which VMs trained it, which are held out."""
    return {"trace": trace_label, "split": "sha256(name) < train_fraction", "train_vms": int(train_idx.size),
            "held_out_vms": int(held_idx.size)}
