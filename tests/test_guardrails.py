"""The live re-read before a migration (issue 17): each guardrail of Migrate's pre-condition on libvirt's
test driver, which runs every check up to the migration itself (the test driver cannot migrate; the lab
tests the migration). A VM that vanished, already moved or stopped is skipped; a destination in
maintenance, full, outside the VM's host pinning, or a VM with a passed-through PCI device fails."""

from __future__ import annotations

import libvirt
import pytest
from conftest import fixture_uri

from llmvirt.act.migrate import Migrate
from llmvirt.act.runner import FAILED, SKIPPED, Env, Guardrails, run
from llmvirt.model.action import Action
from llmvirt.policy.constraints import Limits

WEB1 = ("web1", "b2b2b2b2-0000-4000-8000-000000000002")
OFF = ("batch-off", "b2b2b2b2-0000-4000-8000-000000000003")
TRAIN1 = ("train1", "a1a1a1a1-0000-4000-8000-000000000001")  # a passed-through GPU


class FixtureHosts:
    """Two test-driver hosts named src and dst (real libvirt connections)."""

    def __init__(self, src: str, dst: str, maintenance: bool) -> None:
        self.uris = {"src": fixture_uri(src), "dst": fixture_uri(dst)}
        self.conns = {name: libvirt.open(uri) for name, uri in self.uris.items()}
        self.dst_maintenance = maintenance

    def conn(self, name: str) -> libvirt.virConnect:
        return self.conns[name]

    def uri(self, name: str) -> str:
        return self.uris[name]

    def maintenance(self, name: str) -> bool:
        return name == "dst" and self.dst_maintenance


def _run(vm: tuple[str, str], src: str, dst: str, maintenance: bool = False, limits: Limits | None = None,
         pins: tuple[str, ...] = ()):  # noqa: ANN202
    hosts = FixtureHosts(src, dst, maintenance)
    guard = Guardrails(limits or Limits(reserved_memory_mib=0), {}, {vm[0]: pins} if pins else {})
    try:
        return run(Migrate(), Action.migrate(vm[0], "src", "dst", "test", uuid=vm[1]), Env(hosts, guard))
    finally:
        for c in hosts.conns.values():
            c.close()


@pytest.mark.parametrize(("vm", "src", "dst", "kw", "status", "words"), [
    (("ghost", "00000000-0000-4000-8000-00000000dead"), "busy-host.xml", "small-host.xml", {}, SKIPPED,
     "no longer on src"),
    (WEB1, "small-host.xml", "busy-host.xml", {}, SKIPPED, "already runs on dst"),
    (OFF, "busy-host.xml", "small-host.xml", {}, SKIPPED, "not running on src"),
    (WEB1, "busy-host.xml", "small-host.xml", {"maintenance": True}, FAILED, "dst is in maintenance"),
    (TRAIN1, "gpu-host.xml", "busy-host.xml", {}, FAILED, "PCI passthrough"),
    (WEB1, "busy-host.xml", "small-host.xml", {"limits": Limits(cpu_allocation_ratio=0.01)}, FAILED,
     "dst cannot take web1 now"),
    (WEB1, "busy-host.xml", "small-host.xml", {"pins": ("elsewhere",)}, FAILED, "host_pinning"),
])
def test_live_reread_before_migrating(vm, src, dst, kw, status, words) -> None:  # noqa: ANN001
    outcome = _run(vm, src, dst, **kw)
    assert outcome.status == status and words in outcome.detail, outcome
