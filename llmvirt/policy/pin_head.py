"""The pinning head: per VM, choose shared, compact in a NUMA cell (which one), or spread.

VMs of a host are decided one at a time, busiest first; each candidate pinning is described by
features of the VM (vCPU demand now and at its recent peak, vCPUs, memory) and of the host as
already assigned (per-cell load before and after, free memory, the candidate's remote-memory
share). A small MLP scores the candidates; the best one is taken and the host state updated.
Trained by imitating a look-ahead planner in the pinning scenario (:mod:`llmvirt.learn.train_pin`).
On real hosts the same code reads the topology and the VMs' history from a scan and the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llmvirt.model.action import Action
from llmvirt.model.cluster import Cluster, Host, Vm
from llmvirt.model.usage import cpu_fraction
from llmvirt.policy.checkpoint import HeadSpec
from llmvirt.sim.numa import REMOTE_PENALTY, SHARED, SPREAD, Guests, Pinning, Topology, _water_fill, repin_pays

PIN_FEATURES = ("is_shared", "is_compact", "is_spread", "remote", "vm_now", "vm_peak", "vm_vcpus", "load_before",
                "load_after", "host_load", "mem_frac")
PIN_SPEC_VERSION = 1
PEAK_WINDOW = 12  #: steps of 300 s in the "recent peak" (one hour)


class PinScorer(nn.Module):
    """MLP: candidate features -> one score per candidate pinning."""

    def __init__(self, n_features: int = len(PIN_FEATURES), hidden: int = 32) -> None:
        """Layers sized by ``n_features`` and ``hidden``."""
        super().__init__()
        self.n_features, self.hidden = n_features, hidden
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores, shape (..., candidates)."""
        return self.net(x).squeeze(-1)

    def config(self) -> dict[str, int]:
        """Constructor parameters, stored in the checkpoint metadata."""
        return {"n_features": self.n_features, "hidden": self.hidden}


SPEC = HeadSpec("pin", PIN_SPEC_VERSION, PIN_FEATURES, lambda c: PinScorer(int(c["n_features"]), int(c["hidden"])))


def candidates(topo: Topology) -> list[int]:
    """Pinning codes a VM may get on this topology."""
    return [SHARED, *range(topo.cells)] + ([SPREAD] if topo.cells > 1 else [])


@dataclass
class HostState:
    """Load already assigned on a host while its VMs are decided one by one."""

    topo: Topology  #: the host's layout
    cell_load: np.ndarray = field(init=False)  #: busy vCPUs pinned to each cell (peak demand)
    shared_load: float = 0.0  #: busy vCPUs floating over the host
    cell_mem: np.ndarray = field(init=False)  #: memory of cell-pinned VMs per cell, MiB

    def __post_init__(self) -> None:
        """Start empty."""
        self.cell_load = np.zeros(self.topo.cells)
        self.cell_mem = np.zeros(self.topo.cells)

    def utilisation(self, extra_cell: np.ndarray | None = None, extra_shared: float = 0.0) -> np.ndarray:
        """Per-cell utilisation with the shared load water-filled in."""
        cap = np.full(self.topo.cells, float(self.topo.cpus_per_cell))
        load = self.cell_load + (0.0 if extra_cell is None else extra_cell)
        return (load + _water_fill(load, cap, self.shared_load + extra_shared)) / cap

    def add(self, code: int, peak: float, mem: float) -> None:
        """Record a decision."""
        if code == SHARED:
            self.shared_load += peak
        elif code == SPREAD:
            self.cell_load += peak / self.topo.cells
        else:
            self.cell_load[code] += peak
            self.cell_mem[code] += mem


