"""The apply lock across processes, on the store's own terms (issue 19): a file lock beside a SQLite store,
an advisory lock in the server for PostgreSQL (run with ``LLMVIRT_TEST_DB=postgresql``), so controllers on
different machines sharing one database exclude each other. A holder that dies frees it at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import fixture_uri

from llmvirt.act import executor
from llmvirt.errors import EXIT_OK

HOLD = """
import sys, time
from llmvirt.act import executor
with executor.apply_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _apply(db_url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmvirt", "rebalance", "--apply", "--only", "balloon"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "LLMVIRT_DB": db_url})


def test_a_second_process_exits_5_while_another_holds_the_lock(cli, db_url: str) -> None:
    cli("hosts", "add", "busy", fixture_uri("busy-host.xml"))
    assert cli("scan")[0] == EXIT_OK
    with executor.apply_lock(db_url):
        res = _apply(db_url)
    assert res.returncode == executor.EXIT_LOCKED, res
    assert "another `llmvirt rebalance --apply` is running" in res.stderr and "Traceback" not in res.stderr
    assert _apply(db_url).returncode != executor.EXIT_LOCKED  # released with the block


def test_a_killed_holder_frees_the_lock(cli, db_url: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, db_url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        try:
            with executor.apply_lock(db_url):
                raise AssertionError("the lock was taken while another process held it")
        except executor.ApplyLocked:
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        deadline = time.monotonic() + 10  # the server notices the dead session's socket; a file lock frees at once
        while True:
            try:
                with executor.apply_lock(db_url):
                    break
            except executor.ApplyLocked:
                assert time.monotonic() < deadline, "the dead holder's lock was never released"
                time.sleep(0.1)
    finally:
        holder.kill()
        holder.wait(timeout=30)
