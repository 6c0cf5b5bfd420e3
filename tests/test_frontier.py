"""The tuning sweep's Pareto frontier (issue 14): which grid points no other point beats on every component."""

from __future__ import annotations

import json
from pathlib import Path

from llmvirt.bench import frontier

ROOT = Path(__file__).resolve().parents[1]


def test_pareto_keeps_exactly_the_undominated_points() -> None:
    pts = [{"a": 1, "b": 5}, {"a": 2, "b": 2}, {"a": 3, "b": 3}, {"a": 5, "b": 1}, {"a": 2, "b": 2}]
    assert frontier.pareto(pts, ("a", "b")) == [True, True, False, True, True]  # ties do not dominate
    assert frontier.pareto([], ("a",)) == []


def test_the_committed_sweep_plots_with_each_familys_pick(tmp_path: Path) -> None:
    doc = json.loads((ROOT / "policies/tuned.json").read_text())
    rows = frontier.frontier_rows(doc)
    assert sum(r["tuned"] for r in rows) == len(doc["families"])
    assert any(r["on_frontier"] for r in rows) and not all(r["on_frontier"] for r in rows)
    out = tmp_path / "f.png"
    frontier.plot(doc, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
