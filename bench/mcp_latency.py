"""`llmvirt mcp` on the demo lab: how fast each read-only tool answers, and a real session transcript.

Brings up the lab (3 hosts, 6 guests; root), scans it, makes lab-1 hot, then starts
`llmvirt mcp --allow-apply` over stdio with the MCP SDK's own client (as tests/test_mcp.py does) and
calls every read-only tool ``--rounds`` times (server start-up excluded; goal: each at most 0.5 s).
It first shows and applies a plan. The calls and answers are written, trimmed, to
docs/mcp-session.md: the example session in docs/mcp.md is this file, never written by hand.

Usage (root): python bench/mcp_latency.py [--rounds 5] [--dir /tmp/llmvirt-mcp-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import Implementation

ROOT = Path(__file__).resolve().parents[1]
LLMVIRT = [sys.executable, "-m", "llmvirt"]
READ_ONLY: list[tuple[str, dict[str, Any]]] = [
    ("status", {"limit": 10}), ("vm_history", {"vm": "vm-1", "limit": 5}),
    ("place", {"vcpus": 1, "memory_mib": 256}), ("rebalance_plan", {"goal": "balance"}),
    ("rebalance_plan", {"goal": "consolidate"}), ("recent_plans", {"limit": 5}), ("plan", {"plan_id": 1}),
    ("recent_actions", {"limit": 5}), ("outcomes", {"limit": 5}), ("policies", {}), ("doctor", {"timeout_s": 5}),
]


def run(*args: str) -> str:
    """An llmvirt command; its stdout."""
    return subprocess.run([*LLMVIRT, *args], check=True, capture_output=True, text=True).stdout


def trim(doc: Any, lines: int = 28) -> str:
    """JSON, cut to ``lines`` lines for the transcript."""
    text = json.dumps(doc, indent=2)
    rows = text.splitlines()
    return text if len(rows) <= lines else "\n".join(rows[:lines] + [f"  ... ({len(rows) - lines} more lines)"])


async def session(rounds: int) -> tuple[dict[str, list[float]], list[str]]:
    """Time every read-only tool, then show and apply a plan; returns (seconds per tool, transcript)."""
    params = StdioServerParameters(command=LLMVIRT[0], args=[*LLMVIRT[1:], "mcp", "--allow-apply"],
                                   env=dict(os.environ))
    times: dict[str, list[float]] = {}
    log: list[str] = []
    async with Client(params, client_info=Implementation(name="bench/mcp_latency.py", version="1")) as c:
        tools = [t.name for t in (await c.list_tools()).tools]
        log.append(f"**list_tools** → {', '.join(tools)}\n")
        for name, args in READ_ONLY[:4]:
            r = await c.call_tool(name, args)
            doc = json.loads(r.content[0].text) if not r.is_error else r.content[0].text
            log.append(f"**call_tool** `{name}` `{json.dumps(args)}`\n\n```json\n{trim(doc)}\n```\n")
        pick = {"policy": "llmvirt-rl-fallback:0.5"}
        shown = json.loads((await c.call_tool("rebalance_plan", pick)).content[0].text)
        log.append(f"**call_tool** `rebalance_plan` `{json.dumps(pick)}`\n\n```json\n{trim(shown)}\n```\n")
        r = await c.call_tool("apply_plan", {"plan_id": shown["plan_id"]})
        applied = json.loads(r.content[0].text)
        log.append(f"**call_tool** `apply_plan` `{json.dumps({'plan_id': shown['plan_id']})}` (this client cannot "
                   f"ask the operator, so --allow-apply and the shown id are the consent)\n\n"
                   f"```json\n{trim(applied)}\n```\n")
        r = await c.call_tool("status", {"host": "nowhere"})
        log.append(f"**call_tool** `status` `{json.dumps({'host': 'nowhere'})}` → error: `{r.content[0].text}`\n")
        for _ in range(rounds):
            for name, args in READ_ONLY:
                if name == "plan":
                    args = {"plan_id": applied.get("journal_plan_id") or 1}
                t0 = time.perf_counter()
                r = await c.call_tool(name, args)
                key = name if name != "rebalance_plan" else f"rebalance_plan ({args['goal']})"
                times.setdefault(key, []).append(time.perf_counter() - t0)
                if r.is_error:
                    raise SystemExit(f"{name} {args}: {r.content[0].text}")
    return times, log


def main() -> None:
    """Lab up, scan, hotspot, session, lab down; print the table and write the transcript."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/llmvirt-mcp-bench"))
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    os.environ["LLMVIRT_DB"] = f"sqlite:///{args.dir / 'llmvirt.db'}"
    cfg = args.dir / "llmvirt.toml"
    cfg.write_text("[rebalance]\nhot = 0.6\ncold = 0.1\n")
    os.environ["LLMVIRT_CONFIG"] = str(cfg)
    lab_dir = args.dir / "lab"
    run("lab", "up", "--dir", str(lab_dir))
    try:
        run("scan")
        guests = json.loads(run("lab", "status", "--dir", str(lab_dir), "--json"))["guests"]
        for vm, host in guests.items():
            if host == "lab-1":
                run("lab", "load", vm, "--cpu", "100", "--mem", "16M", "--dir", str(lab_dir))
        for _ in range(4):
            time.sleep(4)
            run("scan")
        times, log = anyio.run(session, args.rounds)
    finally:
        run("lab", "down", "--dir", str(lab_dir))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"MCP tool latency on the demo lab ({date.today()}, {machine}), {args.rounds} calls each, "
          "server start-up excluded")
    print("| tool | median ms | max ms | goal |")
    print("|---|---:|---:|---|")
    for name, xs in times.items():
        ok = "met" if max(xs) <= 0.5 else "NOT met"
        print(f"| {name} | {1000 * statistics.median(xs):.0f} | {1000 * max(xs):.0f} | ≤ 500 ms: {ok} |")
    out = ROOT / "docs/mcp-session.md"
    out.write_text("# An `llmvirt mcp` session on the demo lab\n\n"
                   f"Written by `bench/mcp_latency.py` on {date.today()} ({machine}): the MCP SDK's own client, over "
                   "stdio, against `llmvirt mcp --allow-apply` on the 3-host lab with lab-1 made hot. Nothing here "
                   "is edited by hand; long answers are cut.\n\n" + "\n".join(log))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
