"""``place`` and ``rebalance`` decisions on a Cluster: constraints first, then a scorer ranks.

A scorer is either a baseline (``baseline:best-fit``, ``baseline:least-loaded``,
``baseline:first-fit``) or a learned checkpoint. Plans are data: each migration
carries its reason and predicted effect, and nothing here touches a host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from llmvirt.errors import UsageError
from llmvirt.model.action import MIGRATE_EFFECT, Action
from llmvirt.model.arrays import ClusterArrays, expected_util
from llmvirt.model.cluster import Cluster, Host, Vm
from llmvirt.paths import DEFAULT_POLICY, policy_dir  # noqa: F401 - DEFAULT_POLICY re-exported
from llmvirt.policy import index
from llmvirt.policy.constraints import Limits, Request, request_of
from llmvirt.policy.features import FEATURE_SPEC_VERSION, FEATURES, SPECS, recent_peaks
from llmvirt.policy.weights import CheckpointError, NumpyMLP, load_arrays
from llmvirt.sim.power import GENERIC_IDLE_W as IDLE_W
from llmvirt.sim.power import GENERIC_PEAK_W as PEAK_W

HOT = 0.80  #: a host whose expected CPU use is above this is a hotspot (goal balance)
COLD = 0.25  #: a host below this is a consolidation candidate (goal consolidate)
GAIN_MARGIN = 0.05  #: a move must lower the hotter host's CPU use by this much (hysteresis)


class Scorer(Protocol):
    """Scores candidate hosts for a VM; higher is better."""

    name: str

    def scores(self, feats: np.ndarray, hosts: list[Host]) -> np.ndarray:
        """One score per row of ``feats`` (rows follow ``hosts``)."""
        ...


@dataclass
class BaselineScorer:
    """Hand-written scoring rules, the yardsticks for the learned one."""

    rule: str  #: best-fit, least-loaded or first-fit
    name: str = ""  #: display name

    def __post_init__(self) -> None:
        """Validate the rule name."""
        if self.rule not in ("best-fit", "least-loaded", "first-fit"):
            raise UsageError(f"unknown baseline {self.rule!r}: use best-fit, least-loaded or first-fit")
        self.name = self.name or f"baseline:{self.rule}"

    def scores(self, feats: np.ndarray, hosts: list[Host]) -> np.ndarray:
        """best-fit: fullest allocation that still fits; least-loaded: lowest CPU use after; first-fit: order."""
        i = FEATURES.index
        if self.rule == "best-fit":
            return feats[:, i("host_vcpu_alloc_after")] + feats[:, i("host_mem_alloc_after")]
        if self.rule == "least-loaded":
            return -feats[:, i("host_cpu_used_after")]
        return -np.arange(len(hosts), dtype=np.float32)


@dataclass
class LearnedScorer:
    """A trained PlacementScorer loaded from a verified checkpoint, run in numpy (no torch at decision time)."""

    model: NumpyMLP  #: the network's inference
    meta: dict[str, Any]  #: checkpoint metadata
    name: str = "learned"  #: display name

    @property
    def reads_peaks(self) -> bool:
        """True when the network reads the hosts' recent peaks (feature spec 2)."""
        return self.model.n_features > FEATURES.index("host_cpu_peak_after")

    def scores(self, feats: np.ndarray, hosts: list[Host]) -> np.ndarray:
        """The network's scores (a network of an older feature spec reads the columns it knows)."""
        return self.model(feats[..., : self.model.n_features])


