#!/usr/bin/env bash
# Builds heapscope for every other CPython 3.9-3.13 this machine has, and runs
# the pytest suite with each. Versions that are not installed are skipped.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
main_version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# A working interpreter for version $1: on PATH, or installed by pyenv (whose
# shims on PATH only run the versions currently selected).
find_python() {
  local candidate
  for candidate in $(command -v "python$1" 2>/dev/null) "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/"python$1" \
      /usr/bin/"python$1" /usr/local/bin/"python$1"; do
    if [ -x "$candidate" ] && "$candidate" -c 'import venv, ensurepip' >/dev/null 2>&1; then
      echo "$candidate"
      return
    fi
  done
}

tested=()
for version in 3.9 3.10 3.11 3.12 3.13; do
  [ "$version" = "$main_version" ] && continue
  interpreter=$(find_python "$version")
  if [ -z "$interpreter" ]; then
    echo "== Python $version: not installed here, skipped"
    continue
  fi
  echo "== Python $version ($interpreter)"
  started=$SECONDS
  venv=".venv-$version"
  [ -x "$venv/bin/python" ] || "$interpreter" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check ".[test]"
  installed=$SECONDS
  # The HTML pages do not depend on the interpreter: the browser tests run once, in the main run.
  (cd tests && HEAPSCOPE_BROWSER_TESTS=0 "$repo/$venv/bin/python" -m pytest -q -p no:cacheprovider \
    -n "${HEAPSCOPE_TEST_WORKERS:-$(nproc)}")
  echo "== Python $version: installed in $((installed - started)) s, tested in $((SECONDS - installed)) s"
  tested+=("$version")
done
echo "== other Python versions tested: ${tested[*]:-none}"
