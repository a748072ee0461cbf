// CPython 3.13's reference tracer (PyRefTracer_SetTracer): every new object
// (PyRefTracer_CREATE, from _Py_NewReference, free-list reuse included) and
// every destroyed one (PyRefTracer_DESTROY, from _Py_Dealloc). One tracer
// serves two uses, each switched on by the session that needs it, and chains
// to the tracer it found (another tool's):
//
// - Restamping (the tracemalloc door): objects reused from a free list never
//   reach the allocator, so their block keeps the stack of its first
//   allocation; the tracer files the block under the stack that made the
//   object, as the stdlib's tracemalloc does. 3.9-3.12 have no such event:
//   only their own tracemalloc is told (_Py_NewReference calls
//   _PyTraceMalloc_NewReference directly).
// - Object lifetimes (a Tracker with track_object_lifetimes): each object
//   made while the capture runs is written with its stacks and remembered
//   until it is destroyed (also written); those still alive at the end are
//   the Tracker's surviving objects. CPython 3.13.0-3.13.2 do not report
//   the objects the interpreter loop's own Py_DECREF destroys (it calls
//   tp_dealloc directly: CPython gh-130382, fixed in 3.13.3), so an object
//   is also forgotten when the object allocator frees its memory
//   (forget_freed_block, from the object domain's PEP 445 hook) or when a
//   new object is made at its address, and one found dead at the end
//   (reference count 0: on a free list) is not returned.
#pragma once

#include <Python.h>

#include <vector>

namespace heapscope::reftrace {

// Whether this Python reports new objects to a tracer (3.13+).
bool available();

enum Use : unsigned { kRestamp = 1, kObjectLifetimes = 2 };

// Installs the tracer for `uses` (kRestamp, kObjectLifetimes or both),
// keeping the one in place to call it too. Requires the GIL; no-op where
// unavailable. Allocates (the lifetime set) untraced.
void install(unsigned uses);
// Puts back the tracer found by install(), if heapscope's is still the one
// in place (another tool may have replaced it since), and forgets every
// object it tracked. Requires the GIL.
void uninstall();

// kObjectLifetimes: the object allocator frees (or moves, for realloc) the
// block at `block`: a remembered object that lived in it is destroyed, and
// written so when `may_record` (the caller holds a HookGuard that entered).
// GIL held (object domain). Cheap when nothing is remembered.
void forget_freed_block(uintptr_t block, bool may_record);

// kObjectLifetimes: appends to `*out` the objects made since install() and
// not destroyed, each with a new reference the caller owns, and forgets
// them. Call with the GIL held before uninstall(): while the tracer is in
// place and the GIL held, none of them can be destroyed unseen.
void take_surviving(std::vector<PyObject*>* out);

}  // namespace heapscope::reftrace
