"""What every action runner shares: the guardrails it re-checks, the hosts it talks to, and the
one sequence pre-condition -> execute -> post-condition.

A runner is a small class per action kind (:mod:`llmvirt.act.migrate`, :mod:`llmvirt.act.pin`,
:mod:`llmvirt.act.balloon`) with the same three methods, each taking the :class:`Action` and the
:class:`Env`. ``pre_condition`` re-reads the host and returns an Outcome when the action must not
run (``skipped``: nothing to do any more; ``failed``: it would break a rule); ``execute`` makes the
change; ``post_condition`` reads it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import libvirt

from llmvirt.errors import HostError, translate_libvirt
from llmvirt.model.action import DONE, FAILED, SKIPPED, Action, Outcome
from llmvirt.policy.constraints import Limits

__all__ = ["DONE", "FAILED", "SKIPPED", "Env", "Guardrails", "MigrationSettings", "Outcome", "Runner", "run"]


@dataclass(frozen=True)
class MigrationSettings:
    """How live migrations run (config ``[apply]``)."""

    migrate_uri: str | None = None  #: data URI, e.g. tcp://10.0.0.2; None lets libvirt choose
    peer_to_peer: bool = False  #: libvirtd talks to the destination itself (needs host-to-host auth)
    auto_converge: bool = False  #: throttle the guest's CPU if memory dirties faster than it copies
    timeout_base_s: float = 60.0  #: completion timeout, fixed part
    timeout_per_gib_s: float = 60.0  #: completion timeout per GiB of guest memory (Nova's idea)
    poll_s: float = 0.5  #: how often progress is read
    max_parallel: int = 1  #: migrations at once in the cluster (never more than one per host)
    bandwidth_mib_s: int = 0  #: cap each migration's bandwidth (MiB/s, like Nova's live_migration_bandwidth); 0: none


@dataclass(frozen=True)
class Guardrails:
    """What every action is re-checked against on the live host, and how migrations run."""

    limits: Limits = field(default_factory=Limits)  #: allocation limits and reservations
    groups: dict[str, str] = field(default_factory=dict)  #: VM -> anti-affinity group
    host_pins: dict[str, tuple[str, ...]] = field(default_factory=dict)  #: VM -> the only hosts it may run on
    settings: MigrationSettings = field(default_factory=MigrationSettings)  #: config ``[apply]``


class Connections(Protocol):
    """Open libvirt connections by host name (the executor's :class:`~llmvirt.act.hosts.Hosts`)."""

    def conn(self, name: str) -> libvirt.virConnect:
        """An open connection to host ``name``."""
        ...

    def uri(self, name: str) -> str:
        """The host's libvirt URI."""
        ...

    def maintenance(self, name: str) -> bool:
        """Whether the host is in maintenance now."""
        ...


@dataclass
class Env:
    """What a runner acts with: the hosts, the guardrails, and where progress goes."""

    hosts: Connections  #: connections by host name
    guard: Guardrails = field(default_factory=Guardrails)  #: rules and migration settings
    progress: Callable[[float], None] | None = None  #: fraction done, for long actions


class Runner(Protocol):
    """One action kind on libvirt."""

    def pre_condition(self, a: Action, env: Env) -> Outcome | None:
        """None when the action may run; else the outcome (skipped or failed) with why."""
        ...

    def execute(self, a: Action, env: Env) -> Outcome:
        """Make the change."""
        ...

    def post_condition(self, a: Action, env: Env, outcome: Outcome) -> Outcome:
        """Read the change back: the outcome, or failed when the host does not show it."""
        ...


def run(runner: Runner, a: Action, env: Env) -> Outcome:
    """Pre-condition, execute, post-condition; a host error becomes a failed outcome with its one line."""
    try:
        with translate_libvirt(f"{a.kind} {a.vm}"):
            pre = runner.pre_condition(a, env)
            if pre is not None:
                return pre
            outcome = runner.execute(a, env)
            return runner.post_condition(a, env, outcome) if outcome.status == DONE else outcome
    except HostError as exc:
        return Outcome(FAILED, str(exc))


def find(conn: libvirt.virConnect, uuid: str | None) -> libvirt.virDomain | None:
    """The domain with ``uuid`` on ``conn``, or None."""
    if not uuid:
        return None
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def running(dom: libvirt.virDomain | None) -> bool:
    """The domain exists and runs."""
    return dom is not None and bool(dom.isActive())


def running_here(a: Action, env: Env) -> libvirt.virDomain | Outcome:
    """The action's running domain on its host, or the ``skipped`` outcome when it does not run there."""
    dom = find(env.hosts.conn(a.src), a.uuid)
    if dom is None or not dom.isActive():
        return Outcome(SKIPPED, f"{a.vm} is not running on {a.src}")
    return dom
