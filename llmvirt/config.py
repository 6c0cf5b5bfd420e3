"""The optional TOML config file listing hosts.

Default location: ``$XDG_CONFIG_HOME/llmvirt/config.toml`` (for root
``/root/.config/llmvirt/config.toml``), or ``LLMVIRT_CONFIG``, or
``--config PATH``. Format::

    [hosts.kvm1]
    uri = "qemu+ssh://root@kvm1.example.org/system"

    [hosts.kvm2]
    uri = "qemu+tls://kvm2.example.org/system"
    maintenance = true     # initial flag; `llmvirt hosts maintenance` changes it later

    [anti_affinity]        # VMs of a group never share a host
    web = ["web1", "web2"]

    [host_pinning]         # VMs that may run only on these hosts (licences, local disks)
    db1 = ["kvm1", "kvm2"]

    [rebalance]            # when rebalance acts: expected CPU use as a fraction of host CPUs
    # hot = 0.95           # unset: the balance default's tuned trigger (0.95), llmvirt's loop 0.8
    cold = 0.25

    [limits]               # allocation limits place and rebalance respect
    cpu_allocation_ratio = 4.0
    ram_allocation_ratio = 1.0
    reserved_cpus = 0
    reserved_memory_mib = 1024
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from llmvirt.errors import UsageError

if TYPE_CHECKING:
    from llmvirt.store.registry import RegisteredHost

CONFIG_ENV = "LLMVIRT_CONFIG"


def default_config_path() -> Path:
    """Where the config file is looked for when none is named."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "llmvirt" / "config.toml"


def load_hosts(path: Path | None) -> list[RegisteredHost]:
    """Hosts from the config file; an explicitly named file must exist and parse."""
    from llmvirt.store.registry import RegisteredHost

    explicit = path is not None or bool(os.environ.get(CONFIG_ENV))
    chosen = path or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else default_config_path())
    if not chosen.exists():
        if explicit:
            raise UsageError(f"config file {chosen} does not exist")
        return []
    try:
        data = tomllib.loads(chosen.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read config file {chosen}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {chosen} is not valid TOML: {exc}") from None
    hosts = data.get("hosts", {})
    if not isinstance(hosts, dict):
        raise UsageError(f"config file {chosen}: [hosts] must be a table of tables")
    out = []
    for name, spec in hosts.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("uri"), str):
            raise UsageError(f"config file {chosen}: host {name!r} needs a string 'uri'")
        out.append(RegisteredHost(name=name, uri=spec["uri"], maintenance=bool(spec.get("maintenance", False)),
                                  source="config"))
    return out


def _read(path: Path | None) -> dict:
    chosen = path or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else default_config_path())
    if not chosen.exists():
        return {}
    try:
        return tomllib.loads(chosen.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {chosen} is not valid TOML: {exc}") from None


def load_groups(path: Path | None) -> dict[str, str]:
    """VM name -> anti-affinity group, from ``[anti_affinity] group = ["vm1", "vm2"]``."""
    out: dict[str, str] = {}
    for group, members in _read(path).get("anti_affinity", {}).items():
        if not isinstance(members, list):
            raise UsageError(f"config: anti_affinity.{group} must be a list of VM names")
        out.update({str(m): group for m in members})
    return out


def load_limits(path: Path | None):  # noqa: ANN201 - avoids importing the policy package at CLI start
    """Allocation limits from ``[limits]`` (cpu_allocation_ratio, ram_allocation_ratio, reserved_*)."""
    from llmvirt.policy.constraints import Limits

    raw = _read(path).get("limits", {})
    try:
        return Limits(**{k: type(getattr(Limits(), k))(v) for k, v in raw.items()})
    except (TypeError, ValueError) as exc:
        raise UsageError(f"config: invalid [limits]: {exc}") from None


def load_migration_settings(path: Path | None):  # noqa: ANN201
    """``[apply]``: migrate_uri, peer_to_peer, auto_converge, timeout_base_s, timeout_per_gib_s, max_parallel,
    bandwidth_mib_s."""
    from llmvirt.act.runner import MigrationSettings

    raw = _read(path).get("apply", {})
    try:
        return MigrationSettings(**raw)
    except TypeError as exc:
        raise UsageError(f"config: invalid [apply]: {exc}") from None


def load_guardrails(path: Path | None):  # noqa: ANN201
    """What the executor re-checks every action against: limits, anti-affinity groups, host pinning, and
    how migrations run (:class:`llmvirt.act.runner.Guardrails`)."""
    from llmvirt.act.runner import Guardrails

    return Guardrails(load_limits(path), load_groups(path), load_host_pins(path), load_migration_settings(path))


def load_thresholds(path: Path | None, defaults=None):  # noqa: ANN001, ANN201
    """``[rebalance]``: hot, cold, gain_margin (fractions of host CPUs); unset keys from ``defaults``."""
    from dataclasses import asdict, replace

    from llmvirt.policy.decide import Thresholds

    raw = _read(path).get("rebalance", {})
    if "hot_configured" in raw:  # a field of Thresholds, not a setting
        raise UsageError("config: invalid [rebalance]: unknown key 'hot_configured' (use hot, cold, gain_margin)")
    try:
        th = Thresholds(**{**asdict(defaults or Thresholds()), **{k: float(v) for k, v in raw.items()}})
    except (TypeError, ValueError) as exc:
        raise UsageError(f"config: invalid [rebalance]: {exc}") from None
    if not 0 < th.cold < th.hot <= 2:
        raise UsageError("config: [rebalance] needs 0 < cold < hot <= 2")
    return replace(th, hot_configured=th.hot_configured or "hot" in raw)


def load_host_pins(path: Path | None) -> dict[str, tuple[str, ...]]:
    """VM -> the only hosts it may run on, from ``[host_pinning] vm = ["kvm1", "kvm2"]``."""
    out: dict[str, tuple[str, ...]] = {}
    for vm, hosts in _read(path).get("host_pinning", {}).items():
        if not isinstance(hosts, list) or not hosts:
            raise UsageError(f"config: host_pinning.{vm} must be a non-empty list of host names")
        out[str(vm)] = tuple(str(h) for h in hosts)
    return out


OUTCOME_WINDOW_S = 900.0  #: default: outcomes are measured over the 15 minutes after an action (3 cron intervals)


def load_outcome_window(path: Path | None) -> float:
    """``[outcomes] window_s``: seconds of scans after an action that measure its outcome (default 900)."""
    raw = _read(path).get("outcomes", {})
    try:
        window = float(raw.get("window_s", OUTCOME_WINDOW_S))
    except (TypeError, ValueError):
        raise UsageError("config: [outcomes] window_s must be a number of seconds") from None
    if window < 0:
        raise UsageError("config: [outcomes] window_s must be at least 0")
    return window
