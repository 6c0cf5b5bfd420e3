"""The named fleet shapes of the balance scenario, shared by the benchmarks and training (``--shapes``)."""

from __future__ import annotations

from llmvirt.sim.balance_env import EnvConfig

MIXED = EnvConfig(mixed_sizes=True, host_cores=(8, 16, 24, 32), mem_gib_per_core=20.0)
"""Hosts of 8 to 32 cores in one fleet, 20 GiB a core: memory refuses about a third of the moves while CPU
demand overloads hosts (chosen on training VMs; bench/RESULTS.md, "Mixed host sizes")."""
SHAPES = {"identical": EnvConfig(), "mixed": MIXED}  #: one host size a fleet (the scenario's default), or mixed
