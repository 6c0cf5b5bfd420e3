"""``llmvirt lab up|down|status|load``: orchestration of the local lab and its state file.

The state file ``LAB/lab.json`` is written after every host starts, so
``down`` can clean up after a crash or a half-finished ``up``; ``down`` also
sweeps host directories the state file does not know about.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
from sqlalchemy import Engine

from llmvirt.errors import UsageError, quiet_libvirt, translate_libvirt
from llmvirt.lab import daemons, guests
from llmvirt.lab.daemons import LabError, LabHost
from llmvirt.lab.image import build_image
from llmvirt.store import registry

quiet_libvirt()  # libvirt prints no error of its own: llmvirt reports them

REQUIRED_PROGRAMS = ("libvirtd", "virtlogd", "qemu-system-x86_64", "unshare", "mount", "apt-get", "dpkg-deb")
LAB_SOURCE = "lab"


def default_lab_dir() -> Path:
    """``$XDG_DATA_HOME/llmvirt/lab`` (for root ``/root/.local/share/llmvirt/lab``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "llmvirt" / "lab"


@dataclass
class LabState:
    """What the lab started: hosts, guests and the virtualisation type chosen by the probe."""

    dir: Path  #: the lab directory
    virt_type: str = "qemu"  #: ``kvm`` or ``qemu`` (TCG)
    hosts: list[LabHost] = field(default_factory=list)  #: started hosts
    guests: dict[str, str] = field(default_factory=dict)  #: guest name -> host it was started on

    @property
    def path(self) -> Path:
        """The state file."""
        return self.dir / "lab.json"

    def save(self) -> None:
        """Write the state file."""
        self.path.write_text(json.dumps({
            "virt_type": self.virt_type, "guests": self.guests,
            "hosts": [{"name": h.name, "index": h.index, "dir": str(h.dir), "host_uuid": h.host_uuid}
                      for h in self.hosts]}, indent=2))

    @classmethod
    def load(cls, lab_dir: Path) -> LabState | None:
        """The state file's contents, or None when there is no lab here."""
        path = lab_dir / "lab.json"
        if not path.exists():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        return cls(dir=lab_dir, virt_type=data.get("virt_type", "qemu"), guests=data.get("guests", {}),
                   hosts=[LabHost(h["name"], h["index"], Path(h["dir"]), h["host_uuid"]) for h in data["hosts"]])

    def console_log(self, guest: str) -> Path:
        """Where a guest's serial console is logged."""
        return self.dir / "console" / f"{guest}.log"


def check_prerequisites() -> None:
    """Root and the lab's programs must be there; say exactly what is missing."""
    if os.geteuid() != 0:
        raise UsageError("llmvirt lab needs root (mount namespaces and libvirtd); run it as root")
    missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
    if missing:
        raise UsageError(f"missing {', '.join(missing)}: run the README's set-up command (make setup)")


def spread(n_hosts: int, n_vms: int) -> list[int]:
    """Uneven guest placement: host index (0-based) for each guest, the last host left empty."""
    if n_hosts == 1:
        return [0] * n_vms
    first = -(-2 * n_vms // 3)  # about two thirds on the first host: a hotspot
    others = max(1, n_hosts - 2) if n_hosts > 2 else 1
    return [0] * first + [1 + i % others for i in range(n_vms - first)]


def _register(engine: Engine, hosts: list[LabHost]) -> None:
    known = {h.name: h for h in registry.list_hosts(engine)}
    for h in hosts:
        old = known.get(h.name)
        if old is not None and old.source != LAB_SOURCE:
            raise UsageError(f"host name {h.name} is already registered by you ({old.uri}); remove it first")
        if old is not None:
            registry.remove_host(engine, h.name)
        registry.add_host(engine, registry.RegisteredHost(h.name, h.uri, False, LAB_SOURCE))


def _virt_type(lab_dir: Path, host: LabHost, image: guests.GuestImage, console: Path) -> str:
    cache = lab_dir / "image" / "probe.json"
    if cache.exists():
        data = json.loads(cache.read_text())
        if data.get("kernel") == image.kernel_version:
            return str(data["virt_type"])
    conn = libvirt.open(host.uri)
    try:
        virt = guests.probe_virt_type(conn, image, console)
    finally:
        conn.close()
    cache.write_text(json.dumps({"kernel": image.kernel_version, "virt_type": virt}))
    return virt


def starting_load(on_first_host: bool) -> tuple[int, int]:
    """(CPU %, memory MiB) a guest starts with: busier on the first host, so a rebalance has work to do."""
    return (10, 48) if on_first_host else (3, 16)


def up(lab_dir: Path, n_hosts: int, n_vms: int, engine: Engine, say: Any = print) -> LabState:
    """Start ``n_hosts`` libvirt hosts and ``n_vms`` guests, and register the hosts."""
    check_prerequisites()
    if n_hosts < 1 or n_vms < 0:
        raise UsageError("--hosts must be at least 1 and --vms at least 0")
    old = LabState.load(lab_dir)
    if old is not None and any(daemons.pid_is(daemons.read_pid(h.pidfile("libvirtd")) or 0, "libvirtd")
                               for h in old.hosts):
        raise UsageError(f"a lab is already up in {lab_dir}: run `llmvirt lab down` first")
    down(lab_dir, engine, quiet=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    image = build_image(lab_dir / "image")
    say(f"guest image ready ({image.kernel_version}) in {time.monotonic() - t0:.1f} s")
    state = LabState(dir=lab_dir)
    (lab_dir / "console").mkdir(exist_ok=True)
    state.save()
    for i in range(1, n_hosts + 1):
        host = daemons.new_host(lab_dir, i)
        state.hosts.append(host)
        state.save()  # before starting: a crash mid-start still leaves a trace for down
        daemons.start_host(host)
        say(f"{host.name}: libvirtd up at {host.socket}")
    _register(engine, state.hosts)
    state.virt_type = _virt_type(lab_dir, state.hosts[0], image, lab_dir / "console")
    why = "KVM" if state.virt_type == "kvm" else "TCG: a kernel guest did not boot under KVM here"
    say(f"guests run as type='{state.virt_type}' ({why})")
    placement = spread(n_hosts, n_vms)
    conns = [libvirt.open(h.uri) for h in state.hosts]
    try:
        for g, hi in enumerate(placement):
            cpu_pct, mem_mib = starting_load(hi == 0)
            spec = guests.GuestSpec(name=f"vm-{g + 1}", cpu_pct=cpu_pct, mem_load_mib=mem_mib)
            guests.start_guest(conns[hi], guests.domain_xml(spec, image, state.virt_type,
                                                            state.console_log(spec.name)), spec.name)
            state.guests[spec.name] = state.hosts[hi].name
            state.save()
        for name in state.guests:
            if not guests.wait_for_console(state.console_log(name), guests.READY_MARK, 0, guests.BOOT_TIMEOUT_S):
                raise LabError(f"guest {name} did not boot within {guests.BOOT_TIMEOUT_S:g} s "
                               f"(console log: {state.console_log(name)})")
    finally:
        for c in conns:
            c.close()
    say(f"lab up: {n_hosts} hosts, {n_vms} guests in {time.monotonic() - t0:.1f} s")
    return state


def _known_hosts(lab_dir: Path, state: LabState | None) -> list[LabHost]:
    hosts = list(state.hosts) if state else []
    seen = {h.dir for h in hosts}
    for d in sorted((lab_dir / "hosts").glob("lab-*")) if (lab_dir / "hosts").exists() else []:
        if d not in seen:  # left by an `up` that died before saving its state
            idx = int(d.name.split("-")[1]) if d.name.split("-")[1].isdigit() else 0
            hosts.append(LabHost(d.name, idx, d, ""))
    return hosts


def down(lab_dir: Path, engine: Engine | None, quiet: bool = False, say: Any = print) -> int:
    """Destroy the guests, stop the lab's daemons (by pid), remove its state; idempotent."""
    state = LabState.load(lab_dir)
    hosts = _known_hosts(lab_dir, state)
    for h in hosts:
        if h.socket.exists():
            try:
                conn = libvirt.open(h.uri)
                for dom in conn.listAllDomains():
                    if dom.isActive():
                        dom.destroy()
                    if dom.isPersistent():
                        dom.undefine()
                conn.close()
            except libvirt.libvirtError:
                pass  # a dead daemon: its QEMUs are stopped by pid below
        daemons.stop_host(h)
        if not quiet:
            say(f"{h.name}: stopped")
    shutil.rmtree(lab_dir / "hosts", ignore_errors=True)
    shutil.rmtree(lab_dir / "console", ignore_errors=True)
    (lab_dir / "lab.json").unlink(missing_ok=True)
    if engine is not None:
        for r in registry.list_hosts(engine):
            if r.source == LAB_SOURCE:
                registry.remove_host(engine, r.name)
    return len(hosts)


def locate(state: LabState, guest: str) -> LabHost:
    """The lab host where ``guest`` is running now."""
    for h in state.hosts:
        try:
            conn = libvirt.open(h.uri)
        except libvirt.libvirtError:
            continue
        try:
            dom = conn.lookupByName(guest)
            if dom.isActive():
                return h
        except libvirt.libvirtError:
            pass
        finally:
            conn.close()
    raise UsageError(f"guest {guest!r} is not running on any lab host")


def load(lab_dir: Path, guest: str, cpu_pct: int, mem_mib: int, timeout: float = 20.0) -> LabHost:
    """Change a guest's CPU and memory load at run time; returns the host it runs on."""
    if not 0 <= cpu_pct <= 100 or mem_mib < 0:
        raise UsageError("--cpu must be 0..100 and --mem at least 0")
    state = LabState.load(lab_dir)
    if state is None:
        raise UsageError(f"no lab in {lab_dir}: run `llmvirt lab up` first")
    host = locate(state, guest)
    conn = libvirt.open(host.uri)
    try:
        ok = guests.console_command(conn, guest, f"load {cpu_pct} {mem_mib}", state.console_log(guest),
                                    f"llmvirt-load: cpu={cpu_pct} mem={mem_mib}", timeout)
    finally:
        conn.close()
    if not ok:
        raise LabError(f"guest {guest} did not confirm the new load within {timeout:g} s")
    return host


def status(lab_dir: Path) -> dict[str, Any]:
    """Hosts with their daemon pids and liveness, and where each guest runs."""
    state = LabState.load(lab_dir)
    if state is None:
        return {"dir": str(lab_dir), "up": False, "hosts": [], "guests": {}}
    out: dict[str, Any] = {"dir": str(lab_dir), "up": True, "virt_type": state.virt_type, "hosts": [],
                           "guests": {}}
    for h in state.hosts:
        pids = {d: daemons.read_pid(h.pidfile(d)) for d in ("libvirtd", "virtlogd")}
        alive = {d: bool(p and daemons.pid_is(p, d)) for d, p in pids.items()}
        running: list[str] = []
        if alive["libvirtd"]:
            with translate_libvirt(f"lab host {h.name}", connecting=True):
                conn = libvirt.open(h.uri)
            try:
                running = sorted(d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
            finally:
                conn.close()
        for g in running:
            out["guests"][g] = h.name
        out["hosts"].append({"name": h.name, "uri": h.uri, "pids": pids, "alive": alive,
                             "qemu_pids": daemons.qemu_pids(h), "guests": running})
    return out