def candidate_features(state: HostState, now: float, peak: float, vcpus: int, mem: float) -> np.ndarray:
    """Features of every candidate pinning of one VM, (candidates, len(PIN_FEATURES))."""
    topo = state.topo
    k, per = topo.cells, float(topo.cpus_per_cell)
    before = state.utilisation()
    host = float(before.mean())
    rows = []
    for code in candidates(topo):
        extra = np.zeros(k)
        if code == SHARED:
            after = state.utilisation(extra_shared=peak)
            b, a, remote = host, float(after.mean()), (k - 1) / k
        elif code == SPREAD:
            extra[:] = peak / k
            after = state.utilisation(extra)
            b, a, remote = float(before.max()), float(after.max()), (k - 1) / k
        else:
            extra[code] = peak
            after = state.utilisation(extra)
            over = max(0.0, state.cell_mem[code] + mem - topo.mem_per_cell_mib)
            b, a, remote = float(before[code]), float(after[code]), min(1.0, over / max(mem, 1.0))
        rows.append([code == SHARED, code >= 0, code == SPREAD, remote, now / per, peak / per, vcpus / per, b, a,
                     host, mem / topo.mem_per_cell_mib])
    return np.asarray(rows, dtype=np.float32)


Chooser = Callable[[np.ndarray, int], int]  #: (candidate features, VM index) -> chosen candidate index


def assign(topo: Topology, now: np.ndarray, peak: np.ndarray, vcpus: np.ndarray, mem: np.ndarray,
           choose: Chooser) -> np.ndarray:
    """Decide every VM of one host, busiest first; returns the pinning codes."""
    state = HostState(topo)
    codes = np.full(now.size, SHARED, dtype=np.int64)
    cands = candidates(topo)
    for v in np.argsort(-peak, kind="stable"):
        i = choose(candidate_features(state, float(now[v]), float(peak[v]), int(vcpus[v]), float(mem[v])), int(v))
        codes[v] = cands[i]
        state.add(cands[i], float(peak[v]), float(mem[v]))
    return codes


STICKY_HORIZON = 288  #: a re-pin must pay for its move within a day of 300 s steps


class PinHead:
    """A trained pinning scorer, sticky: a host's pinnings change only when the change pays for its
    move in the contention model (:func:`llmvirt.sim.numa.repin_pays`) within ``sticky_horizon`` steps."""

    def __init__(self, model: PinScorer, meta: dict | None = None) -> None:
        """Wrap ``model``; the remote-memory penalty and its source come from ``meta`` (``remote_penalty``,
        ``remote_penalty_source``), else the contention model's assumed constant."""
        self.model, self.meta = model, meta or {}
        self.remote_penalty = float(self.meta.get("remote_penalty", REMOTE_PENALTY))
        self.remote_penalty_source = str(self.meta.get("remote_penalty_source", "assumed (llmvirt/sim/numa.py)"))
        self.sticky_horizon = int(self.meta.get("sticky_horizon", STICKY_HORIZON))

    def choose(self, feats: np.ndarray, _vm: int) -> int:
        """The best-scoring candidate."""
        with torch.no_grad():
            return int(self.model(torch.from_numpy(feats)).argmax())


def load(directory: Path | str) -> PinHead:
    """The pinning head of the policy in ``directory`` (verified like every checkpoint)."""
    from llmvirt.policy import checkpoint

    model, meta = checkpoint.load_head(Path(directory), SPEC)
    return PinHead(model, meta)  # type: ignore[arg-type]


def cpuset(host: Host, code: int, vcpu: int, reserved: set[int]) -> tuple[int, ...]:
    """Host CPUs for one vCPU under a pinning code."""
    cells = host.numa_cells
    if code == SHARED:
        return tuple(sorted(c for cell in cells for c in cell.cpus if c not in reserved))
    cell = cells[vcpu % len(cells)] if code == SPREAD else cells[code]
    return tuple(c for c in cell.cpus if c not in reserved)


