"""One lab host = one libvirtd + virtlogd in a private mount namespace (see lab-facts).

Each host gets its own state directories, a copy of /etc/libvirt with an
empty qemu/ directory, a distinct ``host_uuid`` (libvirt refuses to migrate to
a host with the same UUID), its own socket directory visible from outside, and
its own migration port range.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from llmvirt.errors import LlmvirtError

DAEMON_START_TIMEOUT_S = 20.0
DAEMON_STOP_TIMEOUT_S = 10.0
MIGRATION_PORT_BASE = 49152
MIGRATION_PORTS_PER_HOST = 64


class LabError(LlmvirtError):
    """The lab could not be brought up or down."""


@dataclass
class LabHost:
    """A lab host's identity and where its daemons and state live."""

    name: str  #: registered name, ``lab-1`` ...
    index: int  #: 1-based position
    dir: Path  #: private state directory
    host_uuid: str  #: libvirt host_uuid, distinct per host

    @property
    def socket(self) -> Path:
        """libvirtd's read-write socket."""
        return self.dir / "sock" / "libvirt-sock"

    @property
    def uri(self) -> str:
        """The libvirt URI that reaches this host."""
        return f"qemu+unix:///system?socket={self.socket}"

    def pidfile(self, daemon: str) -> Path:
        """Pid file of ``virtlogd`` or ``libvirtd``."""
        return self.dir / f"{daemon}.pid"


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, or None."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_is(pid: int, program: str) -> bool:
    """True when ``pid`` is alive and runs ``program`` (guards against pid reuse)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):  # exited; a zombie holds nothing but its pid until pid 1 reaps it
        return False
    return os.path.basename(cmd.decode(errors="replace")) == program


def _write_config(host: LabHost) -> None:
    etc = host.dir / "etc"
    shutil.rmtree(etc, ignore_errors=True)
    shutil.copytree("/etc/libvirt", etc, symlinks=True)
    shutil.rmtree(etc / "qemu", ignore_errors=True)  # no persistent domains or networks from the system
    (etc / "qemu").mkdir()
    lo = MIGRATION_PORT_BASE + (host.index - 1) * MIGRATION_PORTS_PER_HOST
    with (etc / "libvirtd.conf").open("a") as f:
        f.write(f'\n# llmvirt lab\nunix_sock_dir = "{host.dir / "sock"}"\nhost_uuid = "{host.host_uuid}"\n'
                f'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n')
    with (etc / "qemu.conf").open("a") as f:
        # root QEMU reads the cached image; no cgroups so two hosts never contend for one cgroup name
        # when a migrating domain exists on both; per-host ports so destinations never collide.
        f.write('\n# llmvirt lab\nuser = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
                'cgroup_controllers = [ ]\n'
                f"migration_port_min = {lo}\nmigration_port_max = {lo + MIGRATION_PORTS_PER_HOST - 1}\n")


def start_host(host: LabHost) -> None:
    """Create the host's private state and start its daemons; returns once its socket answers."""
    for sub in ("run", "lib", "log", "cache", "sock", "lib/qemu", "lib/images"):
        (host.dir / sub).mkdir(parents=True, exist_ok=True)
    _write_config(host)
    _launch(host)


def _launch(host: LabHost, daemons: tuple[str, ...] = ()) -> None:
    """Start the daemons (default: both) in a new private mount namespace; wait for libvirtd's socket."""
    res = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-m",
                          "llmvirt.lab.nsinit", str(host.dir), *daemons], capture_output=True, text=True)
    if res.returncode != 0:
        raise LabError(f"{host.name}: starting libvirtd failed: {res.stderr.strip()[-300:]}")
    deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
    while time.monotonic() < deadline:
        pid = read_pid(host.pidfile("libvirtd"))
        if host.socket.exists() and pid and pid_is(pid, "libvirtd"):
            return
        time.sleep(0.1)
    raise LabError(f"{host.name}: libvirtd did not open {host.socket} within {DAEMON_START_TIMEOUT_S:g} s")


def restart_host(host: LabHost) -> None:
    """Start a host's dead daemons again on its existing state (after a crash); its QEMUs keep running.

    A live virtlogd is kept: it holds the running QEMUs' console logs.
    """
    dead = tuple(d for d in ("virtlogd", "libvirtd")
                 if not ((pid := read_pid(host.pidfile(d))) and pid_is(pid, d)))
    if "libvirtd" in dead:
        host.socket.unlink(missing_ok=True)
    if dead:
        _launch(host, dead)


def _stop(pid: int | None, program: str) -> None:
    if pid is None or not pid_is(pid, program):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DAEMON_STOP_TIMEOUT_S
    while time.monotonic() < deadline and pid_is(pid, program):
        time.sleep(0.05)
    if pid_is(pid, program):
        os.kill(pid, signal.SIGKILL)


def qemu_pids(host: LabHost) -> list[int]:
    """Pids of QEMU processes this host's libvirtd started (from its pid files)."""
    pids = []
    for f in (host.dir / "run" / "qemu").glob("*.pid"):
        pid = read_pid(f)
        if pid and pid_is(pid, "qemu-system-x86_64"):
            pids.append(pid)
    return pids


def stop_host(host: LabHost) -> None:
    """Stop this host's QEMUs and daemons (only pids it started), then remove its state."""
    for pid in qemu_pids(host):
        _stop(pid, "qemu-system-x86_64")
    _stop(read_pid(host.pidfile("libvirtd")), "libvirtd")
    _stop(read_pid(host.pidfile("virtlogd")), "virtlogd")
    shutil.rmtree(host.dir, ignore_errors=True)


def new_host(lab_dir: Path, index: int) -> LabHost:
    """A fresh LabHost description (nothing started yet)."""
    return LabHost(name=f"lab-{index}", index=index, dir=lab_dir / "hosts" / f"lab-{index}",
                   host_uuid=str(uuid.uuid4()))
