"""Balloon safety limits and the NUMA-aware pinning planner (pure logic; the lab tests apply them)."""

from __future__ import annotations

from llmvirt.model.cluster import Balloon, Cluster, Host, NumaCell, Vm
from llmvirt.policy.tuning import MAX_CHANGE, plan_balloons, plan_pinning, safe_target, under_pressure


def _vm(name: str, cur: int = 1000, cap: int = 2000, avail: int | None = 1000, unused: int | None = 500,
        usable: int | None = 500, swap_in: int | None = 0, faults: int | None = 0, vcpus: int = 1,
        pinning: dict | None = None) -> Vm:
    return Vm(name=name, uuid=name, vcpus=vcpus, memory_mib=cap, current_memory_mib=cur, pinning=pinning or {},
              balloon=Balloon(current_mib=cur, maximum_mib=cap, available_mib=avail, unused_mib=unused,
                              usable_mib=usable, swap_in_mib=swap_in, major_faults=faults))


def test_balloon_steps_are_bounded_and_floored() -> None:
    vm = _vm("a")
    assert safe_target(vm, 0, pressure=False) == int(1000 * (1 - MAX_CHANGE))  # at most 5 % down per cycle
    assert safe_target(vm, 10_000, pressure=False) == int(1000 * (1 + MAX_CHANGE))  # at most 5 % up
    assert safe_target(vm, 1001, pressure=False) is None  # under 0.25 %: not worth it
    busy = _vm("b", avail=1000, unused=50)  # uses 950 MiB: floor = 950 + 20 % of 1000
    assert safe_target(busy, 0, pressure=False) == 1150 > 1000  # the floor wins over any proposal


def test_pressure_deflates_at_once() -> None:
    vm = _vm("a", usable=50)  # usable under 10 % of the balloon
    assert under_pressure(vm, None)
    assert safe_target(vm, 0, pressure=True) == 2000  # straight to the maximum, no step limit
    prev = _vm("a", swap_in=10)
    assert under_pressure(_vm("a", swap_in=30), prev)
    assert under_pressure(_vm("a", faults=9), _vm("a", faults=3))
    assert not under_pressure(_vm("a"), _vm("a"))


def test_plan_balloons_shrinks_only_under_host_pressure() -> None:
    host = Host(name="h", uri="x", cpus=4, memory_mib=2200, vms=[_vm("a"), _vm("b")])  # 2000 of 2200: 9 % free
    plans = plan_balloons(Cluster([host]))
    assert {a.vm for a in plans} == {"a", "b"} and all(a.target_mib < 1000 for a in plans)
    roomy = Host(name="h", uri="x", cpus=4, memory_mib=16000, vms=[_vm("a")])
    (a,) = plan_balloons(Cluster([roomy]))
    assert a.kind == "balloon" and a.target_mib == 1050 and "room" in a.reason


def test_pinning_stays_in_one_cell_and_never_shares_cpus() -> None:
    cells = [NumaCell(0, (0, 1, 2, 3), 8192), NumaCell(1, (4, 5, 6, 7), 8192)]
    host = Host(name="h", uri="x", cpus=8, memory_mib=16384, numa_cells=cells,
                vms=[_vm("pinned", vcpus=2, pinning={0: (4,), 1: (5,)}), _vm("a", vcpus=3), _vm("b", vcpus=2),
                     _vm("c", vcpus=4)])
    plans, skipped = plan_pinning(Cluster([host]), reserved_cpus=1)
    used = {4, 5}
    for p in plans:
        cpus = [c for cs in p.pins.values() for c in cs]
        cell = next(c for c in cells if f"cell {c.id}" in p.reason)
        assert set(cpus) <= set(cell.cpus) and not (set(cpus) & used) and 0 not in cpus
        used |= set(cpus)
    assert "c" in skipped  # 4 vCPUs: no cell has 4 free CPUs left
