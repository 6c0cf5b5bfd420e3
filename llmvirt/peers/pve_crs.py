"""Proxmox VE's cluster resource scheduler (CRS), written from its documented behaviour.

This is llmvirt's ``baseline:proxmox-crs``: the arithmetic Proxmox VE's HA manager uses to choose a
node for a starting or recovered guest, and its automatic rebalancing (PVE 9.2). It is written from
Proxmox's documentation and checked against Proxmox's own CRS test cases (``llmvirt peers pve-crs``,
:mod:`llmvirt.peers.pve_case`); no Proxmox code is used.

- **Node usage.** ``static`` mode counts each guest's configured CPUs and memory (a guest with no CPU
  limit counts as the whole node's CPUs); ``dynamic`` mode counts what each guest uses.
- **Choosing a node** (start, recovery, evacuation): for every candidate node, the cluster's loads
  if the guest ran there: the root mean square and the maximum of the nodes' CPU shares and of their
  memory shares (each plus 1, so tiny differences do not dominate). The candidates are ranked by
  TOPSIS with weights 1 : 2 : 5 : 10 (memory weighs more: it cannot be overcommitted).
- **Imbalance**: the coefficient of variation (population) of the nodes' load, where a node's load is
  its CPU share plus its memory share.
- **Automatic rebalancing**: when the imbalance stays above a threshold (0.3) for a hold duration
  (3 rounds), the best single migration is chosen, ``bruteforce`` (the lowest imbalance after the
  move) or ``topsis`` (ranked on the four criteria of choosing a node, after the move), and issued
  only if it lowers the imbalance by at least a margin (10 %, relative).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: TOPSIS weights for (RMS CPU, max CPU, RMS memory, max memory); all are to be minimised.
START_WEIGHTS = np.array([1.0, 2.0, 5.0, 10.0])
#: Rebalancing's TOPSIS ranks migrations on the start criteria of the state after the move.
REBALANCE_WEIGHTS = np.array([1.0, 2.0, 5.0, 10.0])
DEFAULT_THRESHOLD = 0.3  #: imbalance above which rebalancing is considered
DEFAULT_HOLD = 3  #: rounds the imbalance must stay above the threshold
DEFAULT_MARGIN = 0.1  #: least relative improvement of the imbalance a migration must bring
TIE = 1e-9  #: scores and imbalances closer than this are equal (the first candidate wins)


@dataclass
class Node:
    """One node: its capacity."""

    name: str
    maxcpu: float
    maxmem: float


@dataclass
class Usage:
    """What one guest puts on a node: CPUs (cores) and memory (bytes). ``cpu == 0`` in static mode
    means "no limit" and counts as the node's CPUs."""

    cpu: float
    mem: float


@dataclass
class Load:
    """Every node's load: CPU cores and memory bytes counted on it."""

    nodes: list[Node]
    cpu: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mem: np.ndarray = field(default_factory=lambda: np.zeros(0))
    unlimited_cpu: bool = True  #: static mode: cpu 0 means the whole node

    def __post_init__(self) -> None:
        if len(self.cpu) != len(self.nodes):
            self.cpu = np.zeros(len(self.nodes))
            self.mem = np.zeros(len(self.nodes))
        self._pos = {n.name: i for i, n in enumerate(self.nodes)}

    def index(self, name: str) -> int:
        """The position of node ``name``."""
        return self._pos[name]

    def cpu_added(self, i: int, usage: Usage) -> float:
        """The CPU a guest adds to node ``i``."""
        if self.unlimited_cpu and usage.cpu == 0:
            return self.nodes[i].maxcpu
        return usage.cpu

    def add(self, name: str, usage: Usage, sign: float = 1.0) -> None:
        """Count (or with ``sign=-1`` uncount) a guest on node ``name``."""
        i = self.index(name)
        self.cpu[i] += sign * self.cpu_added(i, usage)
        self.mem[i] += sign * usage.mem

    def shares(self) -> tuple[np.ndarray, np.ndarray]:
        """(CPU share, memory share) of every node."""
        maxcpu = np.array([n.maxcpu for n in self.nodes], dtype=float)
        maxmem = np.array([n.maxmem for n in self.nodes], dtype=float)
        return self.cpu / maxcpu, self.mem / maxmem

    def copy(self) -> Load:
        """An independent copy."""
        return Load(self.nodes, self.cpu.copy(), self.mem.copy(), self.unlimited_cpu)


