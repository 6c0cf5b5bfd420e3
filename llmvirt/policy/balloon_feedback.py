"""Pressure feedback for the balloon head: each VM's margin follows its own recent memory pressure.

A forecaster alone cannot see a guest that starts swapping (issue 16; Meta's TMO reacts to pressure
for the same reason). So on top of the forecast quantile, each VM gets a margin of its own:

- **pressure gives memory back at once**: the safety limits deflate a VM under pressure to its
  maximum in the same step (:func:`llmvirt.policy.tuning.safe_targets`), and
- **its margin widens**: by a factor ``widen`` for every step with pressure in the last day;
- **calm narrows it slowly**: by ``narrow`` per calm step since the last pressure (or since the
  window began, for a VM that had none; 0.995 per 5 min halves it in about 11.5 hours),
- and it stays within ``[floor, ceiling]`` of the VM's maximum.

The rule is stateless, a closed form of the VM's pressure flags over the last day, so the
simulator (one flag per step: use above the balloon) and real hosts (one flag per scan: usable
memory low, swap-in or major faults rising, from the store's samples) compute it with the same
function, and a restarted controller loses nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

WINDOW = 288  #: steps of pressure history the margin looks back over (one day of 5-minute scans)


@dataclass(frozen=True)
class Feedback:
    """The feedback rule's parameters (part of the operating point)."""

    base: float = 0.10  #: margin of a VM with no pressure in the window, fraction of its maximum
    widen: float = 2.0  #: factor per step with pressure in the window
    narrow: float = 0.995  #: factor per calm step since the last pressure
    floor: float = 0.02  #: the margin never goes below this
    ceiling: float = 0.60  #: nor above this

    def as_dict(self) -> dict[str, float]:
        """For the checkpoint metadata."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Feedback:
        """From the checkpoint metadata; ValueError when out of range."""
        fb = cls(**{k: float(raw[k]) for k in ("base", "widen", "narrow", "floor", "ceiling") if k in raw})
        if not (0 <= fb.floor <= fb.base <= fb.ceiling <= 1 and fb.widen >= 1 and 0 < fb.narrow <= 1):
            raise ValueError(f"feedback parameters out of range: {fb}")
        return fb


def margins(pressure: np.ndarray, fb: Feedback) -> np.ndarray:
    """Each VM's margin from its pressure flags ``pressure`` (n VMs x steps, oldest first; only the last
    :data:`WINDOW` count): ``base x widen^(pressure steps) x narrow^(calm steps since the last one, or
    all steps when there was none)``, within ``[floor, ceiling]``. A VM with no history yet: ``base``."""
    p = np.asarray(pressure, dtype=bool)
    if p.ndim != 2:
        raise ValueError("pressure flags must be (VMs, steps)")
    p = p[:, -WINDOW:]
    n, t = p.shape
    if t == 0:
        return np.full(n, fb.base)
    count = p.sum(axis=1)
    last = np.where(p.any(axis=1), t - 1 - np.argmax(p[:, ::-1], axis=1), -1)
    calm = np.where(count > 0, t - 1 - last, t)
    m = fb.base * np.power(fb.widen, count.astype(np.float64)) * np.power(fb.narrow, calm.astype(np.float64))
    return np.clip(m, fb.floor, fb.ceiling)
