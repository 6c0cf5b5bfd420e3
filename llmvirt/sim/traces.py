"""Workload trace loaders.

PlanetLab (CloudSim's format): one file per VM, one integer CPU percentage per
line, 288 lines of 5-minute means. Files are sorted by name, as in the
reference runs, so VM-type assignment is reproducible. Bad input (an empty
directory, a non-integer line, a value outside 0..100, files of different
lengths) raises :class:`TraceError` naming the file and line; nothing is
silently clipped.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from llmvirt.errors import UsageError

T = TypeVar("T")

PLANETLAB_INTERVAL_S = 300


class TraceError(UsageError):
    """A trace file is missing, malformed or out of range."""


@dataclass(frozen=True)
class CpuTrace:
    """CPU utilisation of many VMs over equal intervals."""

    names: tuple[str, ...]  #: VM names (file names for PlanetLab)
    util: np.ndarray  #: shape (vms, samples), fraction 0..1
    interval_s: int  #: seconds between samples


def _integers(raw: bytes) -> np.ndarray:
    """Whitespace-separated integers; ValueError on anything else. NumPy's text parser, a few times
    faster than converting each token, stops quietly at the first bad token (with a DeprecationWarning,
    which the caller turns into an error), so its count is checked."""
    try:
        values = np.fromstring(raw, dtype=np.int64, sep=" ")
    except DeprecationWarning:
        raise ValueError("not only integers") from None
    if values.size != len(raw.split()):
        raise ValueError("not only integers")
    return values


def _percentages(f: Path) -> np.ndarray:
    """One PlanetLab file's integer percentages, or TraceError naming the file and line."""
    try:
        with open(f, "rb") as fh:
            values = _integers(fh.read())
    except ValueError:
        for i, tok in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if not tok.strip().lstrip("-").isdigit():
                raise TraceError(f"{f}:{i}: not an integer percentage: {tok.strip()[:40]!r}") from None
        raise TraceError(f"{f}: malformed") from None
    if values.size == 0:
        raise TraceError(f"{f}: empty file")
    if np.minimum.reduce(values) < 0 or np.maximum.reduce(values) > 100:
        bad = np.flatnonzero((values < 0) | (values > 100))[0]
        raise TraceError(f"{f}:{bad + 1}: utilisation {values[bad]} is outside 0..100")
    return values


def load_planetlab(directory: Path) -> CpuTrace:
    """Load one PlanetLab day directory."""
    if directory.is_file():
        raise TraceError(f"{directory} is a file: a PlanetLab trace is a day's directory, one file per VM")
    if not directory.is_dir():
        raise TraceError(f"trace directory {directory} does not exist")
    with os.scandir(directory) as entries:  # names sort as the paths would: one directory
        names = sorted(e.name for e in entries if e.is_file())
    if not names:
        raise TraceError(f"trace directory {directory} is empty")
    rows: list[np.ndarray] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for name in names:
            values = _percentages(directory / name)
            if rows and values.size != rows[0].size:
                raise TraceError(f"{directory / name}: {values.size} samples, but {names[0]} has {rows[0].size}")
            rows.append(values)
    return CpuTrace(tuple(names), np.vstack(rows).astype(np.float64) / 100.0, PLANETLAB_INTERVAL_S)


BITBRAINS_START = 1372636800  # 2013-07-01 00:00 UTC: the July week's start (its period, from the data)
BITBRAINS_BINS = 2016  # the July week: 2016 bins of 300 s
MIN_COVERAGE = 0.9  # VMs with data in fewer bins than this are left out (and reported)


