#!/usr/bin/env bash
# Installs what heapscope needs on a bare Debian machine (as root) and builds
# it into a virtual environment at .venv. Sourced by demo.sh and test.sh.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

python=${PYTHON:-python3}
need_apt=()
command -v g++ >/dev/null || need_apt+=(g++)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v ninja >/dev/null || need_apt+=(ninja-build)
[ -f /usr/include/gtest/gtest.h ] || need_apt+=(libgtest-dev)
[ -f /usr/include/zstd.h ] || need_apt+=(libzstd-dev)
compgen -G "/usr/include/*/libunwind.h" >/dev/null || [ -f /usr/include/libunwind.h ] || need_apt+=(libunwind-dev)
[ -f /usr/include/elfutils/libdwfl.h ] || need_apt+=(libdw-dev)
"$python" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need_apt+=(python3-dev)
"$python" -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
# The test extras: the export tests check pprof files with `go tool pprof` and
# collapsed stacks with flamegraph.pl (perl), the flow graph tests draw dot files
# with Graphviz, the attach tests enter running programs with gdb; installed
# only as root, else those tests skip (without gdb, the attach tests fail and say so).
if [[ "${HEAPSCOPE_PIP_TARGET:-.}" == *"[test]"* ]] && [ "$(id -u)" = 0 ]; then
  command -v go >/dev/null || need_apt+=(golang-go)
  command -v perl >/dev/null || need_apt+=(perl)
  command -v dot >/dev/null || need_apt+=(graphviz)
  command -v gdb >/dev/null || need_apt+=(gdb)
  # The test command builds the same Python-free stages for every interpreter
  # and the unit tests: ccache compiles each of them once.
  command -v ccache >/dev/null || need_apt+=(ccache)
fi
# The HTML report tests drive Debian's chromium through playwright (never
# `playwright install`: it downloads a browser of its own); DejaVu gives the
# screenshots their fonts. Installed only as root, else those tests skip.
if [[ "${HEAPSCOPE_PIP_TARGET:-.}" == *"[test]"* ]] && [ "$(id -u)" = 0 ]; then
  command -v chromium >/dev/null || need_apt+=(chromium)
  [ -d /usr/share/fonts/truetype/dejavu ] || need_apt+=(fonts-dejavu-core)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "heapscope setup: please install: ${need_apt[*]} (apt-get), or run as root" >&2
    exit 1
  fi
  echo "heapscope setup: apt-get install ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# A virtual environment keeps us clear of Debian's externally managed Python.
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
export PATH="$repo/.venv/bin:$PATH"
if command -v ccache >/dev/null && [ -z "${CMAKE_CXX_COMPILER_LAUNCHER:-}" ]; then
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache  # read by CMake when it configures a build
fi
python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
echo "heapscope setup: building and installing heapscope (pip install .)" >&2
python -m pip install -q --disable-pip-version-check "${HEAPSCOPE_PIP_TARGET:-.}"
