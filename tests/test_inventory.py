"""Inventory against libvirt's own test driver (in-process, real libvirt code)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import FIXTURES, fixture_uri

from llmvirt.errors import HostTimeout
from llmvirt.model.cluster import Host
from llmvirt.observe.host_sessions import HostSessions
from llmvirt.observe.inventory import is_local_uri, read_host, run_bounded, scan_host, scan_hosts
from llmvirt.observe.nvml import LiveNvml, SampleNvml

SAMPLE = SampleNvml(FIXTURES / "nvml-sample.json")


def test_gpu_host_passthrough_and_vgpu() -> None:
    h = scan_host("gpu1", fixture_uri("gpu-host.xml"))
    assert (h.cpus, h.memory_mib, h.cpu_model) == (32, 262144, "AMD EPYC 9354")
    assert sorted(g.pci for g in h.gpus) == ["0000:41:00.0", "0000:c1:00.0"]  # the NIC is not a GPU
    l40 = next(g for g in h.gpus if g.pci == "0000:c1:00.0")
    assert l40.mdevs == (("c2177883-f1bb-47f0-914d-32a22e3a8804", "nvidia-1155"),)
    assert {m.type: m.available for m in l40.mdev_types} == {"nvidia-1155": 3, "nvidia-1156": 1}
    train = h.vm("train1")
    assert train is not None and train.has_passthrough_gpu and train.pinning[3] == (3,)
    assert train.emulator_pinning == (15,)
    infer = h.vm("infer1")
    assert infer is not None and not infer.has_pci_passthrough
    (att,) = infer.gpus
    assert (att.kind, att.mdev_type, att.parent_pci) == ("vgpu", "nvidia-1155", "0000:c1:00.0")


def test_busy_host_pinning_balloon_and_states() -> None:
    h = scan_host("busy", fixture_uri("busy-host.xml"))
    db1 = h.vm("db1")
    assert db1 is not None
    assert db1.vcpus == 4 and db1.max_vcpus == 6
    assert db1.pinning == {0: (8,), 1: (9,), 2: (10, 11), 3: (10, 11)}
    assert db1.persistent_pinning == db1.pinning
    assert db1.numa_tune == {"mode": "strict", "nodeset": "1"}
    assert db1.memory_mib == 8192 and db1.balloon.current_mib == 6144
    assert db1.balloon.usable_mib is not None and db1.balloon.unused_mib is not None  # guest-reported
    assert db1.cpu_time_ns is not None
    off = h.vm("batch-off")
    assert off is not None and off.state == "shutoff" and not off.running
    assert off.balloon.usable_mib is None
    assert [c.cpus for c in h.numa_cells] == [tuple(range(8)), tuple(range(8, 16))]


def test_pinning_change_is_seen_live() -> None:
    import libvirt

    conn = libvirt.open(fixture_uri("busy-host.xml"))  # each open gets its own copy of the file
    try:
        conn.lookupByName("web1").pinVcpuFlags(0, (False, False, True), 0)
        conn.lookupByName("web1").setMemoryFlags(1024 * 1024, 0)
        h = read_host(conn, "busy", fixture_uri("busy-host.xml"))
    finally:
        conn.close()
    web1 = h.vm("web1")
    assert web1 is not None and web1.pinning == {0: (2,)} and web1.current_memory_mib == 1024


def test_unreachable_host_does_not_stop_others() -> None:
    res = scan_hosts([("a", fixture_uri("busy-host.xml"), False),
                      ("gone", "qemu+unix:///system?socket=/nonexistent/sock", False),
                      ("b", fixture_uri("small-host.xml"), True)])
    assert [h.name for h in res.hosts] == ["a", "b"]
    assert res.hosts[1].maintenance
    assert "gone" in res.failures and "/nonexistent/sock" in res.failures["gone"]


def test_same_hostname_hosts_stay_distinct() -> None:
    res = scan_hosts([("x", fixture_uri("small-host.xml"), False), ("y", fixture_uri("small-host.xml"), False)])
    assert [h.hostname for h in res.hosts] == ["vm", "vm"]
    assert [h.name for h in res.hosts] == ["x", "y"]


def test_bounded_pool_times_out_a_stuck_host() -> None:
    def slow() -> Host:
        time.sleep(5)
        return Host(name="slow", uri="test:///default")

    t0 = time.monotonic()
    out = run_bounded([("slow", slow), ("fast", lambda: Host(name="fast", uri="test:///default"))],
                      workers=2, timeout=0.3)
    assert time.monotonic() - t0 < 2
    assert isinstance(out["slow"], HostTimeout) and isinstance(out["fast"], Host)


def test_bounded_pool_limits_concurrency() -> None:
    import threading

    live, peak = [0], [0]
    lock = threading.Lock()

    def task() -> Host:
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05)
        with lock:
            live[0] -= 1
        return Host(name="t", uri="test:///default")

    run_bounded([(str(i), task) for i in range(9)], workers=3, timeout=5)
    assert peak[0] == 3


def test_nvml_sample_attaches_to_matching_gpus() -> None:
    h = scan_host("gpu1", fixture_uri("gpu-host.xml"), nvml=SAMPLE)
    h100 = next(g for g in h.gpus if g.pci == "0000:41:00.0")
    assert h100.nvml is not None and h100.nvml.memory_total_mib == 81559 and h100.nvml.mig_mode == "disabled"


def test_missing_nvml_is_a_note_not_an_error() -> None:
    with pytest.raises(RuntimeError):
        LiveNvml().read()  # no NVIDIA driver on CI machines: NVML must fail cleanly
    h = scan_host("gpu1", fixture_uri("gpu-host.xml"), nvml=LiveNvml())
    assert any(n.startswith("NVML not available") for n in h.notes)
    assert all(g.nvml is None for g in h.gpus)


def test_local_uri_detection() -> None:
    assert is_local_uri("qemu:///system")
    assert is_local_uri("qemu+unix:///system?socket=/run/x/libvirt-sock")
    assert not is_local_uri("qemu+ssh://root@kvm1/system")
    assert not is_local_uri("qemu+tls://kvm2/system")


def _vms(host: Host) -> list[dict]:
    """Each VM as read, by name; less its CPU time, which the test driver takes from the clock."""
    from dataclasses import asdict

    return sorted(({**asdict(v), "cpu_time_ns": None} for v in host.vms), key=lambda v: v["name"])


@pytest.fixture
def kept() -> Iterator[HostSessions]:
    """A controller's kept connections, closed after the test."""
    sessions = HostSessions()
    yield sessions
    sessions.close()