@dataclass(frozen=True)
class UsageTrace:
    """CPU and memory use of VMs on a common time grid (Bitbrains, the generic format, the store)."""

    names: tuple[str, ...]  #: VM names
    interval_s: int  #: seconds per sample
    vcpus: np.ndarray  #: per VM
    cpu_capacity_mhz: np.ndarray  #: per VM, provisioned
    cpu_mhz: np.ndarray  #: (vms, samples) CPU used
    mem_capacity_mib: np.ndarray  #: per VM, provisioned
    mem_mib: np.ndarray  #: (vms, samples) memory used
    notes: tuple[str, ...] = ()  #: clean-up that was applied, for the report

    @property
    def cpu_util(self) -> np.ndarray:
        """CPU used as a fraction of the VM's capacity."""
        return self.cpu_mhz / np.maximum(self.cpu_capacity_mhz, 1e-9)[:, None]

    def first_steps(self, steps: int) -> UsageTrace:
        """The same VMs over their first ``steps`` steps (all of them when the trace is shorter)."""
        return UsageTrace(self.names, self.interval_s, self.vcpus, self.cpu_capacity_mhz, self.cpu_mhz[:, :steps],
                          self.mem_capacity_mib, self.mem_mib[:, :steps], self.notes)

    def select(self, idx: np.ndarray) -> UsageTrace:
        """A subset of the VMs (e.g. a train/test split)."""
        return UsageTrace(tuple(self.names[i] for i in idx), self.interval_s, self.vcpus[idx],
                          self.cpu_capacity_mhz[idx], self.cpu_mhz[idx], self.mem_capacity_mib[idx],
                          self.mem_mib[idx], self.notes)


