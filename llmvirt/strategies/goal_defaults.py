"""What runs for each goal when a command names no policy but the default: the tuned baseline a policy's
``strategies.json`` names (where no learned strategy beat it), else the policy's own learned part."""

from __future__ import annotations

import json

from llmvirt.errors import UsageError
from llmvirt.policy import decide

GOAL_DEFAULTS = "strategies.json"  #: in a policy directory: {goal: {"strategy": NAME, "why": ...}}


def goal_default(spec: str | None, goal: str) -> tuple[str, str] | None:
    """The strategy a policy directory names for ``goal`` instead of its learned head, and why.

    A learned strategy is the default only where it beats the tuned baselines (on the training
    split); where it does not, the policy says which tuned baseline runs instead, and the model card
    says why. ``llmvirt-head`` still runs the head itself."""
    path = decide.policy_dir(spec) / GOAL_DEFAULTS
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text()).get(goal)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable: {exc}") from None
    return (str(entry["strategy"]), str(entry.get("why", ""))) if entry else None


def has_head(spec: str | None) -> bool:
    """Whether the policy directory holds a learned consolidation head (what ``llmvirt`` runs for consolidate
    when its strategies.json names no tuned baseline)."""
    from llmvirt.policy import consolidate_head

    return (decide.policy_dir(spec) / f"{consolidate_head.SPEC_NAME}.json").is_file()


def goal_strategy(spec: str | None, goal: str) -> tuple[str, str]:
    """What runs for ``goal`` (balance, consolidate or place) when a command names no other policy than ``spec``,
    and why: the tuned baseline its strategies.json names, else ``llmvirt``, the policy's own learned part, as
    :func:`_learned` resolves it."""
    chosen = goal_default(spec, goal)
    if chosen is not None:
        return chosen
    part = {"place": "its placement scorer", "balance": "its placement scorer in llmvirt's rebalance loop",
            "consolidate": "its consolidation head" if has_head(spec) else
            "its placement scorer in llmvirt's rebalance loop (it has no consolidation head)"}[goal]
    return "llmvirt", f"no tuned baseline named for it: the policy's own learned part runs ({part})"
