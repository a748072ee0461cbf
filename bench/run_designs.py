"""How the Python stack is captured, measured design by design.

    python bench/run_designs.py [--reps 5 | --quick] [--workloads W ...] [--write-results]

- heapscope-64: walk the frames at each allocation, line numbers resolved
  later, with the per-thread cache of the last stack (what heapscope ships);
- heapscope-64-nocache: the same walk, every stack interned in full;
- shadow-stack-floor: the least a shadow stack kept from call events costs
  (a C profile function pushing and popping; no allocation is recorded).

Same harness and rules as run_tracemalloc.py.
"""
import run_tracemalloc

MODES = ["plain", "heapscope-64", "heapscope-64-nocache", "shadow-stack-floor"]

if __name__ == "__main__":
    run_tracemalloc.main(
        modes=MODES, section="designs", heading="## Stack capture designs",
        intro=("Walking the frames at each allocation (heapscope, with and without its per-thread "
               "cache of the last stack) against the floor of a shadow stack kept from call events "
               "(`bench/designs/shadow_stack.c`: a C profile function that only pushes and pops)."))
