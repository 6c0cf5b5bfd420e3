#!/usr/bin/env bash
# `make vagrant-e2e`: from a fresh checkout, everything the Vagrant lab needs, then the end-to-end
# check, then teardown. Run as root on a Debian 12 machine (the lab machine of this project).
#
#   1. packages: Debian's vagrant, vagrant-libvirt, mmdebstrap (and the README's set-up for llmvirt)
#   2. the system libvirtd that vagrant-libvirt talks to (systemd where it runs, else the daemons)
#   3. the Vagrant machines' domain type (kvm or qemu/TCG) from the lab's own probe
#   4. the box, built locally from Debian packages (vagrant/build-box.sh, cached)
#   5. `vagrant up` of kvm1..kvmN; kvm1 serves the image directory over NFS
#   6. vagrant/e2e.py on this machine, the controller, over qemu+ssh (a throwaway key in an ssh-agent)
#   7. `vagrant destroy -f`, and this machine's /etc/hosts entries removed
#
# Usage: vagrant/run-e2e.sh [--smoke]
#   --smoke  CI's smaller version: box build plus one booted machine, checked over ssh and qemu+ssh, and the
#            Debian package (dist/, built if absent) installed and run by systemd there
# Env: LLMVIRT_VAGRANT_HOSTS (default 3), LLMVIRT_VAGRANT_OUT (timings JSON, default bench/vagrant_e2e.json;
#      bench/vagrant_smoke.json with --smoke), LLMVIRT_VAGRANT_KEEP=1 leaves the machines up,
#      LLMVIRT_VAGRANT_HANG=STEP pauses kvm1 a few seconds into the smoke's STEP (smoke or package_in_vm), once:
#      the fault test of the reset below (docs/faults.md).
#
# A nested TCG guest hung once in the middle of the smoke (no network, nothing on its console; bench/RESULTS.md,
# 2026-12-06). So ssh gives up on a host that has answered nothing for two minutes instead of waiting for ever, and
# a smoke step that fails while kvm1 answers nothing is run once more after a hard reset of kvm1 (`virsh destroy`,
# `vagrant up`). A step that fails while kvm1 answers is a real failure and is not run again.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
if [ "$SMOKE" = 1 ]; then N=1; else N=${LLMVIRT_VAGRANT_HOSTS:-3}; fi
OUT=${LLMVIRT_VAGRANT_OUT:-bench/vagrant_$([ "$SMOKE" = 1 ] && echo smoke || echo e2e).json}
[ "$(id -u)" -eq 0 ] || { echo "run-e2e: needs root (libvirt's system instance, /etc/hosts)" >&2; exit 2; }
declare -A T
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
timed() { local name=$1; shift; local t0; t0=$(now); "$@"; T[$name]=$(since "$t0"); echo "run-e2e: $name ${T[$name]} s" >&2; }