def load_scorer(spec: str | None) -> Scorer:
    """``baseline:NAME``, a checkpoint directory, a name under policies/, or None for the default policy."""
    if spec and spec.startswith("baseline:weighted"):
        from llmvirt.policy.arrivals import parse_weighted

        return parse_weighted(spec.split(":", 1)[1])
    if spec and spec.startswith("baseline:"):
        return BaselineScorer(spec.split(":", 1)[1])
    path = policy_dir(spec)
    arrays, meta = load_arrays(path, None, FEATURE_SPEC_VERSION, list(FEATURES), SPECS)
    cfg = meta.get("model", {})
    try:
        model = NumpyMLP(arrays, int(cfg["n_features"]), int(cfg["hidden"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: model parameters missing or wrong: {exc}") from None
    return LearnedScorer(model, meta, name=meta.get("name", path.name))


def _reasons(f: np.ndarray) -> list[str]:
    i = FEATURES.index
    out = [f"CPU use after {100 * f[i('host_cpu_used_after')]:.0f} %",
           f"vCPU allocation after {100 * f[i('host_vcpu_alloc_after')]:.0f} %",
           f"memory allocation after {100 * f[i('host_mem_alloc_after')]:.0f} %"]
    if abs(f[i("host_cpu_peak_after")] - f[i("host_cpu_used_after")]) > 5e-3:
        out.append(f"recent peak after {100 * f[i('host_cpu_peak_after')]:.0f} %")
    if f[i("host_is_empty")]:
        out.append("wakes an idle host")
    return out


@dataclass
class Placement:
    """Ranked feasible hosts and the excluded ones."""

    ranked: list[dict[str, Any]] = field(default_factory=list)  #: host, score, reasons
    excluded: dict[str, str] = field(default_factory=dict)  #: host -> constraint
    policy: str = ""  #: scorer name
    expected_cpu: float | None = None  #: the new VM's expected CPU use the hosts were scored with

    def as_json(self) -> dict[str, Any]:
        """The ``place --json`` document."""
        return {"policy": self.policy, "expected_cpu": self.expected_cpu,
                "chosen": self.ranked[0]["host"] if self.ranked else None, "ranked": self.ranked,
                "excluded": [{"host": h, "constraint": c} for h, c in self.excluded.items()]}


def place(cluster: Cluster, req: Request, scorer: Scorer, ctx: Context | None = None,
          arrays: ClusterArrays | None = None, top: int | None = None) -> Placement:
    """Rank the hosts that may take a new VM (expected CPU use ``req.expected_cpu`` of its vCPUs) under
    ``ctx``'s limits and anti-affinity groups.

    ``arrays`` (built once per snapshot) makes the decision a few array operations; ``top``
    limits how many ranked hosts carry reasons (all by default). ``ctx.history`` (VM uuid -> recorded CPU use)
    gives each host's recent peak (:func:`features.recent_peaks`); without it a host's peak reads as its use now.
    """
    ctx = ctx or Context()
    limits = ctx.limits
    arr = arrays or ClusterArrays.from_cluster(cluster, groups=ctx.groups)
    reason = index.mask(arr, req, limits)
    ok = np.flatnonzero(reason == "")
    out = Placement(excluded={cluster.hosts[i].name: str(reason[i]) for i in np.flatnonzero(reason != "")},
                    policy=scorer.name, expected_cpu=req.expected_cpu)
    if ok.size == 0:
        return out
    peak = ctx.peaks if ctx.peaks is not None else recent_peaks(cluster.hosts, ctx.history) if ctx.history else None
    feats = index.features(arr, req, req.expected_cpu, limits, ok, peak)
    hosts_ok = [cluster.hosts[i] for i in ok]
    s = scorer.scores(feats, hosts_ok)
    order = np.argsort(-s, kind="stable")
    for rank, k in enumerate(order):
        reasons = _reasons(feats[k]) if top is None or rank < top else []
        out.ranked.append({"host": hosts_ok[k].name, "score": round(float(s[k]), 4), "reasons": reasons})
    return out


@dataclass
class Plan:
    """A rebalancing plan: moves, VMs that cannot move, and the predicted cluster effect."""

    goal: str  #: balance or consolidate
    policy: str  #: scorer name
    moves: list[Action] = field(default_factory=list)  #: planned migrations, in order
    unmovable: dict[str, str] = field(default_factory=dict)  #: VM -> reason it must stay
    before: dict[str, float] = field(default_factory=dict)  #: overloaded hosts, imbalance, power
    after: dict[str, float] = field(default_factory=dict)  #: the same after the plan
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  #: VM -> last decision inputs

    def as_json(self) -> dict[str, Any]:
        """The ``rebalance --json`` document."""
        moves = [m.as_json() for m in self.moves]
        return {"goal": self.goal, "policy": self.policy, "dry_run": True, "moves": moves,
                "unmovable": self.unmovable, "predicted": {"before": self.before, "after": self.after}}


def _load(host: Host, skip: str | None = None, add: Vm | None = None) -> float:
    vms = [v for v in host.vms if v.running and v.name != skip]
    cpu = sum(v.vcpus * expected_util(v.cpu_util) for v in vms)
    if add is not None:
        cpu += add.vcpus * expected_util(add.cpu_util)
    return cpu / max(1, host.cpus)


def _power(util: float, active: bool) -> float:
    return IDLE_W + (PEAK_W - IDLE_W) * min(1.0, util) if active else 0.0


def summary(cluster: Cluster, hot: float = HOT) -> dict[str, float]:
    """Overloaded and hot hosts, load imbalance and power of ``cluster`` (a plan's before/after)."""
    if not cluster.hosts:  # every host down or excluded: nothing is loaded and nothing draws power
        return {"overloaded_hosts": 0, "hot_hosts": 0, "imbalance": 0.0, "power_w": 0.0}
    loads = np.array([_load(h) for h in cluster.hosts])
    active = [any(v.running for v in h.vms) for h in cluster.hosts]
    return {"overloaded_hosts": int((loads > 1.0).sum()), "hot_hosts": int((loads > hot).sum()),
            "imbalance": round(float(loads.max() - loads.min()), 4),
            "power_w": round(float(sum(_power(float(u), a) for u, a in zip(loads, active, strict=True))), 1)}


def _apply(cluster: Cluster, vm: Vm, src: Host, dst: Host) -> None:
    src.vms.remove(vm)
    dst.vms.append(vm)


def host_load(host: Host) -> float:
    """A host's expected CPU use (fraction of its CPUs) from its running VMs."""
    return _load(host)


def move(cluster: Cluster, vm: Vm, src: Host, dst: Host, reason: str,
         decision: dict[str, Any] | None = None) -> Action:
    """Move ``vm`` from ``src`` to ``dst`` in ``cluster`` and return the planned migration with its predicted
    effect (``decision``: what it was chosen from, kept for retraining)."""
    sb, db = _load(src), _load(dst)
    _apply(cluster, vm, src, dst)
    sa, da = _load(src), _load(dst)
    pw = (_power(sa, any(v.running for v in src.vms)) + _power(da, True)
          - _power(sb, True) - _power(db, any(v.running and v is not vm for v in dst.vms)))
    effect = dict(zip(MIGRATE_EFFECT, (round(sb, 4), round(sa, 4), round(db, 4), round(da, 4), round(pw, 1)),
                      strict=True))
    return Action.migrate(vm.name, src.name, dst.name, reason, uuid=vm.uuid or None, effect=effect, inputs=decision)


@dataclass(frozen=True)
class Thresholds:
    """When rebalance acts (config ``[rebalance]``)."""

    hot: float = HOT  #: expected CPU use above which a host is relieved (goal balance)
    cold: float = COLD  #: expected CPU use under which a host is emptied (goal consolidate)
    gain_margin: float = GAIN_MARGIN  #: a move must lower the hotter host of the pair by this much
    hot_configured: bool = False  #: the config sets ``hot`` (the balance default's CP-SAT trigger follows it)


@dataclass
class Context:
    """What a strategy decides with besides the cluster (config, flags and history), passed as one."""

    limits: Limits = field(default_factory=Limits)  #: allocation limits and reservations
    groups: dict[str, str] = field(default_factory=dict)  #: VM -> anti-affinity group
    host_pins: dict[str, tuple[str, ...]] = field(default_factory=dict)  #: VM -> the only hosts it may run on
    thresholds: Thresholds = field(default_factory=Thresholds)  #: hot, cold, gain margin
    max_migrations: int = 10  #: at most this many migrations in a plan
    history: dict[str, list[float]] = field(default_factory=dict)  #: VM uuid -> past CPU use, oldest first
    peaks: np.ndarray | None = None  #: each host's recent peak CPU use, CPUs, once per snapshot (None: from history)
    scan_history: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  #: uuid -> (CPUs, host share)


def rebalance(cluster: Cluster, scorer: Scorer, goal: str = "balance", ctx: Context | None = None) -> Plan:
    """A dry-run plan: drain maintenance hosts, relieve hot hosts (balance) or empty cold ones (consolidate).

    ``ctx`` carries the limits, anti-affinity groups, host pinning (config ``[host_pinning]``: the only
    hosts a VM may run on), thresholds and the migration cap. ``cluster`` is left as the plan leaves it.
    """
    if goal not in ("balance", "consolidate"):
        raise UsageError(f"unknown goal {goal!r}: use balance or consolidate")
    run = _drained(cluster, scorer, goal, ctx or Context())
    if goal == "balance":
        run.relieve_hot()
    else:
        run.empty_cold()
    run.plan.after = summary(cluster, ctx.thresholds.hot)
    return run.plan


def drain(cluster: Cluster, scorer: Scorer, goal: str, ctx: Context) -> Plan:
    """The first step of every rebalance alone: every running VM off the hosts in maintenance (``scorer`` ranks
    the destinations). ``cluster`` is left as the plan leaves it."""
    run = _drained(cluster, scorer, goal, ctx)
    run.plan.after = summary(cluster, ctx.thresholds.hot)
    return run.plan


def _drained(cluster: Cluster, scorer: Scorer, goal: str, ctx: Context) -> _Planner:
    run = _Planner(cluster, scorer, ctx, ClusterArrays.from_cluster(cluster, groups=ctx.groups),
                   Plan(goal=goal, policy=scorer.name, before=summary(cluster, ctx.thresholds.hot)))
    run.drain()
    return run


def _pct_above(value: float, limit: float) -> str:
    """``value`` as a percentage with enough decimals to read as above ``limit`` (never "60 % > 60 %")."""
    for digits in range(4):
        text = f"{100 * value:.{digits}f}"
        if float(text) > 100 * limit:
            return f"{text} %"
    return f"{100 * value:.4f} %"


@dataclass
class _Planner:
    """One rebalance: the cluster being edited, its arrays, the scorer, the context and the plan so far."""

    cluster: Cluster
    scorer: Scorer
    ctx: Context
    arrays: ClusterArrays
    plan: Plan
    _vm: dict[int, int] = field(default_factory=dict, init=False)  # id() of a running Vm -> its index in the arrays
    _host: dict[str, int] = field(default_factory=dict, init=False)  # host name -> index

    def __post_init__(self) -> None:
        running = (v for h in self.cluster.hosts for v in h.vms if v.running)  # the arrays' VM order
        self._vm, self._host = {id(v): i for i, v in enumerate(running)}, self.arrays.host_index()

    def _room(self) -> bool:
        return len(self.plan.moves) < self.ctx.max_migrations

    def _shift(self, vm: Vm, dst: Host) -> None:
        self.arrays.move(self._vm[id(vm)], self._host[dst.name])

    def move(self, vm: Vm, src: Host, dst: Host, reason: str) -> None:
        """Add the move to the plan and apply it to the cluster and its arrays."""
        self.plan.moves.append(move(self.cluster, vm, src, dst, reason, self.plan.decisions.get(vm.name)))
        self._shift(vm, dst)

    def best_destination(self, vm: Vm, src: Host) -> Host | None:
        """The scorer's choice among the hosts the constraints allow (never the source)."""
        if vm.has_pci_passthrough:
            return None
        ctx = self.ctx
        req = request_of(vm, ctx.groups.get(vm.name), ctx.host_pins.get(vm.name, ()))
        reason = index.mask(self.arrays, req, ctx.limits)
        reason[self._host[src.name]] = "already_there"
        ok = np.flatnonzero(reason == "")
        if ok.size == 0:
            return None
        feats = index.features(self.arrays, req, expected_util(vm.cpu_util), ctx.limits, ok)
        cands = [self.cluster.hosts[i] for i in ok]
        choice = int(np.argmax(self.scorer.scores(feats, cands)))
        self.plan.decisions[vm.name] = {"candidates": [h.name for h in cands], "chosen": choice,
                                        "features": np.round(feats, 5).tolist()}
        return cands[choice]

    def drain(self) -> None:
        """Move every running VM off hosts in maintenance (passthrough VMs are listed as unmovable)."""
        for src in [h for h in self.cluster.hosts if h.maintenance]:
            for vm in [v for v in src.vms if v.running]:
                if not self._room():
                    break
                if vm.has_pci_passthrough:
                    self.plan.unmovable[vm.name] = "PCI passthrough device: cannot live-migrate"
                    continue
                dst = self.best_destination(vm, src)
                if dst is None:
                    self.plan.unmovable[vm.name] = "no host satisfies its constraints"
                    continue
                self.move(vm, src, dst, f"drain {src.name} (maintenance)")

    def relieve_hot(self) -> None:
        """From the hottest host above ``hot``, the move that lowers the hotter host of the pair most."""
        th, arrays = self.ctx.thresholds, self.arrays
        tried = np.zeros(arrays.n_hosts, dtype=bool)
        while self._room():
            load = arrays.load()
            cand = ~arrays.maintenance & (load > th.hot) & ~tried
            if not cand.any():
                return
            src_i = int(np.argmax(np.where(cand, load, -np.inf)))
            src = self.cluster.hosts[src_i]
            best: tuple[float, Vm, Host] | None = None
            for vm in [v for v in src.vms if v.running]:
                if vm.has_pci_passthrough:
                    self.plan.unmovable.setdefault(vm.name, "PCI passthrough device: cannot live-migrate")
                    continue
                dst = self.best_destination(vm, src)
                if dst is None:
                    continue
                gain = _load(src) - max(_load(src, skip=vm.name), _load(dst, add=vm))
                if gain > th.gain_margin and (best is None or gain > best[0]):
                    best = (gain, vm, dst)
            if best is None:
                tried[src_i] = True
                continue
            gain, vm, dst = best
            self.move(vm, src, dst, f"{src.name} expected CPU {_pct_above(_load(src), th.hot)} > {100 * th.hot:.0f} %; "
                                    f"hottest of the pair drops by {100 * gain:.0f} points")

    def empty_cold(self) -> None:
        """Empty hosts under ``cold`` whose every VM fits elsewhere under ``hot`` (all or none of a host)."""
        th, cluster = self.ctx.thresholds, self.cluster
        for src in sorted((h for h in cluster.hosts if not h.maintenance and 0 < _load(h) < th.cold), key=_load):
            vms = [v for v in src.vms if v.running]
            if any(v.has_pci_passthrough for v in vms) or len(self.plan.moves) + len(vms) > self.ctx.max_migrations:
                continue
            staged: list[tuple[Vm, Host]] = []
            for vm in vms:
                dst = self.best_destination(vm, src)
                if dst is None or dst.maintenance or _load(dst, add=vm) > th.hot or not any(
                        v.running for v in dst.vms):
                    break
                staged.append((vm, dst))
                _apply(cluster, vm, src, dst)
                self._shift(vm, dst)
            for vm, dst in reversed(staged):
                _apply(cluster, vm, dst, src)
                self._shift(vm, src)
            if len(staged) == len(vms):
                for vm, dst in staged:
                    self.move(vm, src, dst,
                              f"empty {src.name} (expected CPU {100 * _load(src):.0f} % < {100 * th.cold:.0f} %)")