def topsis(matrix: Sequence[Sequence[float]] | np.ndarray, weights: np.ndarray) -> np.ndarray:
    """TOPSIS closeness (0..1, higher is better) of each row, every criterion to be minimised.

    Columns are normalised by their Euclidean norm and weighted (weights normalised to sum 1); the
    score is the distance to the worst point over the sum of the distances to the best and the worst.
    Rows that are all equal score 0."""
    m = np.asarray(matrix, dtype=float)
    norm = np.sqrt((m**2).sum(axis=0))
    norm[norm == 0] = 1.0
    x = m / norm * (weights / weights.sum())
    best, worst = x.min(axis=0), x.max(axis=0)
    d_best = np.sqrt(((x - best) ** 2).sum(axis=1))
    d_worst = np.sqrt(((x - worst) ** 2).sum(axis=1))
    total = d_best + d_worst
    return np.where(total > 0, d_worst / np.where(total > 0, total, 1.0), 0.0)


def criteria(load: Load) -> list[float]:
    """The four start criteria of a cluster state: 1 + RMS and 1 + max of CPU and memory shares."""
    cpu, mem = load.shares()
    return [
        1.0 + float(np.sqrt((cpu**2).mean())),
        1.0 + float(cpu.max()),
        1.0 + float(np.sqrt((mem**2).mean())),
        1.0 + float(mem.max()),
    ]


def start_scores(load: Load, usage: Usage, candidates: Iterable[str]) -> dict[str, float]:
    """TOPSIS score (higher is better) of starting a guest with ``usage`` on each candidate node."""
    names = list(candidates)
    if not names:
        return {}
    rows = []
    for name in names:
        after = load.copy()
        after.add(name, usage)
        rows.append(criteria(after))
    scores = topsis(rows, START_WEIGHTS)
    return {name: float(s) for name, s in zip(names, scores, strict=True)}


def best_node(load: Load, usage: Usage, candidates: Iterable[str]) -> str | None:
    """The best-scored candidate; ties go to the first by name."""
    scores = start_scores(load, usage, candidates)
    if not scores:
        return None
    top = max(scores.values())
    return sorted(n for n, s in scores.items() if s >= top - TIE)[0]


def imbalance(load: Load) -> float:
    """Coefficient of variation of the nodes' load (CPU share + memory share); 0 for an idle cluster or none."""
    cpu, mem = load.shares()
    total = cpu + mem
    mean = float(total.mean()) if total.size else 0.0
    return float(total.std() / mean) if mean > 0 else 0.0


@dataclass(frozen=True)
class Candidate:
    """One rebalancing migration: a bundle of guests (a guest and those that must stay with it)
    moving together from one node to another."""

    sids: tuple[str, ...]
    source: str
    target: str


@dataclass(frozen=True)
class RebalanceChoice:
    """The chosen migration, the imbalance now and after it, and whether it clears the margin."""

    candidate: Candidate
    before: float
    after: float
    accepted: bool


def after_move(load: Load, usages: Mapping[str, Usage], cand: Candidate) -> Load:
    """The cluster's load after ``cand``."""
    after = load.copy()
    for sid in cand.sids:
        after.add(cand.source, usages[sid], -1.0)
        after.add(cand.target, usages[sid])
    return after


