#!/usr/bin/env bash
# Builds llmvirt as a wheel and as a Debian package, installs each the way an operator would
# (a fresh virtual environment; dpkg), and exercises the installed command against libvirt's
# test driver from outside the source tree. Run by CI after `make test` (`make package-check`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
work=$(mktemp -d)
cleanup() { dpkg --purge llmvirt >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
fail() { echo "package-check: $*" >&2; exit 1; }

# Exercise an installed `llmvirt` ($1) in an empty home, away from the checkout.
exercise() {
  local exe=$1 home="$work/home-$2"
  mkdir -p "$home"
  (
    cd "$home"
    export HOME="$home" XDG_DATA_HOME="$home/data" XDG_CONFIG_HOME="$home/config"
    unset LLMVIRT_DB LLMVIRT_CONFIG PYTHONPATH
    [ "$("$exe" --version)" = "llmvirt $version" ] || fail "--version: $("$exe" --version)"
    "$exe" hosts add small test://"$ROOT"/tests/fixtures/small-host.xml
    "$exe" hosts add busy test://"$ROOT"/tests/fixtures/busy-host.xml
    "$exe" scan
    [ "$(stat -c %a "$home/data/llmvirt/llmvirt.db")" = 600 ] || fail "the database is not mode 0600"
    "$exe" status --json | "$PY" -c 'import json,sys; d=json.load(sys.stdin); assert {h["name"] for h in d["hosts"]}=={"small","busy"}, d'
    # place and rebalance read the shipped default policy: proof that the policies travelled
    "$exe" place --vcpus 1 --memory 256M --json \
      | "$PY" -c 'import json,sys; d=json.load(sys.stdin); assert d["chosen"]=="small", d'
    "$exe" rebalance --json >/dev/null
    "$exe" doctor || true   # shown for the log; test-driver hosts have no KVM, so some checks warn
    "$exe" doctor --json > doctor.json || true
    "$PY" - doctor.json <<'PYEOF'
import json, sys
checks = {(c["scope"], c["check"]): c for c in json.load(open(sys.argv[1]))["checks"]}
assert checks[("store", "writable")]["status"] == "ok", checks
assert checks[("busy", "reachable")]["status"] == "ok" and checks[("small", "reachable")]["status"] == "ok", checks
PYEOF
  )
}

step "wheel: build"
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/wheel" .
whl=$(ls "$work"/wheel/llmvirt-"$version"-*.whl)
"$PY" -m zipfile -l "$whl" | grep "llmvirt_policies/default/policy.json" >/dev/null || fail "the wheel lacks the default policy"
step "wheel: install into a fresh virtual environment"
"$PY" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0
"$work/venv/bin/pip" install -q --disable-pip-version-check "$whl"
step "wheel: exercise"
exercise "$work/venv/bin/llmvirt" wheel

step "Debian package: build (dpkg-buildpackage, debhelper, dh-virtualenv)"
bash scripts/build-deb.sh
deb="$ROOT/dist/llmvirt_${version}_amd64.deb"
dpkg-deb -c "$deb" | grep "./usr/share/man/man1/llmvirt.1.gz" >/dev/null || fail "no man page in the package"
step "Debian package: install"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >/dev/null
[ "$(readlink -f /usr/bin/llmvirt)" = /opt/venvs/llmvirt/bin/llmvirt ] || fail "/usr/bin/llmvirt is not the package's"
step "Debian package: exercise"
exercise /usr/bin/llmvirt deb
grep -q "installed but not enabled" "$work/home-deb/doctor.json" || fail "doctor did not see the packaged timer"
man -w llmvirt >/dev/null || fail "man llmvirt: no page"
MANWIDTH=80 man llmvirt | grep "EXIT STATUS" >/dev/null || fail "man llmvirt renders no EXIT STATUS"
# `systemctl cat` needs a running systemd (PID 1 here is not): systemd's offline tools check the same units
systemd-analyze verify --man=no /lib/systemd/system/llmvirt-rebalance.service /lib/systemd/system/llmvirt-rebalance.timer \
  /lib/systemd/system/llmvirt-controller.service
state=$(systemctl --root=/ is-enabled llmvirt-rebalance.timer || true)   # exits 1 for "disabled"
[ "$state" = disabled ] || fail "the timer should install disabled, not '$state'"
systemctl --root=/ enable llmvirt-rebalance.timer
[ -L /etc/systemd/system/timers.target.wants/llmvirt-rebalance.timer ] || fail "enable made no timers.target link"
systemctl --root=/ disable llmvirt-rebalance.timer
got=$(bash -c 'source /usr/share/bash-completion/completions/llmvirt
  COMP_WORDS=(llmvirt reb); COMP_CWORD=1; _llmvirt_completion llmvirt; printf "%s\n" "${COMPREPLY[@]}"')
[ "$got" = rebalance ] || fail "bash completion offered '$got' for 'llmvirt reb'"
step "Debian package: remove"
dpkg --purge llmvirt >/dev/null
[ ! -e /usr/bin/llmvirt ] && [ ! -e /opt/venvs/llmvirt/bin/llmvirt ] || fail "dpkg --purge left the command behind"
echo "package-check: the wheel and the Debian package install and work"
