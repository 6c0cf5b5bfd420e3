"""Outcomes of executed actions, fine-tuning from the store, and policy versions (promotion, refusal, rollback)."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fixture_uri

from llmvirt.learn.finetune import FinetuneConfig, from_store
from llmvirt.measure import outcomes
from llmvirt.model.action import Action
from llmvirt.model.score import Score, reward
from llmvirt.observe.inventory import scan_hosts
from llmvirt.policy import balloon_head, checkpoint
from llmvirt.policy.decide import DEFAULT_POLICY
from llmvirt.policy.features import FEATURES
from llmvirt.store import database, journal, registry, snapshots
from llmvirt.store import policy_versions as versions

T0 = datetime(2026, 11, 22, 8, 0, 0)


def _store(db_url: str, scans: int, step_s: int = 300):  # noqa: ANN202
    engine = database.open_engine(db_url)
    for name, f in (("busy", "busy-host.xml"), ("spare", "small-host.xml")):
        registry.add_host(engine, registry.RegisteredHost(name, fixture_uri(f)))
    for i in range(scans):
        res = scan_hosts([("busy", fixture_uri("busy-host.xml"), False),
                          ("spare", fixture_uri("small-host.xml"), False)])
        snapshots.record_scan(engine, res, taken_at=T0 + timedelta(seconds=step_s * i))
    return engine


def _migration(engine, finished: datetime, reward_hint: float = 0.0) -> int:  # noqa: ANN001
    feats = np.random.default_rng(int(reward_hint * 10) + 1).random((2, len(FEATURES))).round(4).tolist()
    plan = journal.create_plan(engine, journal.NewPlan("balance", "v0:default", {}, [Action.migrate(
        "web1", "busy", "spare", "test", uuid="b2b2b2b2-0000-4000-8000-000000000002",
        inputs={"candidates": ["spare", "busy"], "chosen": 0, "features": feats})]))
    aid = journal.plan_actions(engine, plan)[0].id
    journal.set_status(engine, aid, "running")
    journal.set_status(engine, aid, "done", "moved", {"seconds": 4.2, "downtime_ms": 31.0})
    from sqlalchemy import update

    from llmvirt.store.schema import ActionRow

    with engine.begin() as conn:  # the journal stamps wall-clock times; place the action inside the scans
        conn.execute(update(ActionRow).where(ActionRow.id == aid).values(
            started_at=finished - timedelta(seconds=5), finished_at=finished))
    return aid


def test_outcome_is_pending_until_its_window_passes_then_scored(db_url: str) -> None:
    engine = _store(db_url, scans=6)
    aid = _migration(engine, T0 + timedelta(seconds=450))
    assert outcomes.score_due(engine, window_s=900, now=T0 + timedelta(seconds=1000)) == 0
    [row] = outcomes.listing(engine)
    assert row["action_id"] == aid and row["outcome"] == "pending"
    assert outcomes.score_due(engine, window_s=900, now=T0 + timedelta(seconds=1400)) == 1
    [row] = outcomes.listing(engine)
    d = row["detail"]
    assert row["outcome"] == "scored" and row["success"] is True and row["goal"] == "balance"
    assert set(d["before"]) == {"busy", "spare"} and d["after_scans"] == 3  # scans at 600, 900, 1200 s
    assert d["job"] == {"seconds": 4.2, "downtime_ms": 31.0}
    score = Score(**d["score"])
    assert score.migrations == 1 and score.gib_migrated > 0
    assert row["reward"] == pytest.approx(reward(score, "balance"), abs=1e-5)  # the simulator's scoring code
    assert outcomes.score_due(engine, window_s=900, now=T0 + timedelta(seconds=5000)) == 0  # never twice


def test_outcomes_and_score_cli(cli, db_url: str) -> None:
    engine = _store(db_url, scans=3)
    _migration(engine, T0 + timedelta(seconds=100))
    code, out, err = cli("score", "--json")
    assert code == 0 and json.loads(out)["scored"] == 1, err
    code, out, err = cli("outcomes", "--json")
    assert code == 0, err
    [row] = json.loads(out)["outcomes"]
    assert row["policy"] == "v0:default" and row["reward"] < 0  # a migration always costs something


def test_fine_tuning_on_a_small_recorded_set(db_url: str, tmp_path: Path) -> None:
    engine = _store(db_url, scans=8)
    good, bad = _migration(engine, T0 + timedelta(seconds=400), 1.0), _migration(engine, T0 + timedelta(seconds=700))
    outcomes.score_due(engine, window_s=600, now=T0 + timedelta(seconds=4000))
    from sqlalchemy import update

    from llmvirt.store.schema import OutcomeRow

    with engine.begin() as conn:  # one recorded move turned out much better than the other
        conn.execute(update(OutcomeRow).where(OutcomeRow.action_id == good).values(reward=0.0))
        conn.execute(update(OutcomeRow).where(OutcomeRow.action_id == bad).values(reward=-5.0))
    base_model, _ = checkpoint.load(DEFAULT_POLICY)
    out = tmp_path / "v1"
    metrics = from_store(engine, DEFAULT_POLICY, out, FinetuneConfig(steps=30, lr=1e-2), "v0")
    assert metrics["placement_recorded"] == 2 and metrics["balloon_recorded"] > 0
    model, meta = checkpoint.load(out)
    assert meta["parent"] == "v0" and "fine-tuned" in meta["method"]
    balloon_head.load(out)  # the balloon head was rewritten and still verifies
    assert (out / "pin.json").is_file()
    n = base_model.n_features  # the shipped default reads feature spec 1: the first 11 recorded columns
    feats = {a.id: torch.tensor(a.action.inputs["features"])[:, :n] for p in journal.plans(engine)
             for a in journal.plan_actions(engine, p["id"])}
    with torch.no_grad():
        before = torch.log_softmax(base_model(feats[good]), 0)[0]
        after = torch.log_softmax(model(feats[good]), 0)[0]
    assert after > before  # the better-than-average choice became more likely
    drift = max(float((a - b).abs().max()) for a, b in zip(model.state_dict().values(),
                                                            base_model.state_dict().values(), strict=True))
    assert 0 < drift < 1.0  # it moved, and the anchor kept it near the base


def _synthetic_csv(path: Path) -> Path:
    rng = np.random.default_rng(3)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["vm", "timestamp", "cpu_pct", "mem_mib", "vcpus", "mem_capacity_mib"])
        for v in range(40):
            cap = float(rng.choice([2048, 4096, 8192]))
            for t in range(80):
                w.writerow([f"vm{v}", t * 300, round(float(rng.uniform(5, 60)), 2),
                            round(cap * float(rng.uniform(0.1, 0.4)), 1), int(rng.choice([2, 4])), cap])
    return path


def _worse_version(engine, tmp_path: Path) -> None:  # noqa: ANN001
    path = tmp_path / "worse"
    shutil.copytree(DEFAULT_POLICY, path)
    head = balloon_head.load(path)
    meta = checkpoint.user_meta(head.meta)
    meta["operating_point"] = {"quantile": 0, "margin": 0.0}  # the median: squeezes guests half of the time
    checkpoint.save_head(head.model, path, balloon_head.SPEC, head.model.config(), meta)
    versions.register(engine, "v1", path, "trained", "v0", {})


def test_promotion_refuses_a_worse_policy_unless_forced_and_rolls_back(cli, db_url: str, tmp_path: Path) -> None:
    engine = database.open_engine(db_url)
    _worse_version(engine, tmp_path)
    trace = _synthetic_csv(tmp_path / "synthetic.csv")
    code, out, err = cli("policy", "promote", "v1", "--trace", str(trace), "--steps", "40", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["promoted"] is False, err
    assert doc["candidate_rewards"]["total"] < doc["active_rewards"]["total"]
    assert versions.active(engine)["name"] == "v0"
    code, out, err = cli("policy", "promote", "v1", "--trace", str(trace), "--steps", "40", "--force")
    assert code == 0 and "forced" in out, err
    assert versions.active(engine)["name"] == "v1"
    code, out, err = cli("policy", "rollback")
    assert code == 0 and "v0 is active" in out
    code, out, _ = cli("policy", "list", "--json")
    assert [v["name"] for v in json.loads(out)["versions"] if v["active"]] == ["v0"]
    code, _, err = cli("policy", "promote", "v9")
    assert code == 2 and "no policy version 'v9'" in err


WEB1 = "b2b2b2b2-0000-4000-8000-000000000002"  # on "busy" in every scan _store records


def _store_with_web1_moved_to_spare(db_url: str):  # noqa: ANN202
    """Three scans; the last finds web1 on "spare", 60 CPU-seconds into its new QEMU process (its counter
    started again). Returns (engine, spare's CPUs)."""
    from sqlalchemy import select, update

    from llmvirt.store.schema import HostRow, HostSnapshotRow, VmSampleRow

    engine = _store(db_url, scans=3)
    with engine.begin() as conn:
        spare_snaps = conn.execute(select(HostSnapshotRow.id, HostSnapshotRow.cpus).join(HostRow)
                                   .where(HostRow.name == "spare").order_by(HostSnapshotRow.taken_at)).all()
        rows = conn.execute(select(VmSampleRow.id).join(HostSnapshotRow)
                            .where(VmSampleRow.uuid == WEB1).order_by(HostSnapshotRow.taken_at)).scalars().all()
        conn.execute(update(VmSampleRow).where(VmSampleRow.id == rows[-1])
                     .values(snapshot_id=spare_snaps[-1][0], cpu_time_ns=60 * 10**9))
    return engine, spare_snaps[-1][1]


def test_migrated_vm_counts_on_its_destination_although_its_counter_restarted(db_url: str) -> None:
    """Issue 17: the destination's new QEMU process starts the guest's CPU-time counter again; the
    destination's load must count what the guest used there, not clamp a negative delta to 0."""
    engine, cpus = _store_with_web1_moved_to_spare(db_url)
    from sqlalchemy.orm import Session

    with Session(engine) as s:
        loads = outcomes.host_loads(s, "spare", T0, T0 + timedelta(seconds=600))
    assert loads[-1][1] == pytest.approx(60 / (300 * cpus))  # the test driver's other counters stand still
    [spare] = [v for v in snapshots.latest(engine) if v.host.name == "spare"]
    [web1] = [v for v in spare.host.vms if v.uuid == WEB1]
    assert web1.cpu_util == pytest.approx(round(60 / (300 * web1.vcpus), 4))  # status shows it busy, not blank


def test_cpu_usage_arithmetic_handles_a_restarted_counter() -> None:
    from llmvirt.model.usage import cpu_fraction, cpu_ns_used, restarted

    assert cpu_ns_used(10, 25) == 15 and cpu_ns_used(100, 7) == 7 and cpu_ns_used(None, 7) is None
    assert restarted(100, 7) and not restarted(7, 100)
    assert cpu_fraction(0, 3 * 10**9, 3.0, 2) == pytest.approx(0.5) and cpu_fraction(0, 5, 0.0, 1) is None


def test_outcome_reads_the_destination_with_the_migrated_vm_at_its_rate_since_arrival(db_url: str) -> None:
    """The scan pair straddling a move holds the guest on its destination for only part of the interval: the
    outcome counts it at its rate since the migration started, so "load after" means load with the VM there."""
    engine, cpus = _store_with_web1_moved_to_spare(db_url)
    _migration(engine, T0 + timedelta(seconds=545))  # started at 540 s: 60 s before the scan at 600 s
    assert outcomes.score_due(engine, window_s=100, now=T0 + timedelta(seconds=1000)) == 1
    [row] = outcomes.listing(engine)
    assert row["detail"]["after"]["spare"] == pytest.approx(60 / 60 / cpus)  # one busy vCPU on spare's CPUs
