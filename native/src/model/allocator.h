// Allocator: what made or released a block. One numbering for the engine,
// the capture format (the values are stored in files: never renumber them)
// and the reader. Python's heapscope.AllocatorType has memray's values
// instead; kAllocatorTable below is the one place that pairs the two.
#pragma once

#include <cstdint>
#include <span>

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

// One allocator as each side numbers and names it.
struct AllocatorInfo {
    Allocator allocator;   // the value stored in capture files
    const char* name;      // memray's AllocatorType name ("MALLOC", "PYMALLOC_FREE", ...)
    uint8_t public_value;  // memray's AllocatorType value; heapscope's own after memray's 15
    bool deallocator;      // it releases a block
};

// Every allocator once, in file-value order: entry v - 1 is value v.
std::span<const AllocatorInfo> allocator_table();
// The entry of `allocator`, or null for a value out of range.
const AllocatorInfo* allocator_info(Allocator allocator);
// The name, or "UNKNOWN" for a value out of range.
const char* allocator_name(Allocator allocator);
// memray's value, or 0 for a value out of range.
uint8_t public_allocator_value(Allocator allocator);
bool is_deallocator(Allocator allocator);

}  // namespace heapscope
