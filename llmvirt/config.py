"""The optional TOML config file listing hosts.

Default location: ``$XDG_CONFIG_HOME/llmvirt/config.toml`` (for root
``/root/.config/llmvirt/config.toml``), or ``LLMVIRT_CONFIG``, or
``--config PATH``. Format::

    [hosts.kvm1]
    uri = "qemu+ssh://root@kvm1.example.org/system"

    [hosts.kvm2]
    uri = "qemu+tls://kvm2.example.org/system"
    maintenance = true     # initial flag; `llmvirt hosts maintenance` changes it later
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from llmvirt.errors import UsageError
from llmvirt.store.registry import RegisteredHost

CONFIG_ENV = "LLMVIRT_CONFIG"


def default_config_path() -> Path:
    """Where the config file is looked for when none is named."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "llmvirt" / "config.toml"


def load_hosts(path: Path | None) -> list[RegisteredHost]:
    """Hosts from the config file; an explicitly named file must exist and parse."""
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
