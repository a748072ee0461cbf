#!/usr/bin/env bash
# Runs one GoogleTest filter N times, each under a timeout, and counts hangs
# (timeouts) and failures: for tests whose failure is rare, such as fork
# under ASan. Usage: scripts/repeat_test.sh BINARY FILTER N [SECONDS]
set -u
binary=$1 filter=$2 runs=$3 limit=${4:-20}
hangs=0 failures=0
for _ in $(seq 1 "$runs"); do
  timeout "$limit" "$binary" --gtest_filter="$filter" >/dev/null 2>&1
  rc=$?
  if [ $rc -eq 124 ]; then hangs=$((hangs + 1)); elif [ $rc -ne 0 ]; then failures=$((failures + 1)); fi
done
echo "runs=$runs hangs=$hangs failures=$failures"
[ $hangs -eq 0 ] && [ $failures -eq 0 ]
