"""The code's shape (issue 13): small modules, short functions, few parameters.

No module over 400 lines, no function over 60 lines, no function with more than 6 parameters
outside dataclasses. A command's options are its parameters by design (typer turns each into a
``--flag``; an MCP tool's parameters are its input schema), so functions whose parameters are
``Annotated`` options are exempt from the parameter count, not from the length.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llmvirt"
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PARAMS = 400, 60, 6


def _functions() -> list[tuple[Path, ast.FunctionDef | ast.AsyncFunctionDef]]:
    return [(p, n) for p in sorted(PACKAGE.rglob("*.py")) for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _option_aliases() -> set[str]:
    """Module-level names bound to ``Annotated[...]`` (typer options, MCP tool fields) anywhere in the package."""
    return {t.id for p in PACKAGE.rglob("*.py") for n in ast.parse(p.read_text()).body
            if isinstance(n, ast.Assign) and ast.unparse(n.value).startswith("Annotated[")
            for t in n.targets if isinstance(t, ast.Name)}


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    a = fn.args
    args = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    return args[1:] if args and args[0].arg in ("self", "cls") else args


def _is_command(fn: ast.FunctionDef | ast.AsyncFunctionDef, aliases: frozenset[str] = frozenset()) -> bool:
    """Every parameter but a context is a typed option (``Annotated[...]`` or an alias of one)."""
    opts = [p for p in _params(fn) if p.arg not in ("ctx", "context")]
    return bool(opts) and all(p.annotation is not None and (
        ast.unparse(p.annotation).startswith("Annotated[") or ast.unparse(p.annotation).split(" ")[0] in aliases)
        for p in opts)


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def test_no_function_over_60_lines() -> None:
    long = [f"{p.relative_to(PACKAGE)}:{fn.lineno} {fn.name} ({n} lines)" for p, fn in _functions()
            if (n := fn.end_lineno - fn.lineno + 1) > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)


def test_no_function_with_more_than_6_parameters() -> None:
    aliases = frozenset(_option_aliases())
    many = [f"{p.relative_to(PACKAGE)}:{fn.lineno} {fn.name} ({len(_params(fn))})" for p, fn in _functions()
            if len(_params(fn)) > MAX_PARAMS and not _is_command(fn, aliases)]
    assert not many, "\n".join(many)


def test_the_shape_checks_can_fail() -> None:
    fn = ast.parse("def f(a, b, c, d, e, f, g):\n    pass\n").body[0]
    assert len(_params(fn)) == 7 and not _is_command(fn)  # type: ignore[arg-type]
    cmd = ast.parse("def f(ctx, a: Annotated[int, x], b: PolicyOpt = None):\n    pass\n").body[0]
    assert _is_command(cmd, frozenset({"PolicyOpt"})) and not _is_command(cmd)  # type: ignore[arg-type]
    assert "PolicyOpt" in _option_aliases()
