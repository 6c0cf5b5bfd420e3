"""llmvirt: a hypervisor management layer for libvirt/KVM fleets.

The public API is re-exported here; the exception tree is documented in
:mod:`llmvirt.errors`.
"""

import os

# llmvirt's matrices are small (a row per VM or host): a threaded BLAS gains nothing on them, and while the
# simulations of training and the benchmarks run side by side its spinning threads made a step with the
# demand forecast 3x slower (bench/RESULTS.md). So one BLAS thread, unless the operator set another; it is
# read when numpy loads, which llmvirt never does before this line.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from llmvirt.errors import (  # noqa: E402 - after the thread setting, which must precede numpy
    DomainGone,
    HostError,
    HostTimeout,
    HostUnreachable,
    LlmvirtError,
    OperationFailed,
    StoreError,
    UsageError,
)

_MODEL = {"Balloon", "Cluster", "Gpu", "GpuAttachment", "Host", "MdevType", "NumaCell", "NvmlGpu", "Vm"}
_LAZY = {"ScanResult", "scan_host", "scan_hosts"}  # need libvirt: imported on first use only


def __getattr__(name: str) -> object:
    """The model and the scan, imported on first use: a command that needs neither starts without them."""
    if name in _MODEL:
        from llmvirt.model import cluster

        return getattr(cluster, name)
    if name in _LAZY:
        from llmvirt.observe import inventory

        return getattr(inventory, name)
    raise AttributeError(name)


__version__ = "0.1.0"

__all__ = [
    "Balloon", "Cluster", "DomainGone", "Gpu", "GpuAttachment", "Host", "HostError", "HostTimeout",
    "HostUnreachable", "LlmvirtError", "MdevType", "NumaCell", "NvmlGpu", "OperationFailed", "ScanResult",
    "StoreError", "UsageError", "Vm", "scan_host", "scan_hosts",
]
