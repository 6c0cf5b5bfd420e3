"""One type for a change to a VM, from the moment a strategy plans it until the journal closes it.

An :class:`Action` is a live migration, a vCPU pinning or a balloon target, with the reason it was
planned, its predicted effect and the inputs it was decided from (kept for retraining). Strategies
return Actions in a plan, the executor applies them to libvirt, the journal stores them (its
``params`` column is :meth:`Action.params`) and reads them back (:meth:`Action.from_params`). The
simulator speaks the same thing in array form: a ``(VM index, host index)`` pair, mapped to names
by the arrays' identity.

An executed action comes to an :class:`Outcome`: ``done``, ``skipped`` (nothing was changed: the VM
moved, stopped or vanished first) or ``failed`` (something was tried and did not happen). They are
distinct on purpose: a skipped action is not a fault of the host or the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MIGRATE, PIN, BALLOON = "migrate", "pin", "balloon"
KINDS = (MIGRATE, PIN, BALLOON)
DONE, SKIPPED, FAILED = "done", "skipped", "failed"

#: a migration's predicted effect, in the order the ``rebalance --json`` contract lists it
MIGRATE_EFFECT = ("src_cpu_before", "src_cpu_after", "dst_cpu_before", "dst_cpu_after", "power_delta_w")


@dataclass
class Action:
    """One planned (and later executed) change: migrate, pin or balloon.

    ``src`` is the host the VM runs on (a migration's source); ``dst`` only a migration has.
    """

    kind: str  #: migrate, pin or balloon
    vm: str  #: VM name
    src: str  #: host the VM runs on
    dst: str | None = None  #: migrate: destination host
    reason: str = ""  #: why it was planned
    uuid: str | None = None  #: the VM's UUID (its identity across hosts), where known
    pins: dict[int, tuple[int, ...]] = field(default_factory=dict)  #: pin: vCPU -> host CPUs
    emulator: tuple[int, ...] | None = None  #: pin: emulator threads' host CPUs
    target_mib: int | None = None  #: balloon: new balloon size
    effect: dict[str, float] = field(default_factory=dict)  #: predicted effect (e.g. CPU use before/after)
    inputs: dict[str, Any] | None = None  #: what it was decided from (candidates, features), for retraining

    def __post_init__(self) -> None:
        """Refuse an action that lacks what its kind needs."""
        if self.kind not in KINDS:
            raise ValueError(f"unknown action kind {self.kind!r}")
        if self.kind == MIGRATE and not self.dst:
            raise ValueError("a migration needs a destination")
        if self.kind == PIN and not self.pins:
            raise ValueError("a pinning needs at least one vCPU")
        if self.kind == BALLOON and self.target_mib is None:
            raise ValueError("a balloon action needs a target")

    @classmethod
    def migrate(cls, vm: str, src: str, dst: str, reason: str, **kw: Any) -> Action:
        """A live migration."""
        return cls(MIGRATE, vm, src, dst, reason, **kw)

    @classmethod
    def pin(cls, vm: str, host: str, pins: dict[int, tuple[int, ...]], reason: str, **kw: Any) -> Action:
        """A vCPU pinning."""
        return cls(PIN, vm, host, None, reason, pins=pins, **kw)

    @classmethod
    def balloon(cls, vm: str, host: str, target_mib: int, reason: str, **kw: Any) -> Action:
        """A balloon target."""
        return cls(BALLOON, vm, host, None, reason, target_mib=int(target_mib), **kw)

    @property
    def hosts(self) -> set[str]:
        """The hosts the action touches (one for pin and balloon, two for a migration)."""
        return {h for h in (self.src, self.dst) if h}

    def params(self) -> dict[str, Any]:
        """The kind-specific part as the journal stores it (JSON)."""
        out: dict[str, Any] = {"reason": self.reason}
        if self.kind == PIN:
            out["pins"] = {str(k): list(v) for k, v in self.pins.items()}
            if self.emulator:
                out["emulator"] = list(self.emulator)
        if self.kind == BALLOON:
            out["target_mib"] = self.target_mib
        if self.effect:
            out["effect"] = self.effect
        if self.inputs:
            out["decision"] = self.inputs
        return out

    @classmethod
    def from_params(cls, kind: str, vm: str, src: str, dst: str | None, params: dict[str, Any],
                    uuid: str | None = None) -> Action:
        """The action back from the journal's columns (the inverse of :meth:`params`)."""
        p = params or {}
        return cls(kind, vm, src, dst, str(p.get("reason") or p.get("why") or ""), uuid,
                   pins={int(k): tuple(v) for k, v in (p.get("pins") or {}).items()},
                   emulator=tuple(p["emulator"]) if p.get("emulator") else None,
                   target_mib=int(p["target_mib"]) if p.get("target_mib") is not None else None,
                   effect=dict(p.get("effect") or {}), inputs=p.get("decision"))

    def row(self) -> dict[str, Any]:
        """The action as the journal's columns, which is also how pin and balloon plans print it."""
        return {"kind": self.kind, "vm": self.vm, "vm_uuid": self.uuid, "src": self.src, "dst": self.dst,
                "params": self.params()}

    def as_json(self) -> dict[str, Any]:
        """The action in a plan's JSON contract: a migration with its predicted effect as flat fields (the
        ``rebalance --json`` moves), a pin or balloon action as its :meth:`row`."""
        if self.kind == MIGRATE:
            return {"kind": MIGRATE, "vm": self.vm, "src": self.src, "dst": self.dst, "reason": self.reason,
                    **{k: self.effect[k] for k in MIGRATE_EFFECT if k in self.effect}}
        return self.row()

    def describe(self) -> str:
        """One line: what the action does."""
        if self.kind == MIGRATE:
            return f"migrate {self.vm} {self.src} -> {self.dst}"
        if self.kind == PIN:
            return f"pin {self.vm} on {self.src}: " + ", ".join(
                f"{v}->{','.join(map(str, c))}" for v, c in sorted(self.pins.items()))
        return f"balloon {self.vm} on {self.src} -> {self.target_mib} MiB"


@dataclass
class Outcome:
    """What an executed action came to."""

    status: str  #: done, skipped or failed
    detail: str = ""  #: reason or summary
    extra: dict[str, float] = field(default_factory=dict)  #: what it measured, e.g. migration seconds
