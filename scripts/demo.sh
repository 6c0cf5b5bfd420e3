#!/usr/bin/env bash
# The README's demo: a lab of 3 real libvirt hosts with 6 guests, scanned and shown by llmvirt.
# Run through `make demo` (which installs everything first). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
export LLMVIRT_DB="${LLMVIRT_DB:-$PWD/.demo/llmvirt.db}"
LAB_DIR="${LAB_DIR:-$PWD/.lab}"
mkdir -p "$(dirname "$LLMVIRT_DB")"
# TCG guests sharing this machine's 2 cores never reach a full core each: call a host hot at 60 %.
# Outcomes are measured over 20 s here (900 s in production) so the demo can show them.
if [ -z "${LLMVIRT_CONFIG:-}" ]; then
  export LLMVIRT_CONFIG="$PWD/.demo/llmvirt.toml"
  printf '[rebalance]\nhot = 0.6\ncold = 0.1\n\n[outcomes]\nwindow_s = 20\n' > "$LLMVIRT_CONFIG"
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "llmvirt lab down (clean up any earlier demo)"
llmvirt lab down --dir "$LAB_DIR"
step "llmvirt lab up: 3 libvirtd hosts, 6 guests spread unevenly"
llmvirt lab up --dir "$LAB_DIR"
step "llmvirt hosts list"
llmvirt hosts list
step "llmvirt scan (twice, 5 s apart, so CPU utilisation can be computed)"
llmvirt scan
sleep 5
step "make a hotspot: every guest on lab-1 to 100 % CPU, then scan 4 times (hysteresis wants 3 hot intervals)"
for vm in $(llmvirt lab status --dir "$LAB_DIR" --json | python3 -c 'import json,sys; print(" ".join(g for g, h in json.load(sys.stdin)["guests"].items() if h == "lab-1"))'); do
  llmvirt lab load "$vm" --cpu 100 --mem 16M --dir "$LAB_DIR"
done
for _ in 1 2 3 4; do sleep 4; llmvirt scan >/dev/null; done
step "llmvirt status"
llmvirt status
step "llmvirt place: where would a new 1-vCPU, 256 MiB VM go, and why?"
llmvirt place --vcpus 1 --memory 256M
step "llmvirt rebalance: the plan for the hotspot (a dry run; nothing moves)"
llmvirt rebalance
step "llmvirt rebalance --policy baseline:watcher-wb / --goal consolidate: the heuristics you know and the consolidation default, dry runs on the same cluster"
llmvirt rebalance --policy baseline:watcher-wb
llmvirt rebalance --goal consolidate
step "llmvirt rebalance --apply --max-migrations 1: a real live migration, journaled"
llmvirt rebalance --apply --max-migrations 1 || true
llmvirt scan >/dev/null
step "llmvirt plans list / actions: the journal"
llmvirt plans list
llmvirt actions
step "llmvirt rebalance --only balloon / --only pin: what the balloon and pinning heads would do (dry runs)"
llmvirt rebalance --only balloon
llmvirt rebalance --only pin
step "llmvirt outcomes: the migration scored from the scans after it (same reward code as the simulator)"
sleep 12; llmvirt scan >/dev/null
llmvirt outcomes
step "llmvirt metrics write: what Prometheus would scrape (hosts, journal and migrations shown)"
llmvirt metrics write "$(dirname "$LLMVIRT_DB")/llmvirt.prom"
grep -E '^llmvirt_(host_vms_running|host_cpu_used_ratio|actions_finished_total|migration_duration_seconds_(sum|count))' "$(dirname "$LLMVIRT_DB")/llmvirt.prom"
step "llmvirt status --json (first host, abridged)"
llmvirt status --json | python3 -c 'import json,sys; h=json.load(sys.stdin)["hosts"][0]; h["vms"]=h["vms"][:1]; print(json.dumps(h, indent=2))'
step "done: the lab keeps running. Explore with: LLMVIRT_DB=$LLMVIRT_DB .venv/bin/llmvirt status; stop it with: .venv/bin/llmvirt lab down --dir $LAB_DIR"
