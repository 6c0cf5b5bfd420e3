"""Prometheus metrics from llmvirt's store: ``llmvirt metrics serve`` and ``llmvirt metrics write FILE``.

Every scrape reads the store as it is (the latest scan of each host, the journal, the outcomes), so
the exporter keeps no state and any number of them may run. Names follow Prometheus' conventions:
base units (bytes, seconds), ``_total`` for counters, a ``host`` and ``vm`` label where they apply.
docs/operations.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

from prometheus_client import start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, SummaryMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import Engine

from llmvirt.store import controllers, policy_versions, snapshots, tallies

MIB = 1024 * 1024


def _gauge(name: str, doc: str, labels: list[str], rows: list[tuple[list[str], float]]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    for values, v in rows:
        g.add_metric(values, v)
    return g


class StoreCollector(Collector):
    """Collects the fleet's metrics from the store at each scrape."""

    def __init__(self, engine: Engine) -> None:
        """``engine``: the store to read."""
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        """Hosts and VMs as last scanned, then the store's totals and the active policy version."""
        yield from self._fleet()
        yield from self._journal(tallies.tally(self.engine))
        yield from self._controllers()
        active = policy_versions.active(self.engine)
        info = InfoMetricFamily("llmvirt_policy", "The active policy version.")
        info.add_metric([], {"version": active["name"], "source": active["source"]})
        yield info

    def _controllers(self) -> Iterator[Metric]:
        rows = controllers.all_controllers(self.engine)
        yield _gauge("llmvirt_controller_leader", "1 for the controller that leads (and has ticked lately).",
                     ["controller"], [([c["name"]], float(c["role"] == "leader" and not c["stale"])) for c in rows])
        yield _gauge("llmvirt_controller_last_tick_age_seconds", "Seconds since the controller's last tick.",
                     ["controller"], [([c["name"]], c["last_tick_age_s"]) for c in rows])

    def _fleet(self) -> Iterator[Metric]:
        views = snapshots.latest(self.engine)
        hosts = [(v.host, v) for v in views]
        up = [([h.name], float(v.last_error is None and v.scanned_at is not None)) for h, v in hosts]
        yield _gauge("llmvirt_host_up", "1 when the host's latest scan read it.", ["host"], up)
        yield _gauge("llmvirt_host_maintenance", "1 when the host is in maintenance.", ["host"],
                     [([h.name], float(h.maintenance)) for h, _ in hosts])
        scanned = [(h, v) for h, v in hosts if v.scanned_at is not None]
        yield _gauge("llmvirt_host_last_scan_timestamp_seconds", "When the host was last read (Unix time).",
                     ["host"], [([h.name], v.scanned_at.replace(tzinfo=UTC).timestamp())  # stored as naive UTC
                                for h, v in scanned])  # type: ignore[union-attr]
        for name, doc, get in (
                ("llmvirt_host_cpus", "The host's CPUs.", lambda h: h.cpus),
                ("llmvirt_host_memory_bytes", "The host's memory.", lambda h: h.memory_mib * MIB),
                ("llmvirt_host_vcpus_allocated", "vCPUs of the host's running VMs.", lambda h: h.allocated_vcpus),
                ("llmvirt_host_memory_allocated_bytes", "Balloon sizes of the host's running VMs.",
                 lambda h: h.allocated_memory_mib * MIB),
                ("llmvirt_host_vms_running", "Running VMs on the host.",
                 lambda h: sum(1 for v in h.vms if v.running))):
            yield _gauge(name, doc, ["host"], [([h.name], float(get(h))) for h, _ in scanned])
        yield _gauge("llmvirt_host_cpu_used_ratio", "CPU time of the host's VMs between its last two scans, "
                     "as a share of its CPUs.", ["host"],
                     [([h.name], h.used_cpus / max(1, h.cpus)) for h, _ in scanned if h.used_cpus is not None])
        yield from self._vms([h for h, _ in scanned])

    @staticmethod
    def _vms(hosts: list) -> Iterator[Metric]:  # noqa: ANN001
        running = [(h.name, v) for h in hosts for v in h.vms if v.running]
        labels = ["host", "vm"]
        yield _gauge("llmvirt_vm_vcpus", "The VM's vCPUs.", labels, [([h, v.name], v.vcpus) for h, v in running])
        yield _gauge("llmvirt_vm_balloon_bytes", "The VM's balloon size (memory it may use now).", labels,
                     [([h, v.name], v.balloon_mib * MIB) for h, v in running])
        yield _gauge("llmvirt_vm_memory_max_bytes", "The VM's maximum memory.", labels,
                     [([h, v.name], v.memory_mib * MIB) for h, v in running])
        yield _gauge("llmvirt_vm_pinned", "1 when some vCPU of the VM is pinned to host CPUs.", labels,
                     [([h, v.name], float(bool(v.pinning))) for h, v in running])
        yield _gauge("llmvirt_vm_gpus", "GPUs the VM holds (passthrough or vGPU).", labels,
                     [([h, v.name], len(v.gpus)) for h, v in running])
        yield _gauge("llmvirt_vm_cpu_used_ratio", "The VM's CPU time between the last two scans, as a share "
                     "of its vCPUs.", labels, [([h, v.name], v.cpu_util) for h, v in running if v.cpu_util is not None])

    @staticmethod
    def _journal(t: tallies.Tallies) -> Iterator[Metric]:
        yield CounterMetricFamily("llmvirt_scans", "Scans run.", value=t.scans)
        if t.last_scan_seconds is not None:
            yield GaugeMetricFamily("llmvirt_scan_duration_seconds", "Wall time of the latest scan.",
                                    value=t.last_scan_seconds)
            yield GaugeMetricFamily("llmvirt_scan_failed_hosts", "Hosts the latest scan could not read.",
                                    value=float(t.last_scan_failed_hosts or 0))
        done = CounterMetricFamily("llmvirt_actions_finished", "Actions finished, by kind and outcome.",
                                   labels=["kind", "status"])
        open_ = GaugeMetricFamily("llmvirt_actions_open", "Actions pending or running.", labels=["kind", "status"])
        for (kind, status), n in sorted(t.actions.items()):
            (done if status in tallies.FINAL else open_).add_metric([kind, status], n)
        yield done
        yield open_
        yield _gauge("llmvirt_plans", "Applied plans, by status.", ["status"],
                     [([s], n) for s, n in sorted(t.plans.items())])
        for name, doc, (count, total) in (
                ("llmvirt_migration_duration_seconds", "Wall time of completed live migrations.", t.migration_seconds),
                ("llmvirt_migration_downtime_seconds", "Guest downtime of completed live migrations (libvirt's "
                 "job statistics).", t.migration_downtime_s)):
            yield SummaryMetricFamily(name, doc, count_value=count, sum_value=total)
        reward = SummaryMetricFamily("llmvirt_outcome_reward", "Scored outcomes' rewards, by action kind.",
                                     labels=["kind"])
        for kind, (count, total) in sorted(t.rewards.items()):
            reward.add_metric([kind], count_value=count, sum_value=total)
        yield reward


def registry(engine: Engine) -> CollectorRegistry:
    """A registry holding only llmvirt's collector (no process or platform metrics)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(engine))
    return reg


def write(engine: Engine, path: Path) -> None:
    """The metrics as a file for node_exporter's textfile collector (written whole, then renamed)."""
    write_to_textfile(str(path), registry(engine))


def serve(engine: Engine, address: str, port: int) -> None:
    """Serve ``/metrics`` on ``address:port`` in a background thread (the caller keeps the process alive)."""
    start_http_server(port, addr=address, registry=registry(engine))
