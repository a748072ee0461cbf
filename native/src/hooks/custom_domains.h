// Blocks in numbered domains reported by extensions: heapscope's own C API
// (include/heapscope/heapscope.h) and, while tracing, the calls extensions
// already make to the stdlib's PyTraceMalloc_Track/Untrack (and
// _PyTraceMalloc_GetTraceback, which asks for a block's traceback),
// redirected here by patching the callers' GOT entries.
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdint>

#include "hooks/elf_patcher.h"

namespace heapscope::domains {

// Returns 0, or -2 if not tracing. Any thread, GIL or not; never calls Python.
int track(unsigned int domain, uintptr_t address, size_t size);
int untrack(unsigned int domain, uintptr_t address);

// A block's traceback in the stdlib's form (a tuple of (filename, lineno)
// tuples, most recent first) as a new reference, None if heapscope has no
// trace of it, or null with an exception set. The bindings provide it (they
// build the Python objects); called with the GIL.
using TracebackLookup = PyObject* (*)(unsigned int domain, uintptr_t address);
void set_traceback_lookup(TracebackLookup lookup);

// The GOT hooks that redirect extensions' PyTraceMalloc_Track/Untrack and
// _PyTraceMalloc_GetTraceback calls here (got_hooks.cpp installs them with
// the others). Writes 3 entries.
size_t stdlib_symbol_hooks(elf::SymbolHook* out);

// Makes heapscope's exported C API visible to dlsym(RTLD_DEFAULT, ...).
void export_c_api();

}  // namespace heapscope::domains
