#!/usr/bin/env bash
# The main job: install heapscope, profile an example program, show its report.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
echo
echo "\$ heapscope top --nframe 16 examples/leaky_cache.py"
heapscope top --nframe 16 examples/leaky_cache.py
# The same program captured with native allocations and Python's allocators,
# then the capture's peak-memory summary and its leaks as a call tree.
capture="${TMPDIR:-/tmp}/heapscope-demo.hscap"
echo
echo "\$ heapscope run --force --trace-python-allocators -o $capture examples/leaky_cache.py"
heapscope run --force --trace-python-allocators -o "$capture" examples/leaky_cache.py
echo
echo "\$ heapscope summary $capture"
heapscope summary "$capture"
echo
echo "\$ heapscope tree --leaks $capture"
heapscope tree --leaks "$capture"
# The picture: an interactive flame graph of the peak, with memory over time
# above it (one HTML file that works offline: open it in any browser).
page="${TMPDIR:-/tmp}/heapscope-demo-flamegraph.html"
echo
echo "\$ heapscope flamegraph --temporal --force -o $page $capture"
heapscope flamegraph --temporal --force -o "$page" "$capture"
echo
echo "Open the flame graph in a browser:  file://$page"
