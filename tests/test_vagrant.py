"""The Vagrant lab's files: syntax here, the guest and URIs e2e.py uses. The lab itself boots in CI's
``make vagrant-smoke`` (box built here, one machine, checked over ssh and qemu+ssh) and, in full, with
``make vagrant-e2e`` (bench/RESULTS.md, "The Vagrant lab")."""

import importlib.util
import py_compile
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

VAGRANT = Path(__file__).resolve().parents[1] / "vagrant"


def _e2e():
    spec = importlib.util.spec_from_file_location("vagrant_e2e", VAGRANT / "e2e.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_vagrantfile_is_valid_ruby() -> None:
    ruby = shutil.which("ruby")
    assert ruby, "ruby must be installed (scripts/setup.sh installs it)"
    res = subprocess.run([ruby, "-c", str(VAGRANT / "Vagrantfile")], capture_output=True, text=True)
    assert res.returncode == 0 and "Syntax OK" in res.stdout, res.stderr


def test_shell_scripts_parse() -> None:
    for script in ("provision.sh", "build-box.sh", "run-e2e.sh"):
        res = subprocess.run(["bash", "-n", str(VAGRANT / script)], capture_output=True, text=True)
        assert res.returncode == 0, (script, res.stderr)


def test_python_helpers_compile() -> None:
    for script in ("e2e.py", "probe_driver.py"):
        py_compile.compile(str(VAGRANT / script), doraise=True)


def test_hosts_are_registered_over_qemu_ssh_as_root() -> None:
    assert _e2e().uri("kvm2") == "qemu+ssh://root@kvm2/system?no_verify=1"


def test_e2e_guest_boots_from_the_shared_directory_under_tcg_with_balloon_stats() -> None:
    """The nested guest must be able to run on every host: its kernel, initramfs and console log live on
    kvm1's NFS export, it runs under TCG (kernel guests hang under nested KVM here), and it reports memory."""
    e2e = _e2e()
    d = e2e.REMOTE_DIR
    root = ET.fromstring(e2e.guest_xml(d / "vmlinuz-6.1.0-1-cloud-amd64", d / "initrd.img"))
    assert root.get("type") == "qemu" and root.findtext("name") == e2e.GUEST
    assert root.findtext("os/kernel").startswith(str(d)) and root.findtext("os/initrd").startswith(str(d))
    assert root.find("devices/serial/log").get("file").startswith(str(d))
    assert root.find("devices/memballoon").get("model") == "virtio"
    assert root.find("devices/memballoon/stats").get("period") == "2"
