#!/usr/bin/env bash
# The main job: install heapscope, profile an example program, show its report.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
echo
echo "\$ heapscope top --nframe 16 examples/leaky_cache.py"
heapscope top --nframe 16 examples/leaky_cache.py
