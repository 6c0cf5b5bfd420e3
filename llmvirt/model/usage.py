"""CPU use from libvirt's cumulative CPU-time counters, computed in one place.

libvirt's ``cpu.time`` is the CPU time of the guest's QEMU process (or its cgroup). A live
migration starts a new QEMU process on the destination, and so does a restart, so the counter
starts again from about zero. A later sample below an earlier one therefore means the counter
restarted inside the interval: the CPU time the guest used *on this host* in the interval is then
the later sample itself, not the (negative) difference. Clamping that difference to 0 made every
migrated VM look idle on its new host for the first interval (issue 17).
"""

from __future__ import annotations

PEAK_QUANTILE = 0.9  #: a host's recent peak, what placement reads: this quantile of its CPU use ...
PEAK_SCANS = 288  #: ... over this many scans or simulator steps (a day of 5-minute steps)


def cpu_ns_used(before_ns: int | None, after_ns: int | None) -> int | None:
    """CPU nanoseconds used between two samples of one guest's counter; ``None`` without both samples.

    When the counter went backwards (a new QEMU process: live migration or restart) the guest used
    ``after_ns`` since its process started, which is inside the interval."""
    if before_ns is None or after_ns is None:
        return None
    return after_ns - before_ns if after_ns >= before_ns else after_ns


def cpu_fraction(before_ns: int | None, after_ns: int | None, seconds: float, cpus: int) -> float | None:
    """Share of ``cpus`` CPUs used between two samples ``seconds`` apart; ``None`` without a figure."""
    used = cpu_ns_used(before_ns, after_ns)
    if used is None or seconds <= 0:
        return None
    return used / (seconds * 1e9 * max(1, cpus))


def restarted(before_ns: int | None, after_ns: int | None) -> bool:
    """Whether the counter started again between the samples (a new QEMU process)."""
    return before_ns is not None and after_ns is not None and after_ns < before_ns
