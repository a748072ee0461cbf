#!/usr/bin/env bash
# The long fuzz run of issue 14: RUNS inputs (default 10^6) for each reader,
# one after the other, then every input the runs kept replayed under
# AddressSanitizer and UBSan when an ASan build is given.
#
#   bash bench/fuzz/campaign.sh [RUNS] [TARGET...]
#   ASAN_PYTHON=/path/to/asan-venv/bin/python bash bench/fuzz/campaign.sh
#
# PYTHON (default: python) has heapscope and atheris installed. ASAN_PYTHON,
# if set, is a venv whose heapscope was built with
#   pip install -C cmake.define.HEAPSCOPE_SANITIZE=ON -C cmake.build-type=Debug .
# Logs and findings (crash-*, timeout-*) go to $FUZZ_OUT (default
# /tmp/heapscope-fuzz); the grown corpora live in /dev/shm (inputs are
# written there: 2.5x the inputs a second of a disk-backed directory).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
runs=${1:-1000000}
shift $(( $# > 0 ? 1 : 0 ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(capture live snapshot digest)
python=${PYTHON:-python}
out=${FUZZ_OUT:-/tmp/heapscope-fuzz}
mkdir -p "$out"
status=0

asan_env() {
  # gcc's runtimes are preloaded: python itself is not instrumented.
  env LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
      ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
      UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "$@"
}

for target in "${targets[@]}"; do
  corpus=/dev/shm/heapscope-fuzz-corpus-$target
  mkdir -p "$corpus" "$out/$target"
  started=$(date +%s)
  # -keep_seed=1: the native readers give no coverage (built with gcc), so
  # libFuzzer would otherwise drop seeds that only they read.
  (cd "$out/$target" && "$python" "$here/fuzz_readers.py" "$target" -runs="$runs" -timeout=10 -rss_limit_mb=2048 \
      -keep_seed=1 -print_final_stats=1 "$corpus" "$here/corpus/$target" > "$out/$target.log" 2>&1)
  rc=$?
  inputs=$(grep -o '^stat::number_of_executed_units: *[0-9]*' "$out/$target.log" | grep -o '[0-9]*$')
  echo "$target: $inputs inputs, exit $rc, $(( $(date +%s) - started )) s, corpus $(ls "$corpus" | wc -l) files, log $out/$target.log"
  [ $rc = 0 ] || status=1
  if [ -n "${ASAN_PYTHON:-}" ]; then
    # -runs=0 reads every file of the corpora once and stops.
    (cd "$out/$target" && asan_env "$ASAN_PYTHON" "$here/fuzz_readers.py" "$target" -runs=0 -timeout=10 \
        "$corpus" "$here/corpus/$target" > "$out/$target-asan-replay.log" 2>&1)
    rc=$?
    reports=$(grep -c -E 'ERROR: AddressSanitizer|runtime error:' "$out/$target-asan-replay.log")
    echo "$target under ASan+UBSan: every kept input replayed, exit $rc, $reports sanitizer reports"
    [ $rc = 0 ] && [ "$reports" = 0 ] || status=1
  fi
done
exit $status
