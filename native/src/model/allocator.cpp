#include "model/allocator.h"

namespace heapscope {

const char* allocator_name(Allocator allocator) {
    // Indexed by the enum's value; memray's AllocatorType names.
    static constexpr const char* kNames[kMaxAllocator + 1] = {
        "UNKNOWN",        "MALLOC",          "FREE",    "CALLOC",  "REALLOC",         "POSIX_MEMALIGN",
        "ALIGNED_ALLOC",  "MEMALIGN",        "VALLOC",  "PVALLOC", "MMAP",            "MUNMAP",
        "PYMALLOC_MALLOC", "PYMALLOC_CALLOC", "PYMALLOC_REALLOC", "PYMALLOC_FREE", "TRACK", "UNTRACK",
    };
    const uint8_t value = static_cast<uint8_t>(allocator);
    return value <= kMaxAllocator ? kNames[value] : "UNKNOWN";
}

}  // namespace heapscope
