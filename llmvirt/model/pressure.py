"""Guest memory pressure from the balloon statistics libvirt reports, computed in one place.

A guest is under pressure when its usable memory is below :data:`PRESSURE_USABLE` of its balloon,
or when its swap-in or major page faults rose since the previous sample (counters are cumulative;
a counter that went backwards restarted with a new QEMU process and says nothing). The balloon
safety limits (deflate at once) and the balloon head's pressure feedback both read this rule, on a
live scan and on the store's history alike.
"""

from __future__ import annotations

PRESSURE_USABLE = 0.10  #: usable memory under 10 % of the balloon counts as pressure


def pressure_flag(usable_mib: int | None, current_mib: int | None, swap_in_mib: int | None,
                  prev_swap_in_mib: int | None, major_faults: int | None, prev_major_faults: int | None) -> bool:
    """True when one sample (with the previous sample's counters) shows memory pressure."""
    if usable_mib is not None and current_mib and usable_mib < PRESSURE_USABLE * current_mib:
        return True
    if swap_in_mib is not None and prev_swap_in_mib is not None and swap_in_mib > prev_swap_in_mib:
        return True
    return major_faults is not None and prev_major_faults is not None and major_faults > prev_major_faults
