"""Lab guests: their domain XML, the KVM-or-TCG probe, and load control over the serial console.

A guest's serial console is logged to ``LAB/console/NAME.log`` (by each host's
virtlogd, appending, so the log follows the guest across migrations); commands
go in through libvirt's console stream, so they reach the guest on whichever
host it runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import libvirt

from llmvirt.errors import translate_libvirt
from llmvirt.lab.daemons import LabError
from llmvirt.lab.image import GuestImage
from llmvirt.observe.domain_xml import CpuModel, Domain, LoggedSerial, MemBalloon, Memory, Os, Vcpu

READY_MARK = "llmvirt-guest: ready"
BOOT_TIMEOUT_S = 60.0  # TCG boot takes ~2 s alone; several guests booting on 2 cores take longer
PROBE_TIMEOUT_S = 12.0
STATS_PERIOD_S = 2  # balloon stats period: the guest reports unused/available/usable this often


@dataclass(frozen=True)
class GuestSpec:
    """What a lab guest looks like."""

    name: str  #: domain name, unique across the lab
    memory_mib: int = 192  #: maximum (and initial) memory
    vcpus: int = 1  #: vCPUs
    cpu_pct: int = 0  #: initial CPU load, percent of one vCPU
    mem_load_mib: int = 0  #: initial memory held by the load generator


def domain(spec: GuestSpec, image: GuestImage, virt_type: str, console_log: Path) -> Domain:
    """A lab guest: direct kernel boot, virtio balloon with stats, logged serial. Under KVM the guest's CPU
    model hides SVM (nested virtualisation in a lab guest is not wanted)."""
    return Domain(name=spec.name, type=virt_type, memory=Memory(spec.memory_mib),
                  current_memory=Memory(spec.memory_mib, "currentMemory"), vcpu=Vcpu(spec.vcpus),
                  os=Os(str(image.kernel), str(image.initrd),
                         f"console=ttyS0 quiet llmvirt.cpu={spec.cpu_pct} llmvirt.mem={spec.mem_load_mib}",
                         "x86_64", "pc"),
                  cpu=CpuModel("qemu64", ("svm",) if virt_type == "kvm" else ()),
                  emulator="/usr/bin/qemu-system-x86_64", serial=LoggedSerial(str(console_log)),
                  balloon=MemBalloon("virtio", STATS_PERIOD_S))


def domain_xml(spec: GuestSpec, image: GuestImage, virt_type: str, console_log: Path) -> str:
    """The lab guest's domain XML (:func:`domain`, written by :meth:`Domain.to_xml`)."""
    return domain(spec, image, virt_type, console_log).to_xml()


def wait_for_console(log: Path, mark: str, offset: int, timeout: float) -> bool:
    """Wait until ``mark`` appears in the console log after byte ``offset``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with log.open("rb") as f:
                f.seek(offset)
                if mark.encode() in f.read():
                    return True
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    return False


def log_size(log: Path) -> int:
    """Current size of a console log (0 if absent)."""
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


def start_guest(conn: libvirt.virConnect, xml: str, name: str) -> libvirt.virDomain:
    """Define (persistently) and start a guest; a guest that cannot start is not left defined."""
    with translate_libvirt(f"guest {name}"):
        dom = conn.defineXML(xml)
        try:
            dom.create()
        except libvirt.libvirtError:
            dom.undefine()
            raise
        return dom


def probe_virt_type(conn: libvirt.virConnect, image: GuestImage, console_dir: Path) -> str:
    """``kvm`` when a kernel guest boots under KVM on this machine, else ``qemu`` (TCG)."""
    log = console_dir / "probe-kvm.log"
    log.unlink(missing_ok=True)
    spec = GuestSpec(name="llmvirt-probe-kvm", memory_mib=128)
    try:
        dom = start_guest(conn, domain_xml(spec, image, "kvm", log), spec.name)
    except LabError:
        return "qemu"
    except Exception:  # noqa: BLE001 - any failure to start under KVM means TCG
        return "qemu"
    try:
        booted = wait_for_console(log, READY_MARK, 0, PROBE_TIMEOUT_S)
    finally:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        dom.undefine()
        log.unlink(missing_ok=True)
    return "kvm" if booted else "qemu"


def console_command(conn: libvirt.virConnect, name: str, line: str, log: Path, reply: str,
                    timeout: float) -> bool:
    """Type one line on a guest's serial console and wait for ``reply`` in its console log.

    The console stream stays open until the reply is logged: QEMU stops logging
    a pty's output once its last client has hung up.
    """
    offset = log_size(log)
    with translate_libvirt(f"guest {name}"):
        dom = conn.lookupByName(name)
        stream = conn.newStream(0)
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    try:
        with translate_libvirt(f"guest {name}"):
            stream.send((line.rstrip("\n") + "\n").encode())
        return wait_for_console(log, reply, offset, timeout)
    finally:
        try:
            stream.finish()
        except libvirt.libvirtError:
            stream.abort()
