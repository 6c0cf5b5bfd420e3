"""Workload trace loaders.

PlanetLab (CloudSim's format): one file per VM, one integer CPU percentage per
line, 288 lines of 5-minute means. Files are sorted by name, as in the
reference runs, so VM-type assignment is reproducible. Bad input (an empty
directory, a non-integer line, a value outside 0..100, files of different
lengths) raises :class:`TraceError` naming the file and line; nothing is
silently clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmvirt.errors import UsageError

PLANETLAB_INTERVAL_S = 300


class TraceError(UsageError):
    """A trace file is missing, malformed or out of range."""


@dataclass(frozen=True)
class CpuTrace:
    """CPU utilisation of many VMs over equal intervals."""

    names: tuple[str, ...]  #: VM names (file names for PlanetLab)
    util: np.ndarray  #: shape (vms, samples), fraction 0..1
    interval_s: int  #: seconds between samples


def load_planetlab(directory: Path) -> CpuTrace:
    """Load one PlanetLab day directory."""
    if not directory.is_dir():
        raise TraceError(f"trace directory {directory} does not exist")
    files = sorted(p for p in directory.iterdir() if p.is_file())
    if not files:
        raise TraceError(f"trace directory {directory} is empty")
    rows: list[np.ndarray] = []
    for f in files:
        raw = f.read_bytes().split()
        try:
            values = np.array(raw, dtype=np.int64)
        except ValueError:
            for i, tok in enumerate(f.read_text(errors="replace").splitlines(), 1):
                if not tok.strip().lstrip("-").isdigit():
                    raise TraceError(f"{f}:{i}: not an integer percentage: {tok.strip()[:40]!r}") from None
            raise TraceError(f"{f}: malformed") from None
        bad = np.flatnonzero((values < 0) | (values > 100))
        if bad.size:
            raise TraceError(f"{f}:{bad[0] + 1}: utilisation {values[bad[0]]} is outside 0..100")
        if values.size == 0:
            raise TraceError(f"{f}: empty file")
        if rows and values.size != rows[0].size:
            raise TraceError(f"{f}: {values.size} samples, but {files[0].name} has {rows[0].size}")
        rows.append(values)
    return CpuTrace(tuple(f.name for f in files), np.vstack(rows).astype(np.float64) / 100.0,
                    PLANETLAB_INTERVAL_S)
