"""Features of a (VM, host) candidate, from the Cluster model only.

One code path for the simulator and for scanned hosts: a policy trained on
simulated clusters reads the same numbers from a real inventory. The order is the
feature spec stored in every checkpoint; loading refuses a checkpoint whose spec
differs.
"""

from __future__ import annotations

import numpy as np

from llmvirt.model.arrays import expected_util
from llmvirt.model.cluster import Host
from llmvirt.policy.constraints import Limits, Request

FEATURE_SPEC_VERSION = 1
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
)


def pair_features(host: Host, req: Request, vm_util: float, limits: Limits, current: bool = False,
                  exclude_vm: str | None = None) -> np.ndarray:
    """The feature vector of placing (or keeping) a VM on ``host``."""
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
    ], dtype=np.float32)
