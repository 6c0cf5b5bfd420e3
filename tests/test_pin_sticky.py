"""A sticky pinning head (issue 16): a host's pinnings change only when the change pays for its move in the
contention model, with a stated remote-memory penalty; the same rule in the simulator and on hosts."""

from __future__ import annotations

import numpy as np

from llmvirt.model.cluster import Cluster, Host, NumaCell, Vm
from llmvirt.policy import pin_head
from llmvirt.policy.pin_head import PinHead, PinScorer, code_of
from llmvirt.policy.sim_adapter import LearnedPinning
from llmvirt.sim import numa, pinning
from llmvirt.sim.numa import SHARED, SPREAD, Guests, Pinning, Topology, repin_pays
from llmvirt.sim.traces import UsageTrace

TOPO = Topology(cells=2, cpus_per_cell=8, mem_per_cell_mib=32768.0)
NO = np.zeros(2, dtype=bool)


def test_a_repin_pays_only_when_the_model_says_so() -> None:
    demand = np.array([3.0, 3.0])
    vcpus = np.array([4, 4])
    mem = np.array([16000.0, 16000.0])
    floating = Pinning(np.array([SHARED, SHARED]), NO)
    compact = Pinning(np.array([0, 1]), NO)
    guests = Guests(demand, vcpus, mem)
    assert not repin_pays(TOPO, guests, floating, floating, 288)  # no change: nothing to pay for
    assert repin_pays(TOPO, guests, floating, compact, 288, penalty=0.2)  # local memory pays over a day
    assert not repin_pays(TOPO, guests, floating, compact, 1, penalty=0.2)  # not within one step
    assert not repin_pays(TOPO, guests, floating, compact, 288, penalty=0.0)  # no remote cost: no gain
    assert not repin_pays(TOPO, guests, compact, floating, 288, penalty=0.2)  # and never worse


def _trace(n: int = 16, steps: int = 600, seed: int = 3) -> UsageTrace:
    rng = np.random.default_rng(seed)
    vcpus = rng.choice([2, 4], n).astype(np.int64)
    cap = vcpus * 2600.0
    cpu = np.clip(cap[:, None] * rng.uniform(0.2, 0.9, (n, steps)), 0, cap[:, None])
    mem = np.full(n, 8192.0)
    return UsageTrace(tuple(f"v{i}" for i in range(n)), 300, vcpus, cap, cpu, mem, mem[:, None] * np.ones(steps))


class _Dice(PinHead):
    """A head whose choices churn (a random candidate each time): what stickiness must tame."""

    def __init__(self) -> None:
        super().__init__(PinScorer())
        self.rng = np.random.default_rng(0)

    def choose(self, feats: np.ndarray, _vm: int) -> int:
        return int(self.rng.integers(len(feats)))


def test_in_the_simulator_stickiness_cuts_repins_and_never_costs_slowdown_in_its_own_model() -> None:
    head = _Dice()
    tr = _trace()
    setup = pinning.PinSetup(topo=TOPO, vcpu_ratio=2.0)
    loose = pinning.run(tr, setup, LearnedPinning(head=head, sticky=False))
    head.rng = np.random.default_rng(0)
    sticky = pinning.run(tr, setup, LearnedPinning(head=head))
    assert loose.repins > 0 and sticky.repins < loose.repins / 4
    assert sticky.weighted_slowdown < loose.weighted_slowdown
    zero = pinning.PinSetup(topo=TOPO, vcpu_ratio=2.0, remote_penalty=0.0)
    none = pinning.run(tr, zero, pinning.NoPinning())
    head.rng = np.random.default_rng(0)
    aware = pinning.run(tr, zero, LearnedPinning(head=head, model_penalty=0.0))
    assert aware.weighted_slowdown <= none.weighted_slowdown + 1e-9  # knowing the penalty is 0, it keeps floating


def _host(pins: dict[str, dict[int, tuple[int, ...]]]) -> Host:
    cells = [NumaCell(0, tuple(range(8)), 32768), NumaCell(1, tuple(range(8, 16)), 32768)]
    vms = [Vm(name=n, uuid=f"u-{n}", vcpus=2, memory_mib=4096, current_memory_mib=4096, cpu_util=0.5, pinning=p)
           for n, p in pins.items()]
    return Host(name="h", uri="test:///", cpus=16, memory_mib=65536, numa_cells=cells, vms=vms)


def test_current_pinnings_read_back_as_codes() -> None:
    host = _host({"float": {}, "cell1": {0: (8, 9), 1: (10,)}, "spread": {0: (1,), 1: (9,)},
                  "odd": {0: (1, 9), 1: (2,)}})
    assert [code_of(host, v) for v in host.vms] == [SHARED, 1, SPREAD, SHARED]


class _AlwaysCell0(PinScorer):
    def forward(self, x):  # noqa: ANN001, ANN201
        import torch

        return torch.as_tensor(x[..., 1] * 10 - x[..., 7], dtype=torch.float32)  # compact, least loaded cell


def test_on_hosts_a_repin_that_does_not_pay_is_held_with_its_reason() -> None:
    host = _host({"a": {}, "b": {}})
    head = PinHead(_AlwaysCell0(), {"remote_penalty": 0.0, "remote_penalty_source": "measured on test hardware"})
    plans, held = pin_head.plan(Cluster(hosts=[host]), {}, head)
    assert plans == [] and set(held) == {"a", "b"}
    assert "would not pay" in held["a"] and "measured on test hardware" in held["a"]
    head = PinHead(_AlwaysCell0(), {"remote_penalty": 0.4})
    plans, held = pin_head.plan(Cluster(hosts=[host]), {}, head)
    assert {a.vm for a in plans} == {"a", "b"} and not held
    assert numa.REMOTE_PENALTY == PinHead(PinScorer()).remote_penalty
