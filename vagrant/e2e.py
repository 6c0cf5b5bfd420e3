"""End-to-end check of the Vagrant lab, run on the controller by ``vagrant/run-e2e.sh`` (``make vagrant-e2e``).

The controller is this machine, as an operator's management node would be: llmvirt runs here and
reaches every Vagrant host over ``qemu+ssh://root@kvmN/system`` (the lab's throwaway key, loaded in
the ssh-agent that run-e2e.sh starts). Every step goes through llmvirt's own commands and is checked
by a fresh scan:

1. ``hosts add`` each host; ``doctor`` reaches and authenticates every one.
2. The lab's guest image (kernel + busybox initramfs with virtio_balloon) is copied to kvm1's image
   directory, which kvm1 exports over NFS to the others.
3. ``place --define``: with the other hosts in maintenance, the guest is created on kvm1.
4. ``rebalance --apply``, peer-to-peer live migration, draining hosts in maintenance: kvm1 -> kvm2 ->
   kvm3 (kvm1 -> kvm2 with two hosts).
5. ``rebalance --only pin --apply`` (one-to-one rules): the scan shows the guest pinned as planned.
6. ``rebalance --only balloon --apply``: the scan shows the balloon at the planned size.
7. ``outcomes``: the migrations, the pinning and the balloon change are scored.

Usage: python vagrant/e2e.py --hosts kvm1,kvm2,kvm3 --image-dir DIR --out timings.json
       python vagrant/e2e.py --hosts kvm1 --smoke     (CI: register, doctor and scan only)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

GUEST = "llmvirt-e2e"
REMOTE_DIR = Path("/var/lib/libvirt/images/llmvirt-e2e")  # on kvm1's NFS export: every host sees it
LLMVIRT = [sys.executable, "-m", "llmvirt"]
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes"]
BOOT_TIMEOUT_S = 420.0  # a kernel guest under TCG inside a TCG machine: about 100 s on 2 cores


class E2eFailed(Exception):
    """A step did not do what it should."""


def uri(host: str) -> str:
    """The libvirt URI a host is registered with (and that peer-to-peer migration connects to)."""
    return f"qemu+ssh://root@{host}/system?no_verify=1"


def llmvirt(*args: str) -> subprocess.CompletedProcess[str]:
    """Run one llmvirt command; a non-zero exit fails the run with its output."""
    res = subprocess.run([*LLMVIRT, *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise E2eFailed(f"llmvirt {' '.join(args)} exited {res.returncode}: {res.stdout[-800:]} {res.stderr[-800:]}")
    return res


def llmvirt_json(*args: str) -> dict:
    """Run one llmvirt command with --json and parse its output."""
    return json.loads(llmvirt(*args, "--json").stdout)


def scanned() -> dict[str, dict]:
    """A fresh scan, then ``status --json`` keyed by host."""
    llmvirt("scan")
    return {h["name"]: h for h in llmvirt_json("status")["hosts"]}


def guest_on(status: dict[str, dict]) -> list[str]:
    """Hosts where the e2e guest runs."""
    return [n for n, h in status.items() for v in h["vms"] if v["name"] == GUEST and v["state"] == "running"]


def guest_row(status: dict[str, dict]) -> dict:
    """The e2e guest's row in a status document."""
    return next(v for h in status.values() for v in h["vms"] if v["name"] == GUEST and v["state"] == "running")


def wait_until(what: str, pred: Callable[[dict[str, dict]], bool], timeout: float) -> dict[str, dict]:
    """Scan until ``pred(status)`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        st = scanned()
        if pred(st):
            return st
        if time.monotonic() > deadline:
            raise E2eFailed(f"{what}: not seen within {timeout:.0f} s")
        time.sleep(5)


def maintenance(hosts: list[str], on: set[str]) -> None:
    """Put exactly the hosts in ``on`` in maintenance."""
    for h in hosts:
        llmvirt("hosts", "maintenance", h, "on" if h in on else "off")


def copy_image(image_dir: Path, host: str) -> tuple[Path, Path]:
    """Copy the lab guest's kernel and initramfs to the host's shared image directory."""
    kernel = next(image_dir.glob("vmlinuz-*"))
    initrd = image_dir / "initrd.img"
    subprocess.run(["ssh", *SSH_OPTS, f"root@{host}", "mkdir", "-p", str(REMOTE_DIR)], check=True)
    subprocess.run(["scp", "-q", *SSH_OPTS, str(kernel), str(initrd), f"root@{host}:{REMOTE_DIR}/"], check=True)
    return REMOTE_DIR / kernel.name, REMOTE_DIR / initrd.name


def guest_xml(kernel: Path, initrd: Path) -> str:
    """The lab's guest (TCG, virtio balloon with stats), its console logged on the shared directory."""
    from llmvirt.lab.guests import GuestSpec, domain_xml
    from llmvirt.lab.image import GuestImage

    image = GuestImage(kernel, initrd, kernel.name.removeprefix("vmlinuz-"))
    return domain_xml(GuestSpec(GUEST, memory_mib=160), image, "qemu", REMOTE_DIR / f"{GUEST}.console.log")


