"""Runs inside ``unshare -m --propagation private``: bind a lab host's private state, start its daemons.

Invoked as ``python -m llmvirt.lab.nsinit HOSTDIR``. The bind mounts live in
the new mount namespace only; virtlogd and libvirtd daemonize and keep that
namespace alive after this process exits. When they (and their QEMUs) end,
the namespace and its mounts go with them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: private directory under HOSTDIR -> where the daemons expect it
BINDS = (
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("etc", "/etc/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
)


def main(hostdir: Path, daemons: tuple[str, ...] = ("virtlogd", "libvirtd")) -> int:
    """Bind-mount the host's state directories, then start the daemons (virtlogd before libvirtd)."""
    for sub, target in BINDS:
        Path(target).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", str(hostdir / sub), target], check=True)
    # virtlogd first: libvirtd needs its socket to start any domain.
    for d in ("virtlogd", "libvirtd"):
        if d in daemons:
            subprocess.run([d, "-d", "-p", str(hostdir / f"{d}.pid")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), tuple(sys.argv[2:]) or ("virtlogd", "libvirtd")))
