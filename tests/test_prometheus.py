"""Prometheus metrics (issue 19): scraped by a real Prometheus server (Debian's package), queried through
its HTTP API, and written for the textfile collector; checked against what the store holds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import fixture_uri

from llmvirt.model.action import Action
from llmvirt.store import database, journal, snapshots

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json"


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - a local server the test started
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


@pytest.fixture
def fleet(cli, db_url: str) -> str:
    """Two scanned test-driver hosts and a journal with a done and a failed migration."""
    for name, f in (("gpu1", "gpu-host.xml"), ("busy", "busy-host.xml")):
        assert cli("hosts", "add", name, fixture_uri(f))[0] == 0
    assert cli("scan")[0] == 0
    assert cli("scan")[0] == 0
    engine = database.open_engine(db_url)
    plan = journal.create_plan(engine, journal.NewPlan("balance", "test", {}, [
        Action.migrate("web1", "busy", "gpu1", "test"), Action.migrate("web2", "busy", "gpu1", "test")]))
    done, failed = journal.plan_actions(engine, plan)
    journal.set_status(engine, done.id, "done", "moved", {"seconds": 2.5, "downtime_ms": 40})
    journal.set_status(engine, failed.id, "failed", "refused")
    journal.finish_plan(engine, plan)
    from datetime import UTC, datetime, timedelta

    from llmvirt.store import controllers

    now = datetime.now(UTC).replace(tzinfo=None)
    controllers.heartbeat(engine, "ctl-a:1", "leader", now - timedelta(hours=1), 60.0, now - timedelta(minutes=30))
    controllers.heartbeat(engine, "ctl-b:2", "leader", now - timedelta(hours=1), 60.0)  # took over from a
    controllers.heartbeat(engine, "ctl-c:3", "follower", now - timedelta(hours=1), 60.0)
    return db_url


def test_a_real_prometheus_scrapes_the_fleet(fleet: str, tmp_path: Path) -> None:
    env = dict(os.environ, LLMVIRT_DB=fleet)
    mport, pport = _free_port(), _free_port()
    exporter = subprocess.Popen([sys.executable, "-m", "llmvirt", "metrics", "serve", "--listen",
                                 f"127.0.0.1:{mport}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: llmvirt\n"
                   f"    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n")
    prom = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, cpus = time.monotonic() + 90, []
        while time.monotonic() < deadline and len(cpus) < 2:
            time.sleep(1)
            try:
                cpus = _query(pport, "llmvirt_host_cpus")
            except OSError:
                continue  # Prometheus still starting
        stored = {v.host.name: v.host for v in snapshots.latest(database.open_engine(fleet))}
        assert {r["metric"]["host"]: float(r["value"][1]) for r in cpus} == {n: h.cpus for n, h in stored.items()}
        assert [float(r["value"][1]) for r in _query(pport, 'up{job="llmvirt"}')] == [1.0]
        mem = _query(pport, "llmvirt_vm_balloon_bytes")
        want = {(n, v.name): v.balloon_mib * 1024 * 1024 for n, h in stored.items() for v in h.vms if v.running}
        assert {(r["metric"]["host"], r["metric"]["vm"]): float(r["value"][1]) for r in mem} == want
        done = _query(pport, 'llmvirt_actions_finished_total{kind="migrate",status="done"}')
        assert [float(r["value"][1]) for r in done] == [1.0]
        assert float(_query(pport, "llmvirt_migration_downtime_seconds_sum")[0]["value"][1]) == pytest.approx(0.04)
        assert _query(pport, "llmvirt_policy_info")[0]["metric"]["version"] == "v0"
        leads = {r["metric"]["controller"]: float(r["value"][1]) for r in _query(pport, "llmvirt_controller_leader")}
        assert leads == {"ctl-a:1": 0.0, "ctl-b:2": 1.0, "ctl-c:3": 0.0}  # a stopped ticking: not the leader
        quiet = _query(pport, "llmvirt_controller_last_tick_age_seconds > 600")
        assert [r["metric"]["controller"] for r in quiet] == ["ctl-a:1"]
        for expr in _dashboard_exprs():  # the shipped Grafana dashboard's queries parse and run
            _query(pport, expr)
    finally:
        for p in (prom, exporter):
            p.terminate()
            p.wait(timeout=30)


def test_the_textfile_passes_promtool_and_matches_the_store(cli, fleet: str, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    path = tmp_path / "llmvirt.prom"
    code, _, err = cli("metrics", "write", str(path))
    assert code == 0, err
    check = subprocess.run(["promtool", "check", "metrics"], input=path.read_text(), capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(path.read_text()) for s in fam.samples}
    assert samples[("llmvirt_actions_finished_total", (("kind", "migrate"), ("status", "failed")))] == 1
    assert samples[("llmvirt_plans", (("status", "partial"),))] == 1
    assert samples[("llmvirt_scans_total", ())] == 2
    assert samples[("llmvirt_migration_duration_seconds_sum", ())] == 2.5
    assert samples[("llmvirt_host_maintenance", (("host", "busy"),))] == 0


def test_bad_listen_address_and_busy_port_are_one_line(cli, db_url: str) -> None:
    code, _, err = cli("metrics", "serve", "--listen", "nowhere")
    assert code == 2 and "expected ADDRESS:PORT" in err and "Traceback" not in err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        res = subprocess.run([sys.executable, "-m", "llmvirt", "metrics", "serve", "--listen",
                              f"127.0.0.1:{s.getsockname()[1]}"], env=dict(os.environ, LLMVIRT_DB=db_url),
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "cannot listen on" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    code, _, err = cli("metrics", "write", "/no/such/dir/x.prom")
    assert code == 2 and "is not a directory" in err


def test_the_dashboard_reads_only_metrics_the_exporter_writes(cli, fleet: str, tmp_path: Path) -> None:
    import re

    from prometheus_client.parser import text_string_to_metric_families

    path = tmp_path / "llmvirt.prom"
    assert cli("metrics", "write", str(path))[0] == 0
    families = list(text_string_to_metric_families(path.read_text()))
    written = ({s.name for fam in families for s in fam.samples} | {fam.name for fam in families}
               | {f"{fam.name}_{part}" for fam in families if fam.type == "summary" for part in ("sum", "count")})
    used = {m for e in _dashboard_exprs() for m in re.findall(r"\bllmvirt_[a-z_]+", e)}
    assert used and used <= written, used - written
