// Which allocators serve CPython's three domains (PEP 445).
#pragma once

#include <cstddef>

namespace heapscope::python {

// The largest request pymalloc serves from its own pools (its
// SMALL_REQUEST_THRESHOLD, 3.9-3.13); larger ones go on to the raw domain.
inline constexpr size_t kPymallocLargest = 512;

// True when the three domains hold CPython's default allocators, pymalloc
// behind mem and object, with no hook on any (another tool's, or the debug
// hooks): then a mem or object request of at most kPymallocLargest bytes
// calls no other domain and no malloc; a new arena for it comes from the
// arena allocator (PyObject_SetArenaAllocator). CPython's own answer
// (_PyMem_GetCurrentAllocatorName). Requires the GIL.
bool allocators_are_pymalloc();

// CPython's name for the allocators of the three domains: "pymalloc",
// "pymalloc_debug", "malloc", "malloc_debug", "mimalloc"...; null once any
// domain is hooked (by heapscope or another tool). Requires the GIL.
const char* current_allocator_name();

}  // namespace heapscope::python
