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
from xml.sax.saxutils import escape

import libvirt

from llmvirt.errors import translate_libvirt
from llmvirt.lab.daemons import LabError
from llmvirt.lab.image import GuestImage

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


def domain_xml(spec: GuestSpec, image: GuestImage, virt_type: str, console_log: Path) -> str:
    """Domain XML for a lab guest: direct kernel boot, virtio balloon with stats, logged serial."""
    cpu = ("<cpu mode='custom' match='exact' check='none'><model fallback='allow'>qemu64</model>"
           "<feature policy='disable' name='svm'/></cpu>" if virt_type == "kvm" else
           "<cpu mode='custom' match='exact' check='none'><model fallback='allow'>qemu64</model></cpu>")
    cmdline = f"console=ttyS0 quiet llmvirt.cpu={spec.cpu_pct} llmvirt.mem={spec.mem_load_mib}"
    return f"""<domain type='{virt_type}'>
  <name>{escape(spec.name)}</name>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <currentMemory unit='MiB'>{spec.memory_mib}</currentMemory>
  <vcpu placement='static'>{spec.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(image.kernel))}</kernel>
    <initrd>{escape(str(image.initrd))}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='pty'>
      <log file='{escape(str(console_log))}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='virtio'><stats period='{STATS_PERIOD_S}'/></memballoon>
  </devices>
</domain>
"""


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
    """Define (persistently) and start a guest."""
    with translate_libvirt(f"guest {name}"):
        dom = conn.defineXML(xml)
        dom.create()
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