class Run:
    """The steps, each timed into ``timings``."""

    def __init__(self, hosts: list[str], image_dir: Path) -> None:
        self.hosts = hosts
        self.image_dir = image_dir
        self.timings: dict[str, float] = {}
        self.facts: dict[str, object] = {}

    def step(self, name: str, fn: Callable[[], None]) -> None:
        """Run one step, time it, print one line."""
        t0 = time.monotonic()
        fn()
        self.timings[name] = round(time.monotonic() - t0, 1)
        print(f"e2e: {name} ok ({self.timings[name]} s)", flush=True)

    def register(self) -> None:
        """Register every host over qemu+ssh; doctor must reach each one."""
        for h in self.hosts:
            llmvirt("hosts", "add", h, uri(h))
        doc = llmvirt_json("doctor")
        self.facts["doctor"] = doc
        reach = [c for c in doc["checks"] if c["check"] == "reachable"]
        bad = [c for c in reach if c["status"] != "ok"]
        if len(reach) != len(self.hosts) or bad:
            raise E2eFailed(f"doctor: hosts not reachable: {bad or reach}")

    def scan_all(self) -> None:
        """A scan reads every registered host (``scan`` exits 3, failing the run, when one cannot be read)."""
        st = scanned()
        if sorted(st) != sorted(self.hosts):
            raise E2eFailed(f"scan: hosts {sorted(st)}, registered {sorted(self.hosts)}")
        self.facts["scanned"] = sorted(st)

    def place(self) -> None:
        """The guest is placed and created on kvm1 (the others in maintenance), and boots."""
        kernel, initrd = copy_image(self.image_dir, self.hosts[0])
        maintenance(self.hosts, set(self.hosts[1:]))
        llmvirt("scan")
        with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
            f.write(guest_xml(kernel, initrd))
        try:
            doc = llmvirt_json("place", "--vcpus", "1", "--memory", "160M", "--expected-cpu", "0.1", "--define",
                               f.name)
        finally:
            os.unlink(f.name)
        self.facts["place"] = doc
        st = wait_until("the guest reporting balloon statistics on kvm1",
                        lambda s: guest_on(s) == [self.hosts[0]]
                        and guest_row(s)["balloon"].get("usable_mib") is not None, BOOT_TIMEOUT_S)
        self.facts["guest_after_place"] = guest_row(st)

    def migrate_chain(self) -> None:
        """rebalance --apply drains the host in maintenance, peer to peer, one hop at a time."""
        hops = []
        for dst in self.hosts[1:]:
            maintenance(self.hosts, set(self.hosts) - {dst})
            src = guest_on(scanned())
            t0 = time.monotonic()
            llmvirt("rebalance", "--apply")
            st = scanned()
            if guest_on(st) != [dst]:
                raise E2eFailed(f"after rebalance --apply the guest runs on {guest_on(st)}, not on {dst} alone")
            if any(v["state"] == "running" for v in st[src[0]]["vms"]):
                raise E2eFailed(f"{src[0]} in maintenance still runs guests")
            done = [a for a in llmvirt_json("actions")["actions"] if a["vm"] == GUEST and a["kind"] == "migrate"
                    and a["status"] == "done"]
            if not done or done[0]["reason"] != f"{GUEST} moved to {dst} (peer to peer)":
                raise E2eFailed(f"the journal does not show a peer-to-peer move to {dst}: {done[:1]}")
            hops.append({"src": src[0], "dst": dst, "seconds": round(time.monotonic() - t0, 1),
                         "journal": done[0]["reason"]})
        maintenance(self.hosts, set())
        self.facts["migrations"] = hops

    def pin(self) -> None:
        """The rules' one-to-one pinning, applied and seen in a fresh scan."""
        self.facts["pinning_before"] = guest_row(scanned())["pinning"]
        plan = llmvirt_json("rebalance", "--only", "pin", "--policy", "baseline:rules")
        mine = [a for a in plan["actions"] if a["vm"] == GUEST]
        if not mine:
            raise E2eFailed(f"no pinning planned for the guest: {plan}")
        llmvirt("rebalance", "--apply", "--only", "pin", "--policy", "baseline:rules")
        want = mine[0]["params"]["pins"]
        st = wait_until("the planned pinning", lambda s: guest_row(s)["pinning"] == want, 60)
        self.facts["pinning"] = guest_row(st)["pinning"]

    def balloon(self) -> None:
        """The balloon head's change, applied and seen in a fresh scan."""
        plan = llmvirt_json("rebalance", "--only", "balloon")
        mine = [a for a in plan["actions"] if a["vm"] == GUEST]
        if not mine:
            raise E2eFailed(f"no balloon change planned for the guest: {plan}")
        target = mine[0]["params"]["target_mib"]
        llmvirt("rebalance", "--apply", "--only", "balloon")
        st = wait_until(f"the balloon at {target} MiB", lambda s: guest_row(s)["balloon"]["current_mib"] == target,
                        120)
        self.facts["balloon"] = {"target_mib": target, "reason": mine[0]["params"]["reason"],
                                 "seen": guest_row(st)["balloon"]}

    def outcomes(self) -> None:
        """Every kind of action applied here gets a scored outcome from the scans after it."""
        def scored() -> set[str]:
            rows = llmvirt_json("outcomes")["outcomes"]
            return {r["kind"] for r in rows if r["outcome"] == "scored"}

        deadline = time.monotonic() + 180
        while not {"migrate", "pin", "balloon"} <= scored():
            if time.monotonic() > deadline:
                raise E2eFailed(f"outcomes not scored: {scored()}")
            llmvirt("scan")
            time.sleep(5)
        self.facts["outcomes"] = [r for r in llmvirt_json("outcomes")["outcomes"] if r["outcome"] == "scored"]

    def clean(self) -> None:
        """Destroy and undefine the guest wherever it is."""
        import libvirt

        for h in self.hosts:
            conn = libvirt.open(uri(h))
            try:
                dom = conn.lookupByName(GUEST)
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass  # not on this host
            finally:
                conn.close()


