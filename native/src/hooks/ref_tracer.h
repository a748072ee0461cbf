// Objects reused from a free list: CPython hands them out again without
// calling an allocator, so the block keeps the stack of its first
// allocation. CPython 3.13 reports every new object to a reference tracer
// (PyRefTracer_SetTracer, PyRefTracer_CREATE); while the tracemalloc door
// traces, heapscope's files the object's block under the stack that made the
// object, as the stdlib's tracemalloc does. 3.9-3.12 have no such event: only
// their own tracemalloc is told (_Py_NewReference calls
// _PyTraceMalloc_NewReference directly).
#pragma once

namespace heapscope::reftrace {

// Whether this Python reports new objects to a tracer (3.13+).
bool available();
// Installs the tracer, keeping the one in place to call it too. Requires the
// GIL; no-op where unavailable or when already installed.
void install();
// Puts back the tracer found by install(), if heapscope's is still the one
// in place (another tool may have replaced it since). Requires the GIL.
void uninstall();

}  // namespace heapscope::reftrace
