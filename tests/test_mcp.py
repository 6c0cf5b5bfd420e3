"""`llmvirt mcp` through the MCP SDK's own client over stdio, on the libvirt test driver (issue 21):
every read-only tool answers with its JSON contract, apply needs --allow-apply and a plan the client
was shown, and hostile arguments change nothing."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import REPO, fixture_uri
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import ElicitResult, Implementation

from llmvirt.store import database, journal

READ_ONLY = {"status", "vm_history", "place", "rebalance_plan", "recent_plans", "plan", "recent_actions", "outcomes",
             "policies", "doctor"}
ME = Implementation(name="llmvirt-tests", version="1.0")


def session(fn: Callable[[Client], Awaitable[Any]], *server_args: str,
            elicitation: Callable[..., Awaitable[ElicitResult]] | None = None) -> Any:
    """Start `llmvirt mcp SERVER_ARGS` as a subprocess (stdio) and run ``fn`` with a connected client."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "llmvirt", "mcp", *server_args],
                                   env=dict(os.environ))

    async def main() -> Any:
        async with Client(params, client_info=ME, elicitation_callback=elicitation) as client:
            return await fn(client)

    return anyio.run(main)


async def call(client: Client, tool: str, args: dict[str, Any] | None = None) -> tuple[bool, Any]:
    """(is_error, the JSON document or the error text)."""
    r = await client.call_tool(tool, args or {})
    text = r.content[0].text if r.content else ""
    return r.is_error, (text if r.is_error else json.loads(text))


@pytest.fixture
def scanned(cli, db_url: str) -> str:
    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    cli("hosts", "add", "spare", fixture_uri("busy-host.xml"))
    cli("scan")
    cli("scan")
    return db_url


def _store_counts(url: str) -> tuple[int, int]:
    engine = database.open_engine(url)
    return len(journal.plans(engine)), len(journal.all_actions(engine))


def test_lists_read_only_tools_resources_and_prompts(scanned) -> None:
    async def fn(c: Client) -> tuple:
        tools = (await c.list_tools()).tools
        resources = (await c.list_resources()).resources
        prompts = (await c.list_prompts()).prompts
        return tools, resources, prompts

    tools, resources, prompts = session(fn)
    assert {t.name for t in tools} == READ_ONLY  # no apply_plan without --allow-apply
    for t in tools:
        assert t.description and t.input_schema["type"] == "object"
        assert t.annotations.read_only_hint is True
    limit = next(t for t in tools if t.name == "status").input_schema["properties"]["limit"]
    assert limit["maximum"] == 500 and limit["minimum"] == 1
    assert {str(r.uri) for r in resources} == {"llmvirt://cluster/summary", "llmvirt://plan/latest"}
    assert {p.name for p in prompts} == {"explain_plan", "why_is_host_hot"}


