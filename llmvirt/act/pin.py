"""vCPU pinning on libvirt, live and in the persistent config."""

from __future__ import annotations

import libvirt

from llmvirt.act.runner import Env, running_here
from llmvirt.model.action import DONE, FAILED, Action, Outcome
from llmvirt.observe.domain_xml import parse_domain


class Pin:
    """The pinning runner: running here and the CPUs exist; pin; read the live XML back."""

    def pre_condition(self, a: Action, env: Env) -> Outcome | None:
        """Skipped when the VM does not run on its host; failed when a CPU does not exist there."""
        dom = running_here(a, env)
        if isinstance(dom, Outcome):
            return dom
        ncpu = env.hosts.conn(a.src).getInfo()[2]
        bad = [c for c in a.pins.values() if not c or max(c) >= ncpu]
        if bad or (a.emulator and max(a.emulator) >= ncpu):
            return Outcome(FAILED, f"CPUs {bad[0] if bad else a.emulator} do not exist on {a.src} ({ncpu} CPUs)")
        return None

    def execute(self, a: Action, env: Env) -> Outcome:
        """Pin each vCPU (and the emulator threads) live and in the config."""
        conn = env.hosts.conn(a.src)
        dom, ncpu = conn.lookupByUUIDString(a.uuid), conn.getInfo()[2]
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
        for vcpu, cpus in a.pins.items():
            dom.pinVcpuFlags(vcpu, tuple(i in cpus for i in range(ncpu)), flags)
        if a.emulator:
            dom.pinEmulator(tuple(i in a.emulator for i in range(ncpu)), flags)
        return Outcome(DONE, f"{a.vm} pinned {a.pins}")

    def post_condition(self, a: Action, env: Env, outcome: Outcome) -> Outcome:
        """The live XML shows the pinning (libvirt drops a ``<vcpupin>`` that names every CPU)."""
        conn = env.hosts.conn(a.src)
        live = parse_domain(conn.lookupByUUIDString(a.uuid).XMLDesc(0)).pinning
        every = tuple(range(conn.getInfo()[2]))
        if any(live.get(v, every) != tuple(sorted(c)) for v, c in a.pins.items()):
            return Outcome(FAILED, f"pinning not as asked after applying: {live}")
        return outcome
