"""End-to-end check for the Vagrant lab, run on kvm1: `vagrant ssh kvm1 -c 'sudo /opt/llmvirt/vagrant/e2e.sh'`.

Defines a small firmware-only guest on kvm1 (image-less, so it needs no shared disk), scans all
three hosts over qemu+ssh, live-migrates the guest kvm1 -> kvm2 -> kvm3 peer-to-peer, pins it and
changes its balloon, and checks each step through a fresh scan.
"""

from __future__ import annotations

import json
import subprocess
import sys

import libvirt

GUEST = """<domain type='kvm'><name>llmvirt-e2e</name><memory unit='MiB'>128</memory>
<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
<devices><memballoon model='virtio'><stats period='2'/></memballoon></devices></domain>"""
FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
         | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)


def status() -> dict:
    """Scan, then return status --json keyed by host."""
    subprocess.run(["/opt/llmvirt/.venv/bin/llmvirt", "scan"], check=True)
    out = subprocess.run(["/opt/llmvirt/.venv/bin/llmvirt", "status", "--json"], check=True,
                         capture_output=True, text=True).stdout
    return {h["name"]: h for h in json.loads(out)["hosts"]}


def where(st: dict) -> list[str]:
    """Hosts where the e2e guest runs."""
    return [n for n, h in st.items() for v in h["vms"] if v["name"] == "llmvirt-e2e" and v["state"] == "running"]


def main() -> int:
    """Run the checks; exit non-zero on the first failure."""
    conns = {h: libvirt.open(f"qemu+ssh://root@{h}/system") for h in ("kvm1", "kvm2", "kvm3")}
    dom = conns["kvm1"].defineXML(GUEST)
    dom.create()
    assert where(status()) == ["kvm1"]
    for src, dst in (("kvm1", "kvm2"), ("kvm2", "kvm3")):
        conns[src].lookupByName("llmvirt-e2e").migrateToURI3(f"qemu+ssh://root@{dst}/system", {}, FLAGS)
        assert where(status()) == [dst], f"guest not on {dst} alone"
    dom = conns["kvm3"].lookupByName("llmvirt-e2e")
    dom.pinVcpuFlags(0, (False, True), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    st = status()
    vm = next(v for v in st["kvm3"]["vms"] if v["name"] == "llmvirt-e2e")
    assert vm["pinning"] == {"0": [1]}
    dom.destroy()
    dom.undefine()
    print("vagrant e2e: scan, p2p live migration x2 and pinning OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
