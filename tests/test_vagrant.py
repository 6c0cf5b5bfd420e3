"""The Vagrant lab cannot boot here (no boxes can be downloaded); its files are syntax-checked."""

import py_compile
import shutil
import subprocess
from pathlib import Path

VAGRANT = Path(__file__).resolve().parents[1] / "vagrant"


def test_vagrantfile_is_valid_ruby() -> None:
    ruby = shutil.which("ruby")
    assert ruby, "ruby must be installed (scripts/setup.sh installs it)"
    res = subprocess.run([ruby, "-c", str(VAGRANT / "Vagrantfile")], capture_output=True, text=True)
    assert res.returncode == 0 and "Syntax OK" in res.stdout, res.stderr


def test_provisioning_scripts_parse() -> None:
    for script in ("provision.sh", "e2e.sh"):
        res = subprocess.run(["bash", "-n", str(VAGRANT / script)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


def test_e2e_script_compiles() -> None:
    py_compile.compile(str(VAGRANT / "e2e.py"), doraise=True)
