"""Unattended runs: the crontab line and the systemd service and timer for "scan, then rebalance", and the
service for a long-running controller (``llmvirt controller run``; several may share a PostgreSQL store).

``llmvirt cron print`` prints them for the running installation; the Debian package ships the same
units for ``/usr/bin/llmvirt`` (packaging/systemd/, held equal to these by a test).
"""

from __future__ import annotations

UNIT_NAME = "llmvirt-rebalance"  #: the service and the timer share this name
_LOG = ">>/var/log/llmvirt.log 2>&1"
#: minutes between unattended runs: the step the balance default was tuned and judged at (it decides once a step),
#: and the spacing of the scan recovery's hour of scans
EVERY_MINUTES = 5


def crontab_line(exe: str, every_minutes: int = EVERY_MINUTES, apply: bool = True) -> str:
    """Root's crontab line: scan, then rebalance (the rebalance runs even when some host failed)."""
    flag = " --apply" if apply else ""
    if every_minutes < 60:
        when = f"*/{every_minutes} * * * *"
    elif every_minutes % 60 == 0 and every_minutes <= 1440:
        when = f"0 */{every_minutes // 60} * * *"
    else:
        raise ValueError("cron runs every 1 to 59 minutes or every whole number of hours (up to 24)")
    return f"{when} {exe} scan --json {_LOG}; {exe} rebalance{flag} {_LOG}"


def systemd_units(exe: str, every_minutes: int = EVERY_MINUTES, apply: bool = True) -> dict[str, str]:
    """The service and timer unit files by file name. Exit 3 (some host or action failed) counts as success,
    so one unreachable host does not stop the rebalance or mark the unit failed."""
    flag = " --apply" if apply else ""
    service = f"""[Unit]
Description=llmvirt: scan KVM hosts and rebalance
Documentation=man:llmvirt(1)
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={exe} scan
ExecStart={exe} rebalance{flag}
SuccessExitStatus=3
"""
    timer = f"""[Unit]
Description=Run llmvirt rebalance every {every_minutes} minutes
Documentation=man:llmvirt(1)

[Timer]
OnBootSec=5min
OnUnitActiveSec={every_minutes}min

[Install]
WantedBy=timers.target
"""
    return {f"{UNIT_NAME}.service": service, f"{UNIT_NAME}.timer": timer}


CONTROLLER_UNIT = "llmvirt-controller.service"


def controller_unit(exe: str, interval_s: int = 60, apply: bool = True) -> str:
    """The long-running controller's service: it scans every ``interval_s`` and plans every :data:`EVERY_MINUTES`;
    restarted when it fails, stopped with SIGTERM (it gives up the lead on the way out). Use it or the timer, not
    both."""
    flag = "--apply" if apply else "--dry-run"
    return f"""[Unit]
Description=llmvirt controller: scan every {interval_s} s, rebalance every {EVERY_MINUTES} min while leading
Documentation=man:llmvirt(1)
After=network-online.target
Wants=network-online.target
Conflicts={UNIT_NAME}.timer

[Service]
Type=simple
ExecStart={exe} controller run --interval {interval_s} --plan-every {EVERY_MINUTES * 60} {flag}
Restart=on-failure
RestartSec=10s

[Install]
WantedBy=multi-user.target
"""
