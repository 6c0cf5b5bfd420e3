"""The Proxmox CRS conformance table: each case, Proxmox's decisions, and how a scheduler compares.

For every case directory: Proxmox's own decisions (from ``log.expect``), the decisions of
``baseline:proxmox-crs`` (which must be identical) and of the scheduler under test (llmvirt's default
policy unless told otherwise), classified as

- ``match``: the same decisions in the same order;
- ``equal-or-better``: different decisions that leave Proxmox's own imbalance measure equal or lower
  at the end of the case, with no guest left without a node that Proxmox placed;
- ``differs``: different and worse by Proxmox's measure, with the reason stated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmvirt.peers import pve_case, pve_replay
from llmvirt.peers.pve_case import Decision
from llmvirt.peers.pve_replay import HaReplay, Scheduler

TOLERANCE = 0.005  #: imbalances this close are equal (Proxmox logs two decimals)


@dataclass
class CaseResult:
    """One case's row of the table."""

    case: str
    summary: str  #: the case's README, first sentence
    expected: list[Decision]
    baseline: list[Decision]
    tested: list[Decision]
    scheduler: str
    status: str  #: match, equal-or-better or differs
    reason: str
    imbalance_proxmox: float
    imbalance_tested: float
    unsupported: list[str] = field(default_factory=list)

    @property
    def baseline_matches(self) -> bool:
        """True when ``baseline:proxmox-crs`` made exactly Proxmox's decisions."""
        return self.baseline == self.expected

    def as_json(self) -> dict[str, Any]:
        """The ``peers pve-crs --json`` row."""
        return {
            "case": self.case, "summary": self.summary,
            "proxmox": [d.text() for d in self.expected],
            "baseline_proxmox_crs": {"matches": self.baseline_matches, "decisions": [d.text() for d in self.baseline]},
            "tested": {"scheduler": self.scheduler, "status": self.status, "reason": self.reason,
                       "decisions": [d.text() for d in self.tested]},
            "final_imbalance": {"proxmox": round(self.imbalance_proxmox, 3), "tested": round(self.imbalance_tested, 3)},
            "unsupported_commands": self.unsupported,
        }


def _first_sentence(text: str) -> str:
    flat = " ".join(text.split())
    return flat.split(". ")[0].rstrip(".")


def _reason(expected: list[Decision], tested: list[Decision], pve: HaReplay, run: HaReplay) -> str:
    """Why the tested scheduler decided differently, from what differs (with llmvirt's own design reason
    where the tested scheduler is llmvirt's policy)."""
    who = run.scheduler.name
    ours = who.startswith("llmvirt")
    exp_reb = [d for d in expected if d.kind == "rebalance"]
    got_reb = [d for d in tested if d.kind == "rebalance"]
    exp_place = [d for d in expected if d.kind != "rebalance"]
    got_place = [d for d in tested if d.kind != "rebalance"]
    parts = []
    if exp_place != got_place:
        n = sum(a != b for a, b in zip(exp_place, got_place, strict=False)) + abs(len(exp_place) - len(got_place))
        parts.append(f"{n} placement(s) differ: {who} ranks nodes by llmvirt's placement scorer (CPU headroom "
                     "and fit), Proxmox by TOPSIS on CPU and memory shares with memory weighted 5-10x")
    if len(got_reb) < len(exp_reb):
        why = (": it moves a VM to relieve a hot node (expected CPU above its hot threshold) or to drain one, "
               "and does not even out nodes that are under it") if ours else ""
        parts.append(f"{who} made {len(got_reb)} of Proxmox's {len(exp_reb)} rebalancing migrations{why}")
    elif len(got_reb) > len(exp_reb):
        parts.append(f"{who} made {len(got_reb)} rebalancing migrations where Proxmox made {len(exp_reb)}: it "
                     "acts on the current load (a spike included), Proxmox waits the hold duration "
                     f"({pve.case.crs.hold} rounds)")
    elif exp_reb != got_reb:
        parts.append(f"the rebalancing migrations differ: {who} picks the VM and target by its own rule, "
                     "Proxmox by the lowest coefficient of variation of CPU+memory shares")
    return "; ".join(parts) or "same decisions"


def run_case(path: Path, scheduler: Scheduler) -> CaseResult:
    """Replay one case with ``baseline:proxmox-crs`` and with ``scheduler``; compare with Proxmox."""
    expected = pve_case.expected_decisions(path)
    pve = pve_replay.replay(path)
    run = pve_replay.replay(path, scheduler)
    imb_pve, imb_run = pve.imbalance(), run.imbalance()
    failed = sum(d.node is None for d in run.decisions) - sum(d.node is None for d in expected)
    if run.decisions == expected:
        status, reason = "match", "same decisions"
    elif imb_run <= imb_pve + TOLERANCE and failed <= 0:
        status = "equal-or-better"
        reason = (f"{_reason(expected, run.decisions, pve, run)}; final imbalance {imb_run:.2f} "
                  f"vs Proxmox's {imb_pve:.2f}")
    else:
        status = "differs"
        reason = (f"{_reason(expected, run.decisions, pve, run)}; final imbalance {imb_run:.2f} "
                  f"vs Proxmox's {imb_pve:.2f}")
        if failed > 0:
            reason += (f"; {failed} more guest(s) left without a node: llmvirt never places a guest where its "
                       "memory does not fit (allocation ratio 1.0), Proxmox recovers it and overcommits")
    return CaseResult(path.name, _first_sentence(pve.case.readme), expected, pve.decisions, run.decisions,
                      scheduler.name, status, reason, imb_pve, imb_run, sorted(set(pve.unsupported)))


def case_dirs(paths: list[Path]) -> list[Path]:
    """Case directories from ``paths``: each a case, or a folder of cases (sorted)."""
    out: list[Path] = []
    for p in paths:
        if (p / "hardware_status").exists():
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(c for c in p.iterdir() if (c / "hardware_status").exists()))
    return out


def table(results: list[CaseResult]) -> str:
    """A Markdown table of the results."""
    lines = ["| case | Proxmox decisions | baseline:proxmox-crs | " + (results[0].scheduler if results else "tested")
             + " | final imbalance (Proxmox / tested) | reason |",
             "|---|---:|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.case.removeprefix('test-crs-')} | {len(r.expected)} | "
                     f"{'same' if r.baseline_matches else 'DIFFERS'} | {r.status} | "
                     f"{r.imbalance_proxmox:.2f} / {r.imbalance_tested:.2f} | {r.reason} |")
    return "\n".join(lines)
