"""The package's layers import one way (issue 13): no import cycles, and the named one-way rules.

Every ``import`` counts, including those inside functions: a lazy import hides a cycle from Python,
not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llmvirt"

#: The layers, lowest first: the flow libvirt -> cluster -> strategy -> plan -> action -> outcome -> retraining.
#: A layer imports only from layers before it (and from the layer-free helpers ``errors``, ``paths``, ``config``).
LAYERS = (
    ("llmvirt.model", "the data model: cluster, actions, usage, pressure, score"),
    ("llmvirt.observe", "observing hosts: libvirt XML, inventory, NVML"),
    ("llmvirt.store", "the store: scans, journal, policy versions"),
    ("llmvirt.sim", "the simulator"),
    ("llmvirt.policy", "strategies' decision code: constraints, heads, the learned policy's inference"),
    ("llmvirt.strategies", "the one registry: a name becomes a Strategy"),
    ("llmvirt.act", "acting on hosts: runners and the executor"),
    ("llmvirt.measure", "outcomes of executed actions"),
    ("llmvirt.learn", "training, fine-tuning, evaluation for promotion"),
)
FRONT_ENDS = ("llmvirt.bench", "llmvirt.cli", "llmvirt.mcp_server", "llmvirt.lab", "llmvirt.prometheus_export")

#: (importer prefix, forbidden prefixes, why)
RULES = tuple(
    (name, tuple(later for later, _ in LAYERS[i + 1:]) + FRONT_ENDS, f"{why} imports no later layer")
    for i, (name, why) in enumerate(LAYERS)
) + (
    ("llmvirt.model", tuple(f"llmvirt.{p.stem}" for p in PACKAGE.iterdir() if p.stem not in ("model", "__init__")),
     "the data model imports nothing from llmvirt outside itself"),
    ("llmvirt.sim", ("llmvirt.strategies", "llmvirt.policy", "llmvirt.bench", "llmvirt.cli"),
     "the simulator never imports strategies: a name becomes a Strategy in the registry"),
    ("llmvirt.store", ("llmvirt.observe",), "the store holds data; it does not observe hosts"),
    ("llmvirt.peers.pve_crs", ("llmvirt.",),
     "Proxmox's scheduler arithmetic is shared by the simulator, the case replay and hosts, so it imports none"),
    ("llmvirt.plan_service", ("llmvirt.learn",), "deciding never imports training"),
)


def test_nothing_but_front_ends_imports_learning() -> None:
    """``learn`` is imported only by the CLI and the benchmarks: nothing on the decision path trains."""
    users = {m for m, deps in import_graph().items() for d in deps if d.startswith("llmvirt.learn")}
    assert all(m.startswith(("llmvirt.learn", "llmvirt.cli", "llmvirt.bench")) for m in users), sorted(users)


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the llmvirt modules it imports (anywhere in its body)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                         for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            graph[m].update(n for n in names if n in mods and n != m)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_import_one_way() -> None:
    broken = [f"{m} imports {d}: {why}" for m, deps in import_graph().items() for prefix, banned, why in RULES
              if m == prefix or m.startswith(prefix + ".") for d in deps if d.startswith(banned)]
    assert not broken, "\n".join(broken)