def test_every_read_only_tool_answers_with_its_contract(scanned) -> None:
    async def fn(c: Client) -> dict:
        out = {}
        out["status"] = await call(c, "status", {"limit": 5})
        vm = next(v["name"] for v in out["status"][1]["hosts"][0]["vms"] if v["state"] == "running")
        out["vm_history"] = await call(c, "vm_history", {"vm": vm, "limit": 5})
        out["place"] = await call(c, "place", {"vcpus": 1, "memory_mib": 256})
        out["place_rl"] = await call(c, "place", {"vcpus": 1, "memory_mib": 256, "policy": "place-rl"})
        out["rebalance_plan"] = await call(c, "rebalance_plan", {"goal": "balance", "policy": "baseline:least-loaded"})
        out["consolidate"] = await call(c, "rebalance_plan", {"goal": "consolidate"})
        out["balloon"] = await call(c, "rebalance_plan", {"only": "balloon", "policy": "baseline:rules"})
        out["pin"] = await call(c, "rebalance_plan", {"only": "pin"})
        for tool in ("recent_plans", "recent_actions", "outcomes", "policies"):
            out[tool] = await call(c, tool)
        out["doctor"] = await call(c, "doctor", {"timeout_s": 5})
        out["summary"] = json.loads((await c.read_resource("llmvirt://cluster/summary")).contents[0].text)
        out["latest"] = json.loads((await c.read_resource("llmvirt://plan/latest")).contents[0].text)
        prompt = await c.get_prompt("why_is_host_hot", {"host": "busy"})
        out["prompt"] = prompt.messages[0].content.text
        return out

    out = session(fn)
    for name, res in out.items():
        if isinstance(res, tuple):
            assert res[0] is False, (name, res[1])
    status = out["status"][1]
    assert sorted(h["name"] for h in status["hosts"]) == ["busy", "spare"] and status["format"] == 1
    assert out["vm_history"][1]["samples"] and out["vm_history"][1]["host"] in ("busy", "spare")
    assert out["place"][1]["chosen"] in ("busy", "spare") and out["place"][1]["ranked"][0]["reasons"]
    assert out["place"][1]["expected_cpu"] == 0.5 and out["place"][1]["policy"].startswith("baseline:weighted")
    trained = json.loads((REPO / "policies" / "place-rl" / "policy.json").read_text())["expected_cpu"]
    assert out["place_rl"][1]["policy"] == "place-rl" and out["place_rl"][1]["expected_cpu"] == trained  # as place
    plan = out["rebalance_plan"][1]
    assert plan["plan_id"].startswith("p-") and plan["dry_run"] is True and plan["policy"] == "baseline:least-loaded"
    assert "read-only" in plan["apply"]
    assert out["consolidate"][1]["goal"] == "consolidate"
    for only in ("balloon", "pin"):  # the `rebalance --only ... --json` contract, with a plan id
        doc = out[only][1]
        assert doc["goal"] == only and doc["plan_id"].startswith("p-") and {"actions", "left_alone"} <= set(doc)
    assert out["recent_plans"][1] == {"plans": [], "offset": 0}
    assert out["recent_actions"][1] == {"actions": [], "offset": 0}
    assert any(v["active"] for v in out["policies"][1]["versions"])
    assert out["doctor"][1]["checks"]
    assert {h["name"] for h in out["summary"]["hosts"]} == {"busy", "spare"}
    assert all("vms" not in h for h in out["summary"]["hosts"])
    assert out["latest"]["plan_id"] == out["pin"][1]["plan_id"]  # the plan shown last
    assert "busy" in out["prompt"] and "rebalance_plan" in out["prompt"]


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("status", {"limit": "ten"}, "valid integer"),
    ("status", {"limit": 10**9}, "less than or equal to 500"),
    ("status", {"limit": -1}, "greater than or equal to 1"),
    ("status", {"host": "../../etc/passwd"}, "should match pattern"),
    ("status", {"host": "nosuchhost"}, "unknown host"),
    ("vm_history", {"vm": "nosuchvm"}, "unknown VM"),
    ("vm_history", {"vm": "/etc/shadow"}, "should match pattern"),
    ("vm_history", {"vm": "vm; rm -rf /"}, "should match pattern"),
    ("place", {"vcpus": 0, "memory_mib": 256}, "greater than or equal to 1"),
    ("place", {"vcpus": 1, "memory_mib": 256, "policy": "/tmp"}, "should match pattern"),
    ("place", {"vcpus": 1, "memory_mib": 256, "policy": "tests"}, "not a version or a directory under policies/"),
    ("place", {"vcpus": 1, "memory_mib": 256, "gpus": 1, "vgpu": "nvidia-1"}, "not both"),
    ("rebalance_plan", {"goal": "chaos"}, "Input should be 'balance' or 'consolidate'"),
    ("rebalance_plan", {"policy": "llmvirt-rl:../../etc"}, "should match pattern"),
    ("rebalance_plan", {"policy": "baseline:no-such-thing"}, "unknown baseline"),
    ("rebalance_plan", {"max_migrations": 100000}, "less than or equal to 100"),
    ("rebalance_plan", {"only": "shell"}, "Input should be 'pin' or 'balloon'"),
    ("rebalance_plan", {"only": "balloon", "policy": "baseline:watcher-wb"}, "policy with heads"),
    ("plan", {"plan_id": 999}, "no applied plan 999"),
    ("doctor", {"timeout_s": 3600}, "less than or equal to 30"),
    ("recent_actions", {"offset": -1}, "greater than or equal to 0"),
    ("apply_plan", {"plan_id": "p-000000000000"}, "Unknown tool"),
]


