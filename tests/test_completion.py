"""Bash completion (issue 18): the script llmvirt prints, sourced into a real bash, completes commands,
subcommands and options by asking llmvirt itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _complete(script: str, words: list[str]) -> list[str]:
    """What bash offers for the last of ``words`` (the real completion function, run by bash)."""
    line = " ".join(f"'{w}'" for w in words)
    prog = f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _llmvirt_completion llmvirt\n' \
           'printf "%s\\n" "${COMPREPLY[@]}"'
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    res = subprocess.run(["bash", "--norc", "-c", prog], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    return [w for w in res.stdout.splitlines() if w]


@pytest.fixture(scope="module")
def script() -> str:
    assert shutil.which("llmvirt", path=str(BIN)), "the console script is installed beside this Python"
    res = subprocess.run([str(BIN / "llmvirt")], env=dict(os.environ, _LLMVIRT_COMPLETE="source_bash"),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "complete -o default -F _llmvirt_completion llmvirt" in res.stdout, res
    return res.stdout


def test_bash_completes_commands_subcommands_and_options(script: str) -> None:
    assert _complete(script, ["llmvirt", "reb"]) == ["rebalance"]
    assert set(_complete(script, ["llmvirt", "lab", ""])) >= {"up", "down", "status", "load", "reset"}
    assert _complete(script, ["llmvirt", "rebalance", "--po"]) == ["--policy"]
    assert _complete(script, ["llmvirt", "nonsense-command", "--x"]) == []


def test_without_the_variable_llmvirt_prints_no_script() -> None:
    res = subprocess.run([str(BIN / "llmvirt"), "--help"], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "_LLMVIRT_COMPLETE"})
    assert res.returncode == 0 and "_llmvirt_completion" not in res.stdout
