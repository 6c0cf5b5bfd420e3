"""The perfect-estimate oracle of bench/balance_scan_oracle.py decides on each VM's true next-step demand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from test_balance_rl import synthetic_trace

from llmvirt.bench.balance_rl import fleets
from llmvirt.learn import train_scan_recovery as tsr
from llmvirt.sim.balance_env import BalanceEnv, EnvConfig
from llmvirt.sim.scan_window import ScanTracker, next_demand
from llmvirt.strategies.registry import make_balancer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from balance_scan_oracle import NextStep, oracle_rows  # noqa: E402


def test_the_oracle_decides_on_the_next_steps_true_demand_of_real_vms() -> None:
    trace = synthetic_trace()
    cfg = EnvConfig()
    env = BalanceEnv(trace, 3, cfg, fleets=fleets(trace, np.arange(80), 3, 0, cfg))
    tracker = ScanTracker(env)
    o = NextStep()
    hidden = False
    for _ in range(20):
        w = tracker.window()
        truth = next_demand(env)
        o.record(w, env.vm_valid, (truth - w.seen[..., -1])[env.vm_valid].astype(np.float32))
        got = o.demand(w)
        np.testing.assert_allclose(got[env.vm_valid], truth[env.vm_valid], atol=1e-5)
        assert np.array_equal(got[~env.vm_valid], w.seen[..., -1][~env.vm_valid])  # padding: the reading
        hidden |= bool(np.any(np.abs(truth - w.seen[..., -1])[env.vm_valid] > 0.1))
        env.advance()
    assert hidden, "the next step never differs from the reading: the check proves nothing"
    with pytest.raises(RuntimeError, match="not recorded"):
        o.demand(tracker.window())  # a window it was not told about


def test_the_oracle_runs_in_the_scan_loop_and_moves_vms() -> None:
    trace = synthetic_trace()
    cfg = EnvConfig()
    fl = fleets(trace, np.arange(80), 4, 3, cfg)
    rows = oracle_rows(make_balancer("cp-sat:2:0.1:0.95"), trace, cfg, fl)
    assert len(rows) == 4 and sum(r["migrations"] for r in rows) > 0
    reading = tsr.run_on_scans(make_balancer("cp-sat:2:0.1:0.95"), tsr.reading, trace, fl, cfg)
    # knowing the next step beats deciding on the reading on this trace (12.5 against 35.5 core-hours): were the
    # oracle's demand never used, the two would tie
    assert sum(r["cost"] for r in rows) < 0.5 * sum(r["cost"] for r in reading)