def test_hostile_arguments_are_refused_clearly_and_change_nothing(scanned) -> None:
    before = _store_counts(scanned)

    async def fn(c: Client) -> list:
        return [(tool, await call(c, tool, args), want) for tool, args, want in HOSTILE]

    for tool, (is_error, text), want in session(fn):
        assert is_error, (tool, text)
        assert want in text, (tool, text)
        assert "Traceback" not in text
    assert _store_counts(scanned) == before == (0, 0)


def test_apply_needs_a_shown_fresh_plan_and_is_rate_limited(scanned) -> None:
    async def fn(c: Client) -> dict:
        out = {"tools": {t.name for t in (await c.list_tools()).tools}}
        out["malformed"] = await call(c, "apply_plan", {"plan_id": "../../plan"})
        out["never_shown"] = await call(c, "apply_plan", {"plan_id": "p-0123456789ab"})
        shown = (await call(c, "rebalance_plan", {"policy": "baseline:least-loaded"}))[1]
        out["first"] = await call(c, "apply_plan", {"plan_id": shown["plan_id"]})
        out["again"] = await call(c, "apply_plan", {"plan_id": shown["plan_id"]})
        second = (await call(c, "rebalance_plan", {}))[1]
        out["rate"] = await call(c, "apply_plan", {"plan_id": second["plan_id"]})
        return out

    out = session(fn, "--allow-apply", "--apply-interval", "3600")
    assert out["tools"] == READ_ONLY | {"apply_plan"}
    assert out["malformed"][0] and "should match pattern" in out["malformed"][1]
    assert out["never_shown"][0] and "call rebalance_plan first" in out["never_shown"][1]
    assert out["first"][0] is False and out["first"][1]["applied"] is True  # nothing hot here: nothing to apply
    assert out["first"][1]["outcomes"] == {"done": 0, "skipped": 0, "failed": 0}
    who = out["first"][1]["requested_by"]
    assert who["via"] == "mcp" and who["client"] == "llmvirt-tests" and who["pid"] > 0
    assert out["again"][0] and "unknown plan id" in out["again"][1]  # a shown plan is applied once
    assert out["rate"][0] and "rate limit" in out["rate"][1]
    assert _store_counts(scanned) == (0, 0)


def test_a_stale_plan_is_refused(scanned) -> None:
    async def fn(c: Client) -> tuple:
        shown = (await call(c, "rebalance_plan", {}))[1]
        await anyio.sleep(1.2)
        return await call(c, "apply_plan", {"plan_id": shown["plan_id"]})

    is_error, text = session(fn, "--allow-apply", "--stale-after", "1")
    assert is_error and "past the 1 s limit" in text


def test_the_operator_is_asked_and_a_no_stops_it(scanned) -> None:
    asked: list[str] = []

    async def decline(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="decline")

    async def fn(c: Client) -> tuple:
        shown = (await call(c, "rebalance_plan", {}))[1]
        return shown["plan_id"], await call(c, "apply_plan", {"plan_id": shown["plan_id"]})

    plan_id, (is_error, doc) = session(fn, "--allow-apply", elicitation=decline)
    assert not is_error and doc == {"plan_id": plan_id, "applied": False, "reason": "operator answered decline"}
    assert len(asked) == 1 and plan_id in asked[0]
    assert _store_counts(scanned) == (0, 0)


def test_bad_server_options_are_one_line(cli) -> None:
    code, _, err = cli("mcp", "--listen", "localhost")
    assert code == 2 and "HOST:PORT" in err
    code, _, err = cli("mcp", "--stale-after", "0")
    assert code == 2 and "--stale-after" in err


def test_the_readme_mentions_it() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "llmvirt mcp" in readme and "docs/mcp.md" in readme


def test_streamable_http_serves_the_same_tools(scanned) -> None:
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llmvirt", "mcp", "--listen", f"127.0.0.1:{port}"],
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for the port
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
                time.sleep(0.3)

        async def main() -> tuple:
            async with Client(f"http://127.0.0.1:{port}/mcp", client_info=ME) as c:
                return {t.name for t in (await c.list_tools()).tools}, await call(c, "status", {"limit": 1})

        tools, (is_error, doc) = anyio.run(main)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert tools == READ_ONLY
    assert not is_error and doc["format"] == 1 and len(doc["hosts"]) == 1 and doc["hosts_omitted"] == 1
