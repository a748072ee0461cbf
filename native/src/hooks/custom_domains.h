// Blocks in numbered domains reported by extensions: heapscope's own C API
// (include/heapscope/heapscope.h) and, while tracing, the calls extensions
// already make to the stdlib's PyTraceMalloc_Track/Untrack, redirected here by
// patching the callers' GOT entries.
#pragma once

#include <cstddef>
#include <cstdint>

namespace heapscope::domains {

// Returns 0, or -2 if not tracing. Any thread, GIL or not; never calls Python.
int track(unsigned int domain, uintptr_t address, size_t size);
int untrack(unsigned int domain, uintptr_t address);

// Redirects PyTraceMalloc_Track/Untrack in loaded objects, and in objects
// loaded later by the interpreter's imports. Requires the GIL.
void redirect_stdlib_calls();
void restore_stdlib_calls();

// Makes heapscope's exported C API visible to dlsym(RTLD_DEFAULT, ...).
void export_c_api();

}  // namespace heapscope::domains
