#!/usr/bin/env bash
# Installs everything and runs every test: the C++ unit tests (plain, under
# AddressSanitizer + UndefinedBehaviorSanitizer, and under ThreadSanitizer)
# and the pytest suite.
set -euo pipefail
export HEAPSCOPE_WERROR=ON  # compiler warnings fail the build
HEAPSCOPE_PIP_TARGET=".[test]" source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
echo "== set-up done at $SECONDS s"

echo "== include directions (scripts/check_layers.py)"
python scripts/check_layers.py

jobs=$(nproc)
# tsan: the unit tests alone at -O1 (CMakeLists.txt), the engine and the
# writer driven from 8 threads among them (test_threads_at_scale.cpp).
for variant in plain sanitize tsan; do
  sanitize=OFF; tsan=OFF; build_type=Release
  [ "$variant" = sanitize ] && { sanitize=ON; build_type=Debug; }
  [ "$variant" = tsan ] && { tsan=ON; build_type=Debug; }
  echo "== C++ unit tests ($variant)"
  started=$SECONDS
  cmake -S . -B "build/unit-$variant" -G Ninja -DCMAKE_BUILD_TYPE=$build_type \
    -DHEAPSCOPE_BUILD_MODULE=OFF -DHEAPSCOPE_BUILD_TESTS=ON -DHEAPSCOPE_WERROR=ON \
    -DHEAPSCOPE_SANITIZE=$sanitize -DHEAPSCOPE_TSAN=$tsan >/dev/null
  cmake --build "build/unit-$variant" -j "$jobs"
  built=$SECONDS
  ctest --test-dir "build/unit-$variant" --output-on-failure -j "$jobs"
  echo "== C++ unit tests ($variant): built in $((built - started)) s, ran in $((SECONDS - built)) s"
done

echo "== fuzzing the readers, 10 s each (bench/fuzz/fuzz_readers.py)"
# atheris brings libFuzzer as a wheel; where it has none for this Python, say so.
if python -m pip install -q --disable-pip-version-check atheris 2>/dev/null; then
  python bench/fuzz/fuzz_readers.py --all 10
else
  echo "fuzz: skipped (atheris cannot be installed for $(python -V))"
fi

echo "== pytest"
# Run from tests/ so that the installed package, not src/, is imported.
# pytest-xdist spreads the tests over every core (HEAPSCOPE_TEST_WORKERS=0: one process).
workers=${HEAPSCOPE_TEST_WORKERS:-$jobs}
export HEAPSCOPE_TEST_WORKERS=$workers
started=$SECONDS
(cd tests && python -m pytest -q -p no:cacheprovider -n "$workers" "$@")
echo "== pytest: $((SECONDS - started)) s (whole run so far: $SECONDS s)"

# The other supported CPython versions this machine has (3.9-3.13).
bash scripts/test_other_pythons.sh