packages() {
  bash scripts/setup.sh >/dev/null
  local want=(vagrant vagrant-libvirt mmdebstrap dnsmasq-base e2fsprogs) missing=()
  for p in "${want[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

system_libvirtd() {
  # /dev/kvm as udev leaves it on a Debian host (root:kvm 0660), so that QEMU's user can open it and the
  # probe below tests nested KVM itself; machines without udev leave it root-only
  if [ -c /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" != kvm ] && getent group kvm >/dev/null; then
    chgrp kvm /dev/kvm && chmod 660 /dev/kvm
  fi
  virsh -c qemu:///system version >/dev/null 2>&1 && return 0
  if [ -d /run/systemd/system ]; then
    systemctl start libvirtd
  else  # containers and CI machines without systemd as PID 1
    pgrep -x virtlogd >/dev/null || virtlogd -d
    libvirtd -d
  fi
  for _ in $(seq 1 50); do virsh -c qemu:///system version >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "run-e2e: the system libvirtd does not answer" >&2
  return 1
}

IMAGE_DIR=/var/lib/libvirt/boot/llmvirt-lab-image   # QEMU's user must read the guest image
HOSTS_BEGIN="# llmvirt-vagrant begin"
hosts_entries() {
  sed -i "/^$HOSTS_BEGIN/,/^# llmvirt-vagrant end/d" /etc/hosts
  { echo "$HOSTS_BEGIN"; for i in $(seq 1 "$N"); do echo "10.77.0.$((10 + i)) kvm$i"; done; echo "# llmvirt-vagrant end"; } >>/etc/hosts
}
teardown() {
  local rc=$?
  if [ "${LLMVIRT_VAGRANT_KEEP:-0}" != 1 ]; then
    local t0; t0=$(now)
    (cd vagrant && vagrant destroy -f) >/dev/null 2>&1 || true
    T[destroy]=$(since "$t0")
    sed -i "/^$HOSTS_BEGIN/,/^# llmvirt-vagrant end/d" /etc/hosts
  fi
  [ -n "${SSH_AGENT_PID:-}" ] && kill "$SSH_AGENT_PID" 2>/dev/null
  {
    printf '{"ok": %s, "mode": "%s", "hosts": %s, "driver": "%s", "machine": "%s", "date": "%s", "timings_s": {' \
      "$([ $rc -eq 0 ] && echo true || echo false)" "$([ "$SMOKE" = 1 ] && echo smoke || echo full)" "$N" \
      "${DRIVER:-?}" "$(nproc) CPUs, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)" "$(date -u +%FT%TZ)"
    sep=""; for k in "${!T[@]}"; do printf '%s"%s": %.1f' "$sep" "$k" "${T[$k]}"; sep=", "; done
    printf '}'
    [ -f "${E2E_JSON:-/nonexistent}" ] && printf ', "e2e": %s' "$(cat "$E2E_JSON")"
    printf '}\n'
  } >"$OUT"
  rm -rf "${WORK:-/nonexistent}"
  echo "run-e2e: $([ $rc -eq 0 ] && echo passed || echo FAILED), timings in $OUT" >&2
  exit $rc
}

timed packages packages
timed libvirtd system_libvirtd
t_probe=$(now)
DRIVER=$(.venv/bin/python vagrant/probe_driver.py "$IMAGE_DIR")
T[probe]=$(since "$t_probe")
echo "run-e2e: the Vagrant machines run under $DRIVER" >&2
WORK=$(mktemp -d)
trap teardown EXIT
timed box_build bash vagrant/build-box.sh
export LLMVIRT_VAGRANT_DRIVER=$DRIVER LLMVIRT_VAGRANT_HOSTS=$N
hosts_entries
up() { (cd vagrant && vagrant up --provider=libvirt 2>&1 | tr '\r' '\n' | grep -v 'Progress:' >"$WORK/up.log") ||
         { tail -40 "$WORK/up.log" >&2; return 1; }; }
timed vagrant_up up
eval "$(ssh-agent -s)" >/dev/null
ssh-add -q vagrant/.lab_ssh_key
export LLMVIRT_DB=$WORK/llmvirt.db LLMVIRT_CONFIG=$WORK/llmvirt.toml
printf '[apply]\npeer_to_peer = true\ntimeout_base_s = 300.0\n\n[outcomes]\nwindow_s = 20\n' >"$LLMVIRT_CONFIG"
E2E_JSON=$WORK/e2e.json
SSH_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes
          -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=8)
kvm1_domain() { cat vagrant/.vagrant/machines/kvm1/libvirt/id; }  # the libvirt domain's UUID, as vagrant-libvirt keeps it
kvm1_answers() { ssh "${SSH_OPTS[@]}" -o ConnectTimeout=20 root@kvm1 true 2>/dev/null; }
reset_kvm1() {
  virsh -c qemu:///system destroy "$(kvm1_domain)" >/dev/null
  (cd vagrant && vagrant up kvm1 --provider=libvirt 2>&1 | tr '\r' '\n' | grep -v 'Progress:' >>"$WORK/up.log") ||
    { tail -40 "$WORK/up.log" >&2; return 1; }
}
# STEP, then once more after a reset of kvm1 if it failed while kvm1 answered nothing
once_more_if_hung() {
  local name=$1 hang=""
  if [ "${LLMVIRT_VAGRANT_HANG:-}" = "$name" ]; then
    (sleep 5; virsh -c qemu:///system suspend "$(kvm1_domain)" >/dev/null; echo "run-e2e: kvm1 paused (fault test)" >&2) &
    hang=$!
  fi
  local rc=0; "$name" || rc=$?
  [ -n "$hang" ] && wait "$hang"
  [ "$rc" -eq 0 ] && return 0
  if kvm1_answers; then return "$rc"; fi
  echo "run-e2e: kvm1 stopped answering during $name; resetting it and running $name once more" >&2
  local t0; t0=$(now)
  reset_kvm1
  T[${name}_reset]=$(since "$t0")
  "$name"
}
# The Debian package on a machine whose PID 1 is systemd (this one's is not): dpkg -i, the units as systemd
# reads them (`systemctl cat`), installed but not enabled, and the rebalance service started by systemd
# itself (scan, then rebalance --apply, of the machine's own libvirtd), then dpkg --purge.
package_in_vm() {
  local deb
  deb=$(ls -t dist/llmvirt_*_amd64.deb 2>/dev/null | head -n 1 || true)
  if [ -z "$deb" ]; then bash scripts/build-deb.sh >&2 || return 1; deb=$(ls -t dist/llmvirt_*_amd64.deb | head -n 1); fi
  scp "${SSH_OPTS[@]}" -q "$deb" root@kvm1:/var/tmp/llmvirt.deb || return 1
  ssh "${SSH_OPTS[@]}" root@kvm1 bash -s <<'EOF'
set -euo pipefail
fail() { echo "package in the VM: $*" >&2; exit 1; }
DEBIAN_FRONTEND=noninteractive dpkg -i --force-unsafe-io /var/tmp/llmvirt.deb >/dev/null  # no fsync per file: a throwaway machine
rm -f /var/tmp/llmvirt.deb
llmvirt --version
llmvirt hosts remove self >/dev/null 2>&1 || true  # a second attempt, after a reset of the machine, starts afresh
systemctl cat llmvirt-rebalance.service llmvirt-rebalance.timer llmvirt-controller.service >/var/tmp/units.txt
grep -q '^ExecStart=/usr/bin/llmvirt rebalance --apply' /var/tmp/units.txt || fail "systemctl cat: no rebalance unit"
[ "$(systemctl is-enabled llmvirt-rebalance.timer || true)" = disabled ] || fail "the timer is enabled on install"
llmvirt hosts add self qemu:///system
systemctl start llmvirt-rebalance.service || { journalctl -u llmvirt-rebalance.service --no-pager | tail -20; exit 1; }
[ "$(systemctl show -p Result --value llmvirt-rebalance.service)" = success ] || fail "the service did not succeed"
journalctl -u llmvirt-rebalance.service --no-pager | grep -q "1 ok, 0 failed" || fail "no scan in the service's journal"
llmvirt doctor --json >/var/tmp/doctor.json || true
grep -q "installed but not enabled" /var/tmp/doctor.json || fail "doctor did not see the packaged timer"
dpkg --purge llmvirt >/dev/null
[ ! -e /usr/bin/llmvirt ] || fail "dpkg --purge left the command"
echo "package in the VM: dpkg -i, systemctl cat, systemctl start llmvirt-rebalance.service, dpkg --purge: ok"
EOF
}
if [ "$SMOKE" = 1 ]; then
  smoke() {
    ssh "${SSH_OPTS[@]}" root@kvm1 'hostname; virsh -c qemu:///system version --daemon | head -n 3; exportfs -v' ||
      return 1
    .venv/bin/python vagrant/e2e.py --hosts kvm1 --smoke --out "$E2E_JSON"
  }
  timed smoke once_more_if_hung smoke
  timed package_in_vm once_more_if_hung package_in_vm
else
  hosts=$(seq -s, -f 'kvm%g' 1 "$N")
  timed e2e .venv/bin/python vagrant/e2e.py --hosts "$hosts" --image-dir "$IMAGE_DIR" --out "$E2E_JSON"
fi