def _grid(ts: np.ndarray, values: np.ndarray, start: int, bins: int, interval: int) -> tuple[np.ndarray, int]:
    """Mean per time bin; empty bins filled from the previous (or, at the start, the next) sample."""
    idx = ((ts - start) // interval).astype(np.int64)
    keep = (idx >= 0) & (idx < bins)
    idx, values = idx[keep], values[keep]
    sums = np.bincount(idx, values, minlength=bins)
    counts = np.bincount(idx, minlength=bins)
    filled = counts > 0
    out = np.where(filled, sums / np.maximum(counts, 1), np.nan)
    if not filled.any():
        return out, 0
    pos = np.where(filled, np.arange(bins), -1)
    np.maximum.accumulate(pos, out=pos)
    first = int(np.argmax(filled))
    pos[pos < 0] = first
    return out[pos], int(filled.sum())


def bitbrains_period(timestamps: list[np.ndarray], interval: int = 300) -> tuple[int, int]:
    """The trace's period from the data: (start, bins) on the ``interval`` grid, from the median first
    and last timestamps over the VMs (a VM that starts late or stops early does not move it). The
    July week gives 2013-07-01 00:00 UTC and 2016 bins; the August month its own period."""
    first = float(np.median([t.min() for t in timestamps]))
    last = float(np.median([t.max() for t in timestamps]))
    start = int(first // interval) * interval
    bins = max(1, int((last - start) // interval) + 1)
    return start, bins


def _bitbrains_rows(name: str, text: str) -> np.ndarray:
    """The first 7 columns as floats; on bad input, the first bad line is named."""
    import io

    try:
        a = np.loadtxt(io.StringIO(text), delimiter=";", skiprows=1, usecols=range(7), ndmin=2)
    except ValueError:
        for i, line in enumerate(text.splitlines()[1:], 2):
            parts = line.split(";")
            try:
                if len(parts) < 7 or any(float(p) != float(p) for p in parts[:7]):
                    raise ValueError
            except ValueError:
                raise TraceError(f"{name}:{i}: malformed row: {line[:60]!r}") from None
        raise TraceError(f"{name}: malformed") from None
    if a.shape[0] == 0:
        raise TraceError(f"{name}: no samples")
    neg = np.flatnonzero((a[:, 3] < 0) | (a[:, 6] < 0))
    if neg.size:
        raise TraceError(f"{name}:{neg[0] + 2}: negative CPU or memory usage")
    return a


def load_bitbrains(source: Path) -> UsageTrace:
    """Bitbrains GWA-T-12 (a directory of ``<vm>.csv`` or the week's .tar.gz), on a 300 s grid.

    Clean-up, reported in ``notes``: the timestamp column holds seconds despite its name; samples
    are averaged per 300 s bin; empty bins take the previous sample; use above the provisioned
    CPU or memory (turbo, accounting noise) is clipped to it and counted; VMs covering less than 90 %
    of the week, or reporting 0 cores or 0 memory throughout, are left out; where provisioned
    cores or memory are 0 in some rows, the VM's largest value is used.
    """
    import tarfile

    files: list[tuple[str, str]] = []
    if not source.exists():
        raise TraceError(f"trace {source} does not exist")
    if source.is_dir():
        files = [(p.name, p.read_text()) for p in sorted(source.glob("*.csv"))]
    elif source.is_file() and source.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source, "r|gz") as tar:  # streaming: one pass over the gzip stream
            for m in tar:
                if m.isfile() and m.name.endswith(".csv"):
                    fh = tar.extractfile(m)
                    if fh is not None:
                        files.append((Path(m.name).name, fh.read().decode()))
        files.sort()
    else:
        raise TraceError(f"Bitbrains trace {source} is neither a directory nor a .tar.gz")
    if not files:
        raise TraceError(f"Bitbrains trace {source} holds no .csv files")
    parsed = [(name, _bitbrains_rows(name, text)) for name, text in files]
    start, bins = bitbrains_period([a[:, 0] for _, a in parsed])
    names, vcpus, cap, cpu, mcap, mem = [], [], [], [], [], []
    dropped: list[str] = []
    filled_bins = clipped = 0
    for name, a in parsed:
        cores, cap_mhz, mem_cap = a[:, 1].max(), a[:, 2].max(), a[:, 5].max() / 1024
        if cores <= 0 or mem_cap <= 0 or cap_mhz <= 0:
            dropped.append(f"{name} (0 cores or memory)")
            continue
        c, n = _grid(a[:, 0], a[:, 3], start, bins, 300)
        m, _ = _grid(a[:, 0], a[:, 6] / 1024, start, bins, 300)
        if n < MIN_COVERAGE * bins:
            dropped.append(f"{name} (data in {n} of {bins} bins)")
            continue
        filled_bins += bins - n
        clipped += int((c > cap_mhz).sum() + (m > mem_cap).sum())
        names.append(name.removesuffix(".csv"))
        vcpus.append(cores)
        cap.append(cap_mhz)
        cpu.append(np.minimum(c, cap_mhz))
        mcap.append(mem_cap)
        mem.append(np.minimum(m, mem_cap))
    notes = (f"{len(names)} VMs kept, {len(dropped)} left out: {', '.join(dropped)}",
             f"{filled_bins} empty 300 s bins filled from the previous sample",
             f"{clipped} samples above the provisioned CPU or memory clipped to it")
    return UsageTrace(tuple(names), 300, np.array(vcpus), np.array(cap), np.vstack(cpu), np.array(mcap),
                      np.vstack(mem), notes)


GENERIC_COLUMNS = ("vm", "timestamp", "cpu_pct", "mem_mib")
GENERIC_MHZ_PER_VCPU = 1000.0  #: the generic format's nominal MHz per vCPU (it has percentages, not MHz)


def _generic_columns(path: Path) -> dict[str, list] | dict[str, np.ndarray]:
    """A generic-format file's columns by name, as read (values checked later); a CSV's empty or missing field
    is refused with its line."""
    if path.suffix == ".parquet":
        cols = _parquet_columns(path)
    else:
        import csv

        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            lists: list[list[str]] = [[] for _ in header]
            i = 1
            for row in reader:
                if not row:
                    continue  # a blank line, skipped (and not counted) as csv.DictReader does
                i += 1
                if len(row) < len(header) or "" in row[:len(header)]:
                    raise TraceError(f"{path}:{i}: empty field")
                for col, value in zip(lists, row, strict=False):
                    col.append(value)
            cols = dict(zip(header, lists, strict=True))
    return cols


def _parquet_columns(path: Path) -> dict[str, np.ndarray]:
    """A Parquet file's columns as arrays (no Python object per value); a timestamp-typed column as Unix seconds,
    a null VM name refused with its row. Nulls elsewhere read as NaN and are refused by the range checks."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"{path}: not a readable Parquet file ({exc})") from None
    cols: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            col = pc.divide(pc.cast(col, pa.timestamp("us", col.type.tz)).cast(pa.int64()), 1e6)
        if name == "vm" and col.null_count:
            _refuse_rows(path, col.is_null().to_numpy(zero_copy_only=False), "no vm name")
        cols[name] = col.to_numpy()
    return cols


def _refuse_rows(path: Path, bad: np.ndarray, what: str) -> None:
    """TraceError naming the first row (as a CSV line number) where ``bad`` holds."""
    rows = np.flatnonzero(bad)
    if rows.size:
        raise TraceError(f"{path}: row {rows[0] + 2}: {what}")


def _sizes(path: Path, values: list, column: str) -> np.ndarray:
    """A VM-size column as numbers, each finite and above 0."""
    try:
        out = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TraceError(f"{path}: non-numeric value in {column}") from None
    _refuse_rows(path, ~(np.isfinite(out) & (out > 0)), f"{column} must be a number above 0")
    return out


def load_generic(path: Path, interval_s: int = 300) -> UsageTrace:
    """The generic format: rows of ``vm, timestamp (Unix s), cpu_pct (of the VM's vCPUs), mem_mib``.

    CSV (header required) or Parquet (same column names). Optional columns ``vcpus`` and
    ``mem_capacity_mib`` give the VM's size; without them a VM counts 1 vCPU and its largest
    memory use as capacity. Samples are averaged per ``interval_s`` bin from the earliest timestamp.
    """
    if not path.is_file():
        raise TraceError(f"trace file {path} does not exist")
    cols = _generic_columns(path)
    missing = [c for c in GENERIC_COLUMNS if c not in cols]
    if missing:
        raise TraceError(f"{path}: missing column(s) {', '.join(missing)}; need {', '.join(GENERIC_COLUMNS)}")
    try:
        ts = np.array(cols["timestamp"], dtype=np.float64)
        cpu = np.array(cols["cpu_pct"], dtype=np.float64)
        mem = np.array(cols["mem_mib"], dtype=np.float64)
    except ValueError as exc:
        raise TraceError(f"{path}: non-numeric value: {exc}") from None
    # NaN passes every range check (a "nan" cell, or a Parquet null) and would spread through each figure
    _refuse_rows(path, ~(np.isfinite(ts) & np.isfinite(cpu) & np.isfinite(mem)), "not a finite number")
    _refuse_rows(path, (cpu < 0) | (cpu > 100) | (mem < 0), "cpu_pct must be 0..100 and mem_mib >= 0")
    vms = [str(v) for v in cols["vm"]]
    names = tuple(sorted(set(vms)))
    index = {n: k for k, n in enumerate(names)}
    which = np.fromiter((index[v] for v in vms), dtype=np.int64, count=len(vms))  # each row's VM, by its index
    order = np.argsort(which, kind="stable")  # rows grouped by VM, each VM's in file order
    bounds = np.searchsorted(which[order], np.arange(len(names) + 1))
    start = int(ts.min())
    bins = int((ts.max() - start) // interval_s) + 1
    vcpus = np.ones(len(names))
    if "vcpus" in cols:
        per = dict(zip(vms, _sizes(path, cols["vcpus"], "vcpus"), strict=True))
        vcpus = np.array([per[n] for n in names])
    util_rows, mem_rows = [], []
    for k in range(len(names)):
        sel = order[bounds[k]:bounds[k + 1]]
        u, _ = _grid(ts[sel], cpu[sel] / 100, start, bins, interval_s)
        m, _ = _grid(ts[sel], mem[sel], start, bins, interval_s)
        util_rows.append(u)
        mem_rows.append(m)
    mem_arr = np.vstack(mem_rows)
    mcap = mem_arr.max(axis=1)
    if "mem_capacity_mib" in cols:
        per = dict(zip(vms, _sizes(path, cols["mem_capacity_mib"], "mem_capacity_mib"), strict=True))
        mcap = np.array([per[n] for n in names])
    mhz = GENERIC_MHZ_PER_VCPU
    return UsageTrace(names, interval_s, vcpus, vcpus * mhz, np.vstack(util_rows) * (vcpus * mhz)[:, None],
                      mcap, mem_arr)


def load_usage(path: Path) -> UsageTrace:
    """A usage trace by its path: a generic ``.csv`` or ``.parquet`` file, else Bitbrains (a directory of
    ``<vm>.csv`` files or a ``.tar.gz``)."""
    if path.suffix in (".csv", ".parquet"):
        return load_generic(path)
    return load_bitbrains(path)


def once_per_file(load: Callable[[Path], T]) -> Callable[[Path], T]:
    """``load`` run once per process for each file while it is unchanged (trainers and tunings build the same days
    many times): the cache is keyed on the file's path, modification time and size, so a history rewritten at the
    same path is read again, and it keeps the latest few files alone."""

    @functools.lru_cache(maxsize=16)
    def at(path: str, mtime_ns: int, size: int) -> T:
        return load(Path(path))

    def cached(path: Path) -> T:
        try:
            st = path.stat()
        except OSError:
            return load(path)  # not there: the loader says so in its own words
        return at(str(path), st.st_mtime_ns, st.st_size)

    return cached


load_usage_once = once_per_file(load_usage)  #: :func:`load_usage`, once per file while it is unchanged