def test_kept_connections_read_what_one_shot_scans_read(kept: HostSessions) -> None:
    """A controller's kept connections and remembered definitions change nothing in what a scan reads."""
    targets = [("busy", fixture_uri("busy-host.xml"), False), ("gpu1", fixture_uri("gpu-host.xml"), False)]
    fresh = scan_hosts(targets)
    for _ in range(3):
        res = scan_hosts(targets, sessions=kept)
        assert not res.failures and len(kept) == 2
        assert [_vms(h) for h in res.hosts] == [_vms(h) for h in fresh.hosts]
        assert [(h.gpus, h.numa_cells) for h in res.hosts] == [(h.gpus, h.numa_cells) for h in fresh.hosts]


def test_kept_connection_sees_changes_and_forgets_gone_vms(kept: HostSessions) -> None:
    """A definition that changed is parsed anew; a VM that is gone is no longer remembered."""
    uri = fixture_uri("busy-host.xml")
    scan_host("busy", uri, sessions=kept)
    session, opened = kept.get(uri)
    assert not opened and session.remembered == 3 + 2  # three live definitions, two running persistent pins
    session.conn.lookupByName("web1").pinVcpuFlags(0, (False, False, True), 0)  # the test driver's state
    assert scan_host("busy", uri, sessions=kept).vm("web1").pinning == {0: (2,)}
    off = session.conn.lookupByName("batch-off")
    off.undefine()
    host = scan_host("busy", uri, sessions=kept)
    assert host.vm("batch-off") is None and session.remembered == 2 + 2


def test_kept_connection_that_died_is_opened_again(kept: HostSessions) -> None:
    uri = fixture_uri("busy-host.xml")
    scan_host("busy", uri, sessions=kept)
    dead, _ = kept.get(uri)
    dead.conn.close()
    host = scan_host("busy", uri, sessions=kept)
    again, opened = kept.get(uri)
    assert not opened and again is not dead and sorted(v.name for v in host.vms) == ["batch-off", "db1", "web1"]
    kept.close()
    assert len(kept) == 0
