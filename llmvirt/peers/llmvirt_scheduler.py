"""llmvirt's own decisions inside a Proxmox CRS case, for the conformance table.

The HA manager's model (:class:`~llmvirt.peers.pve_replay.HaReplay`) asks the same questions it asks
Proxmox's scheduler; this scheduler answers them with what ``llmvirt place`` and ``llmvirt rebalance``
would do on the same cluster:

- a node for a starting, recovered or evacuated guest: ``decide.place`` with the policy's placement
  scorer (the default one for a strategy that has none, such as ``baseline:watcher-wb``), among the
  nodes the case's rules allow;
- a rebalancing migration: the policy's balance strategy (``strategies.resolve``), one move per
  settled round, as Proxmox paces its own.

The case's guests become llmvirt VMs: configured CPUs (rounded up; a guest without a CPU limit takes
the node's CPUs) and memory; in ``dynamic`` mode the measured CPU use is the VM's utilisation, in
``static`` mode llmvirt assumes its usual 50 %. Affinity rules become host pins (the nodes a guest may
go to), and guests bundled by a positive rule stay where they are, since llmvirt has no keep-together
rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmvirt.errors import UsageError
from llmvirt.model.cluster import Cluster, Host, Vm
from llmvirt.peers import pve_crs
from llmvirt.peers.pve_case import MIB, load_case
from llmvirt.peers.pve_crs import Candidate
from llmvirt.peers.pve_replay import GuestState, HaReplay
from llmvirt.policy import decide
from llmvirt.policy.constraints import Limits, Request


def _vcpus(replay: HaReplay, sid: str, node: str) -> int:
    cpu = replay.static.get(sid, pve_crs.Usage(0.0, 0.0)).cpu
    return max(1, math.ceil(cpu)) if cpu > 0 else int(replay.case.nodes[node].maxcpu)


def to_cluster(replay: HaReplay, exclude: str | None = None) -> Cluster:
    """The replay's usable nodes and the guests counted on them, as an llmvirt Cluster."""
    hosts = []
    for name in replay.usable_nodes():
        node = replay.case.nodes[name]
        hosts.append(Host(name=name, uri=f"pve://{name}", cpus=int(node.maxcpu), memory_mib=int(node.maxmem // MIB)))
    by_name = {h.name: h for h in hosts}
    for sid in sorted(replay.ss):
        if sid == exclude:
            continue
        for node in replay.where(sid):
            if node in by_name:
                by_name[node].vms.append(_vm(replay, sid, node))
    return Cluster(hosts)


def cluster_from_case(path: Path) -> Cluster:
    """A Proxmox CRS case's initial state as a Cluster: every node, and the guests configured as
    started on their node (what ``place``/``rebalance --snapshot CASE_DIR`` plan on)."""
    replay = HaReplay(load_case(path))
    replay.online = set(replay.case.nodes)
    for sid, conf in sorted(replay.config.items()):
        if sid not in replay.ss and HaReplay.wants(conf) == "started" and conf.get("node") in replay.case.nodes:
            replay.ss[sid] = GuestState("started", conf["node"])
    return to_cluster(replay)


def _vm(replay: HaReplay, sid: str, node: str) -> Vm:
    vcpus = _vcpus(replay, sid, node)
    mem = int(replay.static.get(sid, pve_crs.Usage(0.0, 0.0)).mem // MIB)
    if mem == 0:
        mem = int(replay.dynamic.get(sid, pve_crs.Usage(0.0, 0.0)).mem // MIB)
    util = None
    if replay.case.crs.mode == "dynamic" and sid in replay.dynamic:
        util = min(1.0, replay.dynamic[sid].cpu / vcpus)
    return Vm(name=sid, uuid=sid, vcpus=vcpus, max_vcpus=vcpus, memory_mib=mem, current_memory_mib=mem,
              cpu_util=util)


@dataclass
class LlmvirtScheduler:
    """llmvirt's placement scorer and balance strategy, asked the HA manager's questions."""

    policy: str | None = None  #: policy spec, None: the default policy
    name: str = "llmvirt (default)"
    limits: Limits = field(default_factory=lambda: Limits(reserved_memory_mib=0))
    _scorer: Any = None
    _strategy: Any = None

    def __post_init__(self) -> None:
        from llmvirt.strategies import registry

        self._strategy = registry.resolve(self.policy, "balance")
        try:
            self._scorer = decide.load_scorer(self.policy)
        except UsageError:  # a balance strategy with no placement scorer of its own: place as the default does
            self._scorer = decide.load_scorer(None)

    def choose(self, replay: HaReplay, sid: str, nodes: list[str]) -> str | None:
        """The best-ranked allowed node for the guest by ``llmvirt place``, or None if none fits."""
        node = replay.ss[sid].node
        cluster = to_cluster(replay, exclude=sid)
        vm = _vm(replay, sid, node if node in replay.case.nodes else nodes[0])
        req = Request(vcpus=vm.vcpus, memory_mib=vm.memory_mib, name=sid, allowed_hosts=tuple(nodes),
                      expected_cpu=vm.cpu_util if vm.cpu_util is not None else 0.5)
        placement = decide.place(cluster, req, self._scorer, decide.Context(self.limits))
        return placement.ranked[0]["host"] if placement.ranked else None

    def rebalance(self, replay: HaReplay) -> tuple[Candidate, float, float] | None:
        """The first move of ``llmvirt rebalance`` on the replay's state, or None."""
        cluster = to_cluster(replay)
        pins: dict[str, tuple[str, ...]] = {}
        targets: dict[str, set[str]] = {}
        for cand in replay.candidates():
            targets.setdefault(cand.sids[0], set()).add(cand.target)
        for host in cluster.hosts:
            for vm in host.vms:
                movable = vm.name in targets and len(replay.bundle(vm.name)) == 1
                allowed = targets.get(vm.name, set()) if movable else set()
                pins[vm.name] = tuple(sorted(allowed | {host.name}))
        ctx = decide.Context(limits=self.limits, host_pins=pins, max_migrations=1)
        plan = self._strategy.plan(cluster, "balance", ctx)
        if not plan.moves:
            return None
        move = plan.moves[0]
        cand = Candidate((move.vm,), move.src, move.dst)
        load = replay.load()
        usages = {sid: replay.usage(sid) for sid in replay.ss}
        return cand, pve_crs.imbalance(load), pve_crs.imbalance(pve_crs.after_move(load, usages, cand))
