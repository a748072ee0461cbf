// Redirects calls that shared objects make through their GOT (PLT slots and
// GLOB_DAT entries), the way memray and heaptrack hook a running process
// without LD_PRELOAD. Only calls that cross a library boundary are seen.
//
// Patching is idempotent and remembered slot by slot, so unpatch_all() puts
// back exactly what was there. Objects loaded later are patched by calling
// patch_loaded_objects() again (the dlopen hook does).
#pragma once

#include <cstddef>
#include <cstdint>

namespace heapscope::elf {

struct SymbolHook {
    const char* name;   // the symbol as it appears in relocations
    void* replacement;  // where calls should go instead
    uintptr_t only_in;  // if not 0, patch only the object loaded at this address
};

// Installs the hooks in every loaded object except heapscope's own and the
// dynamic loader. Takes an internal lock; calls dl_iterate_phdr and mprotect.
// Returns the number of slots patched by this call.
size_t patch_loaded_objects(const SymbolHook* hooks, size_t count);
// Restores every slot this module has patched.
void unpatch_all();

}  // namespace heapscope::elf
