// Allocator: what made or released a block. One numbering for the whole
// project: the engine, the capture format (the values are stored in files:
// never renumber them), the reader and Python's heapscope.AllocatorType,
// which the binding builds from allocator_name() for every value.
#pragma once

#include <cstdint>

namespace heapscope {

enum class Allocator : uint8_t {
    kMalloc = 1,
    kFree = 2,
    kCalloc = 3,
    kRealloc = 4,
    kPosixMemalign = 5,
    kAlignedAlloc = 6,
    kMemalign = 7,
    kValloc = 8,
    kPvalloc = 9,
    kMmap = 10,
    kMunmap = 11,
    kPymallocMalloc = 12,
    kPymallocCalloc = 13,
    kPymallocRealloc = 14,
    kPymallocFree = 15,
    kTrack = 16,    // a block reported through a custom domain (C API, PyTraceMalloc_Track)
    kUntrack = 17,
};
inline constexpr uint8_t kMaxAllocator = 17;

// memray's AllocatorType names: "MALLOC", "PYMALLOC_FREE", ...; "UNKNOWN" for
// a value out of range.
const char* allocator_name(Allocator allocator);
// True for the kinds that release a block.
inline bool is_deallocator(Allocator a) {
    return a == Allocator::kFree || a == Allocator::kMunmap || a == Allocator::kPymallocFree || a == Allocator::kUntrack;
}

}  // namespace heapscope
