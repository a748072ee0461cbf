// Every hook heapscope places in other objects' GOTs, installed and removed
// as one set: the custom-domain redirects (PyTraceMalloc_Track/Untrack),
// the native allocator functions (malloc ... munmap) when a capture asks for
// them, and dlopen/dlclose so that objects loaded later get the same hooks.
#pragma once

namespace heapscope::got {

// Patches every loaded object but heapscope's own and the dynamic loader.
// Without `allocators`, extensions' PyTraceMalloc_Track/Untrack calls are
// redirected to heapscope (the tracemalloc door sees NumPy's arrays that
// way); with them, the same memory is seen at its malloc instead. With `allocators`, malloc, calloc, realloc, free, posix_memalign,
// aligned_alloc, memalign, valloc, pvalloc, mmap, mmap64 and munmap calls
// are recorded (domain 0, with the calling thread's Python stack), and
// dlopen/dlclose are hooked everywhere; without, dlopen is hooked in
// libpython only (where imports load extensions). Requires the GIL.
void install(bool allocators);
// Restores every patched slot. Requires the GIL.
void uninstall();

}  // namespace heapscope::got