def main() -> int:
    """Run every step; exit 1 with one line on the first failure."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", default="kvm1,kvm2,kvm3")
    ap.add_argument("--image-dir", type=Path, help="the lab guest image (llmvirt.lab.image); not with --smoke")
    ap.add_argument("--smoke", action="store_true", help="only register the hosts, doctor and scan them (CI)")
    ap.add_argument("--out", type=Path, help="write the timings and what each step saw here (JSON)")
    args = ap.parse_args()
    if not args.smoke and args.image_dir is None:
        ap.error("--image-dir is needed for the full check")
    run = Run(args.hosts.split(","), args.image_dir)
    ok = False
    try:
        run.step("register and doctor", run.register)
        if args.smoke:
            run.step("scan over qemu+ssh", run.scan_all)
            ok = True
            return 0
        run.step("place --define on kvm1", run.place)
        run.step("rebalance --apply: peer-to-peer migrations", run.migrate_chain)
        run.step("rebalance --only pin --apply", run.pin)
        run.step("rebalance --only balloon --apply", run.balloon)
        run.step("outcomes scored", run.outcomes)
        ok = True
    except E2eFailed as exc:
        print(f"e2e: FAILED: {exc}", file=sys.stderr)
    finally:
        run.clean()
        if args.out:
            args.out.write_text(json.dumps({"ok": ok, "hosts": run.hosts, "timings_s": run.timings,
                                            "facts": run.facts}, indent=1, default=str))
    if ok and not args.smoke:
        print(f"vagrant e2e: {len(run.hosts)} hosts over qemu+ssh: place, peer-to-peer live migration "
              f"{' -> '.join(run.hosts)}, pinning, ballooning and scored outcomes OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
