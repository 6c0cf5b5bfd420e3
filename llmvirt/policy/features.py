"""Features of a (VM, host) candidate, from the Cluster model only.

One code path for the simulator and for scanned hosts: a policy trained on
simulated clusters reads the same numbers from a real inventory. The order is the
feature spec stored in every checkpoint; loading refuses a checkpoint whose spec
differs.
"""

from __future__ import annotations

import itertools

import numpy as np

from llmvirt.model.arrays import expected_util
from llmvirt.model.cluster import Host
from llmvirt.model.usage import PEAK_QUANTILE, PEAK_SCANS
from llmvirt.policy.constraints import Limits, Request

FEATURE_SPEC_VERSION = 2
FEATURES = (
    "host_cpu_used",  # CPU in use / host CPUs, before the VM
    "host_cpu_used_after",  # ... after adding the VM's expected use
    "host_vcpu_alloc_after",  # allocated vCPUs after / (CPUs x allocation ratio)
    "host_mem_alloc_after",  # allocated memory after / (memory x allocation ratio)
    "host_vm_count",  # VMs on the host / 32
    "host_is_empty",  # 1 when no VM runs there (placing wakes it up)
    "vm_vcpus_share",  # VM vCPUs / host CPUs
    "vm_mem_share",  # VM memory / host memory
    "vm_cpu_expected",  # VM's expected CPU use as a fraction of its vCPUs
    "host_cpu_headroom_after",  # 1 - host_cpu_used_after, clipped at -1
    "is_current_host",  # 1 for the VM's current host (the "stay" action)
    "host_cpu_peak_after",  # the host's recent peak CPU use (PEAK_QUANTILE of its last day) + the VM's, / CPUs
)
SPECS = {1: FEATURES[:11], 2: FEATURES}
"""Every feature spec a placement checkpoint may declare: spec 1 (no host history) is spec 2 less its last
column, so a scorer trained on it reads the first 11 columns of today's features and decides as before."""


def spec_of(n_features: int) -> tuple[int, list[str]]:
    """The feature spec (version, names) of a placement network reading ``n_features`` columns."""
    for version, names in SPECS.items():
        if len(names) == n_features:
            return version, list(names)
    raise ValueError(f"no placement feature spec has {n_features} features")


def pair_features(host: Host, req: Request, vm_util: float, limits: Limits, current: bool = False,
                  exclude_vm: str | None = None) -> np.ndarray:
    """The feature vector of placing (or keeping) a VM on ``host``, without history (the host's recent peak
    reads as its use now; :func:`llmvirt.policy.index.host_features` takes the peaks)."""
    others = [v for v in host.vms if v.running and v.name != exclude_vm]
    cpus = max(1, host.cpus)
    mem = max(1, host.memory_mib)
    used = sum(v.vcpus * expected_util(v.cpu_util) for v in others) / cpus
    add = req.vcpus * vm_util / cpus
    vcpu_alloc = (sum(v.vcpus for v in others) + req.vcpus) / (cpus * limits.cpu_allocation_ratio)
    mem_alloc = (sum(v.balloon_mib for v in others) + req.memory_mib) / (mem * limits.ram_allocation_ratio)
    return np.array([
        used, used + add, vcpu_alloc, mem_alloc, len(others) / 32, float(not others),
        req.vcpus / cpus, req.memory_mib / mem, vm_util, max(-1.0, 1.0 - used - add), float(current),
        used + add,
    ], dtype=np.float32)


def recent_peaks(hosts: list[Host], history: dict[str, list[float]]) -> np.ndarray:
    """Each host's recent peak CPU use, CPUs: :data:`PEAK_QUANTILE` of the summed use of its running VMs (vCPUs x their
    recorded share, ``history``: VM uuid -> use, oldest first) over the last :data:`PEAK_SCANS` intervals, newest
    aligned, over as many intervals as its longest-recorded VM has; NaN where none of its VMs has history (placement
    then reads its use now). Once per snapshot, not per decision (bench/policy_latency.py times it)."""
    rows, series, vcpus = [], [], []
    for i, host in enumerate(hosts):
        for v in host.vms:
            s = history.get(v.uuid) if v.running else None
            if s:
                rows.append(i)
                series.append(s[-PEAK_SCANS:])
                vcpus.append(v.vcpus)
    out = np.full(len(hosts), np.nan)
    if not rows:
        return out
    lengths = np.fromiter(map(len, series), dtype=np.int64, count=len(series))
    width = int(lengths.max())
    flat = np.fromiter(itertools.chain.from_iterable(series), dtype=float, count=int(lengths.sum()))
    flat *= np.repeat(np.asarray(vcpus, dtype=float), lengths)
    within = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # index in its own series
    col = width - np.repeat(lengths, lengths) + within  # newest sample in the last column
    cell = np.repeat(np.asarray(rows, dtype=np.int64), lengths) * width + col
    total = np.bincount(cell, weights=flat, minlength=len(hosts) * width).reshape(len(hosts), width)
    span = np.zeros(len(hosts), dtype=np.int64)
    np.maximum.at(span, rows, lengths)
    for n in np.unique(span[span > 0]):
        these = np.flatnonzero(span == n)
        out[these] = np.quantile(total[these, width - n:], PEAK_QUANTILE, axis=1)
    return out
