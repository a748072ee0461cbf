// Reading Python stacks. The only part of the engine that knows CPython's
// frame layout; each version family has its own implementation file
// (python_frames_py39.cpp for 3.9-3.10, _py311.cpp for 3.11,
// _py312.cpp for 3.12-3.13), compiled empty for the other versions.
//
// A frame is captured as a FrameKey{code object, position}, where position is
// whatever the version exposes (instruction pointer or offset); the line number
// is computed only when a report asks for it.
#pragma once

#include <Python.h>

#include <cstdint>
#include <string>

#include "stack/frame_walk.h"
#include "stack/stack_trie.h"

namespace heapscope::python {

// The thread state of the thread holding the GIL, or null. Never calls Python.
PyThreadState* gil_holder();
// The calling thread's own thread state (with or without the GIL), or null.
PyThreadState* this_thread_state();

// Copies up to `limit` frames of `tstate`'s Python stack into `out`, innermost
// first, and sets `*total_depth` to the number of frames on the whole stack
// (the stdlib's total_nframe). With `skip_incomplete`, frames whose first
// instruction has not run yet (still being set up: their cells, their
// arguments) are left out and not counted, as the stdlib's tracemalloc does
// (_PyFrame_IsIncomplete, 3.11+; 3.9 and 3.10 push a frame only once it is
// made). Never calls Python, never allocates, takes no lock: safe in an
// allocator hook, with or without the GIL for the thread's own stack.
// `chain`, the calling thread's own (see stack/frame_walk.h), makes a walk
// of a stack whose outer frames have not changed since its last walk much
// cheaper; the result is the same without it.
// `gil_held`: `tstate` is the calling thread's and it holds the GIL, which
// anchored walks need (below).
uint32_t capture_stack(PyThreadState* tstate, FrameKey* out, uint32_t limit, uint32_t* total_depth,
                       bool skip_incomplete = false, FrameChain* chain = nullptr, bool gil_held = false);

// Anchored walks (CPython 3.11+, stack/frame_walk.h): a walk of a deep stack
// reads only the frames above an anchor, a frame whose call its frame object
// identifies (cpython/anchored_frames.h). The object allocator's free hook
// must report every freed block to stack/frame_anchors.h while they are on.
// Call with the GIL, from the session's start and end. start returns false
// (and walks stay plain) before 3.11.
bool start_frame_anchors();
void stop_frame_anchors();
// The walks of the calling thread that met their anchor (for tests).
uint64_t anchored_walks();

// The address of the memory block that holds `obj` (objects may carry a GC
// header or managed-dict pointers before the PyObject). Never calls Python.
uintptr_t object_block_address(PyObject* obj);

// Whether a captured frame was entered from C: the outermost Python frame of
// one call of the interpreter loop. 3.11+ keep this in bit 0 of the position
// (instruction pointers are 2-byte aligned); on 3.9 and 3.10 every Python
// frame has its own interpreter-loop call. Never calls Python.
bool frame_is_entry(FrameKey frame);

// The code object's function name (co_qualname on 3.11+, co_name before),
// filename and first line, as UTF-8, read without calling Python or
// allocating Python objects: the code object must be kept alive by the
// caller (the engine pins it). Any thread, with or without the GIL. False if
// a name is not a str.
bool describe_code(uintptr_t code, std::string* function, std::string* filename, int* first_lineno);

// The code object of a captured frame (borrowed), or null for kUnknownFrame.
PyCodeObject* frame_code(FrameKey frame);
// The line number of a captured frame, as the stdlib reports it (0 if unknown).
// Requires the GIL; may call Python but does not allocate Python objects.
int frame_lineno(FrameKey frame);

}  // namespace heapscope::python
