"""Put a lab back as ``lab up`` left it (``llmvirt lab reset``).

After an experiment (or a test) an operator wants the starting point again without rebuilding the
lab: every daemon alive, every guest running once, unpaused, on the host it started on, its balloon
at its maximum, its vCPUs and emulator threads floating over every host CPU, its starting load, and
no lab host in maintenance. The end-to-end tests reset before each test, so none depends on what
another left behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import libvirt
from sqlalchemy import Engine

from llmvirt.errors import UsageError, quiet_libvirt
from llmvirt.lab import daemons
from llmvirt.lab.daemons import LabError
from llmvirt.lab.lab import LabState, load, starting_load
from llmvirt.observe.domain_xml import parse_domain
from llmvirt.store import registry

quiet_libvirt()  # libvirt prints no error of its own: llmvirt reports them

LIVE_AND_CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
MOVE_BACK = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE


def reset(lab_dir: Path, engine: Engine | None = None, say: Any = print) -> list[str]:
    """Reset the lab in ``lab_dir``; returns one line per change made (none when it was as started)."""
    state = LabState.load(lab_dir)
    if state is None:
        raise UsageError(f"no lab in {lab_dir}: run `llmvirt lab up` first")
    changes: list[str] = []
    for h in state.hosts:
        if not all(daemons.pid_is(daemons.read_pid(h.pidfile(d)) or 0, d) for d in ("libvirtd", "virtlogd")):
            daemons.restart_host(h)
            changes.append(f"{h.name}: daemons restarted")
        if engine is not None and registry.get_host(engine, h.name).maintenance:
            registry.set_maintenance(engine, h.name, False)
            changes.append(f"{h.name}: maintenance off")
    conns = {h.name: libvirt.open(h.uri) for h in state.hosts}
    try:
        for guest, home in state.guests.items():
            changes += _guest_home(conns, guest, home)
            changes += _guest_as_started(conns[home], guest)
    finally:
        for c in conns.values():
            c.close()
    first = state.hosts[0].name if state.hosts else ""
    for guest, home in state.guests.items():
        load(lab_dir, guest, *starting_load(home == first))
    for line in changes:
        say(line)
    return changes


def _domains(conns: dict[str, libvirt.virConnect], guest: str) -> dict[str, libvirt.virDomain]:
    """The guest's domain on every host that defines it (running or not)."""
    found = {}
    for name, conn in conns.items():
        dom = next((d for d in conn.listAllDomains() if d.name() == guest), None)
        if dom is not None:
            found[name] = dom
    return found


def _guest_home(conns: dict[str, libvirt.virConnect], guest: str, home: str) -> list[str]:
    """The guest running, unpaused, once, on ``home``."""
    changes = []
    doms = _domains(conns, guest)
    for name, dom in doms.items():
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
            changes.append(f"{guest}: resumed on {name}")
    running = [n for n, d in doms.items() if d.isActive()]
    if len(running) > 1:
        raise LabError(f"{guest} runs on {', '.join(running)}: resolve by hand before resetting")
    if not running:
        where = home if home in doms else next(iter(doms), None)
        if where is None:
            raise LabError(f"{guest} is defined on no lab host: `llmvirt lab down` and `up` again")
        doms[where].create()
        running = [where]
        changes.append(f"{guest}: started on {where}")
    if running[0] != home:
        doms[running[0]].migrate3(conns[home], {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"}, MOVE_BACK)
        changes.append(f"{guest}: moved {running[0]} -> {home}")
    return changes


def _guest_as_started(conn: libvirt.virConnect, guest: str) -> list[str]:
    """Balloon at its maximum; no vCPU or emulator pinning."""
    changes = []
    dom = conn.lookupByName(guest)
    if dom.info()[2] != dom.maxMemory():
        dom.setMemoryFlags(dom.maxMemory(), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        changes.append(f"{guest}: balloon back to {dom.maxMemory() // 1024} MiB")
    ncpu = conn.getInfo()[2]
    every, all_cpus = tuple(True for _ in range(ncpu)), tuple(range(ncpu))
    xml = (parse_domain(dom.XMLDesc(0)), parse_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
    if any(any(c != all_cpus for c in d.pinning.values()) or d.cputune.emulatorpin not in (None, all_cpus)
           for d in xml):
        for vcpu in range(dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)):
            dom.pinVcpuFlags(vcpu, every, LIVE_AND_CONFIG)
        dom.pinEmulator(every, LIVE_AND_CONFIG)
        changes.append(f"{guest}: unpinned")
    return changes
