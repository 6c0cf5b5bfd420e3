"""Print ``kvm`` or ``qemu``: the domain type the Vagrant machines use, from the lab's own probe.

A kernel guest is started under KVM on the system libvirtd; if it does not reach its ready mark
(nested KVM hangs kernel guests on some machines, see docs/lab.md), the machines run under TCG.
Usage: python vagrant/probe_driver.py IMAGE_DIR   (IMAGE_DIR must be readable by QEMU's user)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import libvirt

from llmvirt.lab.guests import probe_virt_type
from llmvirt.lab.image import build_image


def main() -> int:
    """Build (or reuse) the lab's guest image in IMAGE_DIR and print the probe's answer."""
    image = build_image(Path(sys.argv[1]))
    conn = libvirt.open("qemu:///system")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(probe_virt_type(conn, image, Path(tmp)))
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
