// Blocks in numbered domains reported by extensions: heapscope's own C API
// (include/heapscope/heapscope.h) and, while tracing, the calls extensions
// already make to the stdlib's PyTraceMalloc_Track/Untrack, redirected here by
// patching the callers' GOT entries.
#pragma once

#include <cstddef>
#include <cstdint>

#include "hooks/elf_patcher.h"

namespace heapscope::domains {

// Returns 0, or -2 if not tracing. Any thread, GIL or not; never calls Python.
int track(unsigned int domain, uintptr_t address, size_t size);
int untrack(unsigned int domain, uintptr_t address);

// The GOT hooks that redirect extensions' PyTraceMalloc_Track/Untrack calls
// here (got_hooks.cpp installs them with the others). Writes 2 entries.
size_t stdlib_symbol_hooks(elf::SymbolHook* out);

// Makes heapscope's exported C API visible to dlsym(RTLD_DEFAULT, ...).
void export_c_api();

}  // namespace heapscope::domains
