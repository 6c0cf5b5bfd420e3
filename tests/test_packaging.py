"""Packaging (issue 18): the wheel holds all of llmvirt and its shipped policies; the Debian package's
units, man page and version agree with the code they ship."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_for_the_wheel() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "llmvirt").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)


def test_shipped_units_are_the_ones_cron_print_writes() -> None:
    """The Debian package's units (packaging/systemd/) are what ``llmvirt cron print`` renders for /usr/bin/llmvirt."""
    from llmvirt.unattended import CONTROLLER_UNIT, controller_unit, systemd_units

    for name, text in systemd_units("/usr/bin/llmvirt").items():
        assert (ROOT / "packaging" / "systemd" / name).read_text() == text, name
    assert (ROOT / "packaging" / "systemd" / CONTROLLER_UNIT).read_text() == controller_unit("/usr/bin/llmvirt")
    installed = (ROOT / "packaging" / "debian" / "llmvirt.install").read_text()
    assert all(f"packaging/systemd/{p.name} " in installed for p in (ROOT / "packaging" / "systemd").iterdir())


def test_unattended_runs_step_at_the_interval_the_balance_default_was_judged_at() -> None:
    """The packaged timer and ``cron print`` run, and the controller plans, every 5 minutes: the simulator's step
    (the balance default was tuned and judged deciding once a step) and the spacing of the scan recovery's hour of
    scans."""
    from llmvirt.controller import ControllerSettings
    from llmvirt.sim.balance_env import EnvConfig
    from llmvirt.store.snapshots import STEP_S
    from llmvirt.unattended import EVERY_MINUTES, crontab_line

    assert EVERY_MINUTES * 60 == EnvConfig().interval_s == STEP_S
    timer = (ROOT / "packaging" / "systemd" / "llmvirt-rebalance.timer").read_text()
    assert "OnUnitActiveSec=5min" in timer and crontab_line("llmvirt").startswith("*/5 * * * * ")
    assert ControllerSettings().plan_every_s == STEP_S
    unit = (ROOT / "packaging" / "systemd" / "llmvirt-controller.service").read_text()
    assert "--interval 60 --plan-every 300 --apply" in unit


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd itself parses the units: every directive known, every value valid, ExecStart executable."""
    from llmvirt.unattended import CONTROLLER_UNIT, controller_unit, systemd_units

    exe = str(Path(sys.executable).parent / "llmvirt")
    for name, text in systemd_units(exe, every_minutes=15, apply=False).items():
        (tmp_path / name).write_text(text)
    (tmp_path / CONTROLLER_UNIT).write_text(controller_unit(exe, 30, apply=False))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    # and a unit systemd would warn about is caught the same way
    (tmp_path / "llmvirt-rebalance.timer").write_text(systemd_units(exe)["llmvirt-rebalance.timer"]
                                                       .replace("OnBootSec=5min", "OnBootSec=five"))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "llmvirt-rebalance.timer")],
                         capture_output=True, text=True, timeout=60)
    assert "Failed to parse timer value" in res.stderr


def test_crontab_line_is_valid_for_minutes_and_hours() -> None:
    from llmvirt.unattended import crontab_line

    assert crontab_line("llmvirt", 5).startswith("*/5 * * * * llmvirt scan --json")
    assert crontab_line("llmvirt", 120, apply=False).startswith("0 */2 * * * llmvirt scan")
    assert "rebalance --apply" in crontab_line("llmvirt", 10) and "--apply" not in crontab_line("x", 10, False)
    with pytest.raises(ValueError, match="whole number of hours"):
        crontab_line("llmvirt", 90)


def _man_text() -> str:
    res = subprocess.run(["man", "--no-hyphenation", "--no-justification", "-l", str(ROOT / "packaging" / "llmvirt.1")],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, MANWIDTH="200"))
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_man_page_renders_without_warnings() -> None:
    res = subprocess.run(["groff", "-man", "-ww", "-z", str(ROOT / "packaging" / "llmvirt.1")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr, res.stderr


def test_man_page_names_every_command_and_exit_code() -> None:
    """The man page keeps up with the CLI: every command and subcommand, and every documented exit code."""
    import typer.main

    from llmvirt.cli import app

    text = " ".join(_man_text().split())
    root = typer.main.get_command(app)
    for name, cmd in root.commands.items():
        subs = getattr(cmd, "commands", None)
        for full in [f"{name} {s}" for s in subs] if subs else [name]:
            assert full in text, f"the man page does not mention `llmvirt {full}`"
    ops = (ROOT / "docs" / "operations.md").read_text()
    exits = text[text.index("EXIT STATUS"):text.index("ENVIRONMENT")]
    for code in sorted(set(re.findall(r"^\| (\d) \|", ops, re.M))):
        assert re.search(rf"\b{code}\b", exits), code


def test_version_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    res = subprocess.run([sys.executable, "-m", "llmvirt", "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == f"llmvirt {version}", res
    assert f'"llmvirt {version}"' in (ROOT / "packaging" / "llmvirt.1").read_text().splitlines()[0]
    assert (ROOT / "packaging" / "debian" / "changelog").read_text().startswith(f"llmvirt ({version})")


def test_shipped_policies_travel_in_the_wheel() -> None:
    """Every file the default policy needs is matched by the wheel's package data for ``llmvirt_policies``."""
    import fnmatch

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["llmvirt_policies"]
    shipped = [p.relative_to(ROOT / "policies").as_posix() for p in (ROOT / "policies").rglob("*")
               if p.is_file() and p.parent.name in ("policies", "default") and p.suffix != ".py"]
    missing = [f for f in shipped if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert shipped and not missing, missing