def _max_without(values: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """For each pair (i, j), the largest of ``values`` at indices other than i and j (0 if none)."""
    top = np.argsort(-values, kind="stable")[:3]
    out = np.zeros(len(i))
    done = np.zeros(len(i), dtype=bool)
    for k in top:
        take = ~done & (i != k) & (j != k)
        out[take] = values[k]
        done |= take
    return out


def move_effects(
    load: Load, usages: Mapping[str, Usage], candidates: Sequence[Candidate]
) -> tuple[np.ndarray, np.ndarray]:
    """(imbalance after each candidate, the four start criteria after each), computed together:
    a move changes two nodes, so sums and maxima update in closed form."""
    names = [n.name for n in load.nodes]
    pos = {n: k for k, n in enumerate(names)}
    n = len(candidates)
    src = np.empty(n, dtype=np.int64)
    dst = np.empty(n, dtype=np.int64)
    dcpu_s, dmem_s, dcpu_d, dmem_d = (np.zeros(n) for _ in range(4))
    for c, cand in enumerate(candidates):
        s, d = pos[cand.source], pos[cand.target]
        src[c], dst[c] = s, d
        for sid in cand.sids:
            u = usages[sid]
            dcpu_s[c] += load.cpu_added(s, u)
            dcpu_d[c] += load.cpu_added(d, u)
            dmem_s[c] += u.mem
            dmem_d[c] += u.mem
    maxcpu = np.array([x.maxcpu for x in load.nodes], dtype=float)
    maxmem = np.array([x.maxmem for x in load.nodes], dtype=float)
    cpu, mem = load.cpu / maxcpu, load.mem / maxmem
    cs, cd = cpu[src] - dcpu_s / maxcpu[src], cpu[dst] + dcpu_d / maxcpu[dst]
    ms, md = mem[src] - dmem_s / maxmem[src], mem[dst] + dmem_d / maxmem[dst]
    h = len(names)
    total = cpu + mem
    t1, t2 = total.sum(), (total**2).sum()
    ts, td = cs + ms, cd + md
    s1 = t1 - total[src] - total[dst] + ts + td
    s2 = t2 - total[src] ** 2 - total[dst] ** 2 + ts**2 + td**2
    mean = s1 / h
    var = np.maximum(s2 / h - mean**2, 0.0)
    imb = np.where(mean > 0, np.sqrt(var) / np.where(mean > 0, mean, 1.0), 0.0)
    rms_c = np.sqrt(np.maximum((cpu**2).sum() - cpu[src] ** 2 - cpu[dst] ** 2 + cs**2 + cd**2, 0.0) / h)
    rms_m = np.sqrt(np.maximum((mem**2).sum() - mem[src] ** 2 - mem[dst] ** 2 + ms**2 + md**2, 0.0) / h)
    max_c = np.maximum(_max_without(cpu, src, dst), np.maximum(cs, cd))
    max_m = np.maximum(_max_without(mem, src, dst), np.maximum(ms, md))
    crit = np.stack([1.0 + rms_c, 1.0 + max_c, 1.0 + rms_m, 1.0 + max_m], axis=1)
    return imb, crit


def choose_rebalance(
    load: Load,
    usages: Mapping[str, Usage],
    candidates: Sequence[Candidate],
    method: str = "bruteforce",
    margin: float = DEFAULT_MARGIN,
) -> RebalanceChoice | None:
    """The migration automatic rebalancing would issue, or None when there is no candidate.

    ``bruteforce`` takes the lowest imbalance after the move, ``topsis`` the best TOPSIS score on the
    start criteria of the state after the move (ties: the first candidate, in the order given). The
    choice is accepted when it lowers the imbalance by at least ``margin``, relative."""
    if not candidates:
        return None
    before = imbalance(load)
    imbalances, rows = move_effects(load, usages, candidates)
    if method == "topsis":
        scores = topsis(rows, REBALANCE_WEIGHTS)
        pick = int(np.flatnonzero(scores >= scores.max() - TIE)[0])
    else:
        pick = int(np.flatnonzero(imbalances <= imbalances.min() + TIE)[0])
    after = float(imbalances[pick])
    accepted = before > 0 and (before - after) / before >= margin
    return RebalanceChoice(candidates[pick], before, after, accepted)
