"""The one split (issue 14): declared in llmvirt/sim/split.py, and nowhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from conftest import SHARED

from llmvirt.sim import split as sp
from llmvirt.sim.store_history import write_generic_csv
from llmvirt.sim.traces import load_generic

ROOT = Path(__file__).resolve().parents[1]
DECLARED = ("TRAIN_FRACTION", "TRAIN_DAYS", "HELD_DAYS")


def _sources() -> list[Path]:
    return [p for d in ("llmvirt", "bench") for p in (ROOT / d).rglob("*.py") if p != ROOT / "llmvirt/sim/split.py"]


def test_no_other_module_declares_a_split() -> None:
    """No module but split.py assigns the split's constants, defines a name-hash split, passes a
    literal fraction to ``split`` or names a held-back PlanetLab day in the package."""
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found += [f"{path}: assigns {t.id}" for t in targets if isinstance(t, ast.Name) and t.id in DECLARED]
            if isinstance(node, ast.FunctionDef) and node.name == "split":
                found.append(f"{path}: defines split()")
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "split" and len(node.args) > 1
                    and isinstance(node.args[1], ast.Constant)):
                found.append(f"{path}: split() with a literal fraction")
        if path.is_relative_to(ROOT / "llmvirt") and any(day in path.read_text() for day in sp.HELD_DAYS):
            found.append(f"{path}: names a held-back day")
    assert found == []


def test_the_vm_split_is_disjoint_complete_and_depends_on_names_only() -> None:
    names = tuple(f"vm-{i}" for i in range(2000))
    train, held = sp.split(names)
    assert np.intersect1d(train, held).size == 0 and train.size + held.size == len(names)
    assert 0.55 < train.size / len(names) < 0.65
    shuffled = names[::-1]
    again = {shuffled[i] for i in sp.split(shuffled)[0]}
    assert again == {names[i] for i in train}  # order and neighbours do not matter


def test_the_days_split_covers_the_planetlab_days_once() -> None:
    days = sorted(p.name for p in (SHARED / "traces/planetlab").iterdir() if p.is_dir())
    assert sorted(sp.TRAIN_DAYS + sp.HELD_DAYS) == days
    assert not set(sp.TRAIN_DAYS) & set(sp.HELD_DAYS)
    assert [sp.day_role(d) for d in ("20110303", "20110325", "20991231")] == ["train", "held back", "held back"]


def test_a_generic_format_trace_gets_the_same_split_by_vm_name(tmp_path: Path) -> None:
    """The generic format keeps each VM's own name, so the same VMs train and are held back there."""
    names = [f"host-{i:03d}" for i in range(40)]
    rows = [(n, 1_700_000_000.0 + 300 * t, 10.0 + i % 7, 512.0, 2, 1024.0) for i, n in enumerate(names)
            for t in range(6)]
    path = tmp_path / "generic.csv"
    write_generic_csv(rows, path)
    trace = load_generic(path)
    got = {trace.names[i] for i in sp.split(trace.names)[1]}
    assert got == {names[i] for i in sp.split(tuple(names))[1]} and got