def plan(cluster: Cluster, history: dict[str, list[tuple[float, float, float]]], head: PinHead,
         reserved_cpus: int = 0) -> tuple[list[Action], dict[str, str]]:
    """Pinnings for real hosts chosen by the head: a pin action for each VM whose pinning changes, and
    VMs left alone with the reason. ``history``: per VM uuid, (time s, memory
    used MiB, CPU seconds) samples, oldest first (:func:`llmvirt.store.snapshots.vm_usage_history`)."""
    out: list[Action] = []
    held: dict[str, str] = {}
    names = {SHARED: "shared", SPREAD: "spread"}
    for host in cluster.hosts:
        vms = [v for v in host.vms if v.running]
        if not vms or not host.numa_cells:
            continue
        cells = host.numa_cells
        topo = Topology(len(cells), min(len(c.cpus) for c in cells), float(min(c.memory_mib for c in cells)))
        now = np.array([(v.cpu_util or 0.0) * v.vcpus for v in vms])
        peak = np.array([max(now[i], _peak_busy(history.get(v.uuid, []))) for i, v in enumerate(vms)])
        vcpus, mem = np.array([v.vcpus for v in vms]), np.array([float(v.memory_mib) for v in vms])
        codes = assign(topo, now, peak, vcpus, mem, head.choose)
        old = np.array([code_of(host, v) for v in vms])
        no_ded = np.zeros(len(vms), dtype=bool)
        # stickiness is about NUMA placement: on one cell every code places alike (a cpuset correction,
        # e.g. reserved CPUs changing, is not a re-pin the model could price)
        moved = (codes != old) if topo.cells > 1 else np.zeros(len(vms), dtype=bool)
        if head.sticky_horizon and moved.any() and not repin_pays(
                topo, Guests(now, vcpus, mem), Pinning(old, no_ded), Pinning(codes, no_ded), head.sticky_horizon,
                head.remote_penalty):
            for v, c, o in zip(vms, codes, old, strict=True):
                if c != o:
                    held[v.name] = (f"re-pinning {host.name} would not pay for its moves within "
                                    f"{head.sticky_horizon} steps (remote penalty {head.remote_penalty:g}, "
                                    f"{head.remote_penalty_source})")
            continue
        reserved = set(range(reserved_cpus))
        for i, (v, code) in enumerate(zip(vms, codes, strict=True)):
            pins = {i: cpuset(host, int(code), i, reserved) for i in range(v.vcpus)}
            if any(not c for c in pins.values()):
                held[v.name] = f"no CPU of {host.name} left for {names.get(int(code), f'cell {code}')}"
                continue
            full = cpuset(host, SHARED, 0, set())
            current = {i: v.pinning.get(i, full) for i in range(v.vcpus)}
            if current == pins:
                continue
            label = names.get(int(code), f"compact in cell {code}")
            why = f"head: {label} (busy {now[i]:.2f}, peak {peak[i]:.2f} vCPUs)"
            out.append(Action.pin(v.name, host.name, pins, why, uuid=v.uuid))
    return out, held


def code_of(host: Host, vm: Vm) -> int:
    """A VM's current pinning as a code: a NUMA cell when every vCPU is pinned inside it, spread when
    vCPU i is pinned inside cell i mod cells, else shared (floating, libvirt's default)."""
    cells = [set(c.cpus) for c in host.numa_cells]
    if not vm.pinning or not cells:
        return SHARED
    sets = [set(vm.pinning.get(i, ())) for i in range(vm.vcpus)]
    if any(not s for s in sets):
        return SHARED
    for k, cell in enumerate(cells):
        if all(s <= cell for s in sets):
            return k
    if len(cells) > 1 and all(s <= cells[i % len(cells)] for i, s in enumerate(sets)):
        return SPREAD
    return SHARED


def _peak_busy(samples: list[tuple[float, float, float]], window_s: float = 3600.0) -> float:
    """Busiest vCPU count between samples over the last ``window_s`` seconds."""
    if len(samples) < 2:
        return 0.0
    end = samples[-1][0]
    rates = [cpu_fraction(int(a[2] * 1e9), int(b[2] * 1e9), b[0] - a[0], 1)
             for a, b in zip(samples, samples[1:], strict=False) if b[0] >= end - window_s]
    return max((r for r in rates if r is not None), default=0.0)
