from pathlib import Path

import pytest

from llmvirt.errors import UsageError
from llmvirt.observe.domain_xml import parse_domain
from llmvirt.observe.libvirt_xml import (
    derive_numa_cells,
    format_cpuset,
    parse_cpuset,
    parse_mdev,
    parse_numa_cells,
    parse_pci_gpu,
)

CAPS = """<capabilities><host><topology><cells num='2'>
<cell id='0'><memory unit='KiB'>8388608</memory><cpus num='2'><cpu id='0'/><cpu id='2'/></cpus></cell>
<cell id='1'><memory unit='KiB'>4194304</memory><cpus num='2'><cpu id='1'/><cpu id='3'/></cpus></cell>
</cells></topology></host></capabilities>"""


@pytest.mark.parametrize(("text", "cpus"), [
    ("0-3", (0, 1, 2, 3)), ("0-3,^2", (0, 1, 3)), ("8", (8,)), ("1,3-4, 6", (1, 3, 4, 6)), ("", ()),
])
def test_parse_cpuset(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpuset(text) == cpus


@pytest.mark.parametrize("bad", ["a-b", "3-1", "1,,x"])
def test_parse_cpuset_rejects_garbage(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_cpuset(bad)


def test_format_cpuset_round_trips() -> None:
    assert format_cpuset([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"
    assert parse_cpuset(format_cpuset([5, 1, 2])) == (1, 2, 5)


def test_numa_cells_from_capabilities() -> None:
    cells = parse_numa_cells(CAPS)
    assert [(c.id, c.cpus, c.memory_mib) for c in cells] == [(0, (0, 2), 8192), (1, (1, 3), 4096)]


def test_derived_cells_split_evenly() -> None:
    cells = derive_numa_cells(16, 65536, 2)
    assert cells[1].cpus == tuple(range(8, 16)) and cells[0].memory_mib == 32768


def test_domain_pinning_memory_and_gpus() -> None:
    xml = (Path(__file__).parent / "fixtures" / "gpu-host.xml").read_text()
    dom = xml[xml.index("<domain"):xml.index("</domain>") + len("</domain>")]
    cfg = parse_domain(dom)
    assert cfg.memory_mib == 65536 and cfg.current_memory_mib == 65536
    assert cfg.vcpus == 8 and cfg.pinning[7] == (7,) and cfg.emulator_pinning == (15,)
    assert cfg.numa_tune == {"mode": "strict", "nodeset": "0"}
    assert [(g.kind, g.pci) for g in cfg.gpus] == [("passthrough", "0000:41:00.0")]
    assert cfg.balloon_period == 10


def test_vcpu_cpuset_pins_every_vcpu_without_own_pin() -> None:
    cfg = parse_domain("<domain><vcpu cpuset='2-3' current='2'>4</vcpu>"
                       "<cputune><vcpupin vcpu='1' cpuset='5'/></cputune></domain>")
    assert cfg.vcpus == 2 and cfg.max_vcpus == 4
    assert cfg.pinning == {0: (2, 3), 1: (5,)}


def test_pci_gpu_and_non_gpu() -> None:
    gpu = parse_pci_gpu("""<device><name>pci_0000_c1_00_0</name><driver><name>nvidia</name></driver>
      <capability type='pci'><class>0x030200</class><domain>0</domain><bus>193</bus><slot>0</slot>
      <function>0</function><product id='0x26b9'>AD102GL [L40S]</product>
      <vendor id='0x10de'>NVIDIA Corporation</vendor><capability type='mdev_types'>
      <type id='nvidia-1155'><name>L40S-12Q</name><availableInstances>3</availableInstances></type>
      </capability></capability></device>""")
    assert gpu is not None
    assert (gpu.pci, gpu.vendor_id, gpu.model, gpu.driver) == ("0000:c1:00.0", "0x10de", "AD102GL [L40S]", "nvidia")
    assert [(m.type, m.available) for m in gpu.mdev_types] == [("nvidia-1155", 3)]
    nic = parse_pci_gpu("<device><capability type='pci'><class>0x020000</class></capability></device>")
    assert nic is None


def test_mdev_parent_and_type() -> None:
    got = parse_mdev("""<device><name>mdev_x</name><parent>pci_0000_c1_00_0</parent>
      <capability type='mdev'><type id='nvidia-1155'/><uuid>c2177883-f1bb-47f0-914d-32a22e3a8804</uuid>
      </capability></device>""")
    assert got == ("c2177883-f1bb-47f0-914d-32a22e3a8804", "nvidia-1155", "0000:c1:00.0")


def test_each_domain_element_writes_what_it_parses() -> None:
    """virtinst style: every element class parses what it writes, for the values llmvirt uses."""
    import xml.etree.ElementTree as ET

    from llmvirt.observe import domain_xml as dx

    parts = [dx.Memory(4096), dx.Memory(2048, "currentMemory"), dx.Vcpu(4, 2, "static", (2, 3)),
             dx.CpuTune({0: (1,), 1: (2, 3, 4)}, (0,)), dx.NumaTune({"mode": "strict", "nodeset": "1"}),
             dx.MemBalloon("virtio", 10), dx.HostDev("passthrough", pci="0000:41:00.0"),
             dx.HostDev("vgpu", mdev_uuid="c2177883-f1bb-47f0-914d-32a22e3a8804"),
             dx.Os("/k", "/i", "console=ttyS0", "x86_64", "pc"), dx.Os(), dx.CpuModel("qemu64", ("svm",))]
    for part in parts:
        text = ET.tostring(part.element(), encoding="unicode")
        assert type(part).parse(ET.fromstring(text)) == part, text
    serial = dx.LoggedSerial("/var/log/c.log")
    assert dx.LoggedSerial.parse(serial.elements()[0]) == serial


def test_a_domain_round_trips_through_libvirt() -> None:
    """The fixture's GPU domain parsed, written by Domain.to_xml, defined on libvirt's test driver, and read back
    by libvirt: the same pinning, memory, NUMA tuning, GPUs and balloon."""
    import libvirt

    from llmvirt.observe.domain_xml import parse_domain

    xml = (Path(__file__).parent / "fixtures" / "gpu-host.xml").read_text()
    original = parse_domain(xml[xml.index("<domain"):xml.index("</domain>") + len("</domain>")])
    original.name, original.uuid, original.type = "copy", "", "test"
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(original.to_xml())
        back = parse_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    finally:
        conn.close()
    assert back.uuid  # libvirt assigned one
    for attr in ("memory_mib", "current_memory_mib", "vcpus", "pinning", "emulator_pinning", "numa_tune", "gpus",
                 "balloon_period"):
        assert getattr(back, attr) == getattr(original, attr), attr
