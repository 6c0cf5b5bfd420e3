#!/bin/bash
# `make test` in a row on a fresh clone of main (issue 17): clone once, then run `.ci/run` until a failure or
# N passes; one line per run in $WORK/log. Usage: bash bench/test_in_a_row.sh [N] [WORK]  (touch WORK/stop to end)
set -u
N=${1:-10}
WORK=${2:-/tmp/ten}
REPO=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$WORK" && mkdir -p "$WORK" && git clone -q "$REPO" "$WORK/main" && ln -s "$REPO/../shared" "$WORK/shared"
cd "$WORK/main" || exit 1
echo "commit $(git rev-parse --short HEAD)" >> "$WORK/log"
for i in $(seq 1 "$N"); do
  [ -f "$WORK/stop" ] && break
  t0=$(date +%s)
  bash .ci/run > "$WORK/run$i.log" 2>&1; rc=$?
  t1=$(date +%s)
  echo "run $i rc=$rc wall=$((t1-t0))s $(grep -E '[0-9]+ passed' "$WORK/run$i.log" | tail -1)" >> "$WORK/log"
  [ $rc -ne 0 ] && break
done
echo DONE >> "$WORK/log"
