"""Host overload detection from CloudSim 5.0 (Beloglazov & Buyya, CCPE 2012).

Each detector answers "is this host over-utilised?" for a host described by
its requested MIPS and its utilisation history (most recent first, as
``PowerHostUtilizationHistory.getUtilizationHistory`` builds it). Sources:
``PowerVmAllocationPolicyMigrationStaticThreshold``, ``...InterQuartileRange``,
``...MedianAbsoluteDeviation``, ``...LocalRegression`` and
``org.cloudbus.cloudsim.util.MathUtil``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FALLBACK_THRESHOLD = 0.7  # IQR/MAD/LR use THR 0.7 while the history is short (CloudSim's runner)
MIN_HISTORY = 12  # IQR/MAD need 12 non-zero leading values (MathUtil.countNonZeroBeginning)
LR_LENGTH = 10  # LR regresses over the 10 latest values


def trim_zero_tail(h: np.ndarray) -> np.ndarray:
    """MathUtil.trimZeroTail: drop trailing zeros."""
    nz = np.flatnonzero(h)
    return h[: nz[-1] + 1] if nz.size else h[:0]


def count_nonzero_beginning(h: np.ndarray) -> int:
    """MathUtil.countNonZeroBeginning: length of the leading run of non-zero values."""
    z = np.flatnonzero(h == 0)
    return int(z[0]) if z.size else int(h.size)


def percentile_legacy(data: np.ndarray, p: float) -> float:
    """Apache Commons Math ``Percentile`` (LEGACY estimation), used by CloudSim's MathUtil."""
    s = np.sort(data)
    n = s.size
    pos = p * (n + 1) / 100
    if pos < 1:
        return float(s[0])
    if pos >= n:
        return float(s[-1])
    lower = math.floor(pos)
    d = pos - lower
    return float(s[lower - 1] + d * (s[lower] - s[lower - 1]))


@dataclass(frozen=True)
class Thr:
    """Static threshold: requested utilisation above ``threshold``."""

    threshold: float = 0.8  #: fraction of host MIPS
    name: str = "thr"  #: short name

    def is_overloaded(self, requested_util: float, history: np.ndarray, max_migration_s: float) -> bool:
        """True when requested MIPS / capacity exceeds the threshold."""
        return requested_util > self.threshold


@dataclass(frozen=True)
class Iqr:
    """Adaptive threshold 1 - s x IQR(history)."""

    safety: float = 1.5  #: the safety parameter s
    name: str = "iqr"  #: short name

    def is_overloaded(self, requested_util: float, history: np.ndarray, max_migration_s: float) -> bool:
        """True when requested utilisation exceeds 1 - s x IQR, or the fallback says so."""
        if count_nonzero_beginning(history) < MIN_HISTORY:
            return requested_util > FALLBACK_THRESHOLD
        iqr = percentile_legacy(history, 75) - percentile_legacy(history, 25)
        return requested_util > 1 - self.safety * iqr


@dataclass(frozen=True)
class Mad:
    """Adaptive threshold 1 - s x MAD(history)."""

    safety: float = 2.5  #: the safety parameter s
    name: str = "mad"  #: short name

    def is_overloaded(self, requested_util: float, history: np.ndarray, max_migration_s: float) -> bool:
        """True when requested utilisation exceeds 1 - s x MAD, or the fallback says so."""
        if count_nonzero_beginning(history) < MIN_HISTORY:
            return requested_util > FALLBACK_THRESHOLD
        med = percentile_legacy(history, 50)
        mad = percentile_legacy(np.abs(med - history), 50)
        return requested_util > 1 - self.safety * mad


@dataclass(frozen=True)
class Lr:
    """Local regression: the least-squares line over the last 10 values, extrapolated past the
    longest migration, times the safety parameter, reaching 1 means overloaded."""

    safety: float = 1.2  #: the safety parameter s
    interval_s: float = 300.0  #: scheduling interval
    name: str = "lr"  #: short name

    def is_overloaded(self, requested_util: float, history: np.ndarray, max_migration_s: float) -> bool:
        """True when the predicted utilisation x s is at least 1, or the fallback says so."""
        if history.size < LR_LENGTH:
            return requested_util > FALLBACK_THRESHOLD
        y = history[:LR_LENGTH][::-1]
        x = np.arange(1, LR_LENGTH + 1, dtype=np.float64)
        xm, ym = x.mean(), y.mean()
        slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
        intercept = float(ym - slope * xm)
        intervals = math.ceil(max_migration_s / self.interval_s)
        return (intercept + slope * (LR_LENGTH + intervals)) * self.safety >= 1


Detector = Thr | Iqr | Mad | Lr


def make_detector(name: str, param: float) -> Detector:
    """A detector by its CloudSim name and parameter (``thr 0.8``, ``iqr 1.5``, ``mad 2.5``, ``lr 1.2``)."""
    table = {"thr": Thr, "iqr": Iqr, "mad": Mad, "lr": Lr, "lrr": Lr}
    if name not in table:
        raise ValueError(f"unknown overload detector {name!r}")
    return table[name](param)  # type: ignore[abstract]
