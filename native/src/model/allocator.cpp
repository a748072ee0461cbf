#include "model/allocator.h"

#include <cstddef>
#include <iterator>

namespace heapscope {

namespace {

constexpr AllocatorInfo kAllocatorTable[] = {
    {Allocator::kMalloc, "MALLOC", 6, false},
    {Allocator::kFree, "FREE", 5, true},
    {Allocator::kCalloc, "CALLOC", 8, false},
    {Allocator::kRealloc, "REALLOC", 7, false},
    {Allocator::kPosixMemalign, "POSIX_MEMALIGN", 9, false},
    {Allocator::kAlignedAlloc, "ALIGNED_ALLOC", 10, false},
    {Allocator::kMemalign, "MEMALIGN", 11, false},
    {Allocator::kValloc, "VALLOC", 12, false},
    {Allocator::kPvalloc, "PVALLOC", 13, false},
    {Allocator::kMmap, "MMAP", 14, false},
    {Allocator::kMunmap, "MUNMAP", 15, true},
    {Allocator::kPymallocMalloc, "PYMALLOC_MALLOC", 2, false},
    {Allocator::kPymallocCalloc, "PYMALLOC_CALLOC", 3, false},
    {Allocator::kPymallocRealloc, "PYMALLOC_REALLOC", 4, false},
    {Allocator::kPymallocFree, "PYMALLOC_FREE", 1, true},
    {Allocator::kTrack, "TRACK", 16, false},
    {Allocator::kUntrack, "UNTRACK", 17, true},
};

// The lookups index the table by file value.
constexpr bool in_file_value_order() {
    for (size_t i = 0; i < std::size(kAllocatorTable); ++i) {
        if (static_cast<size_t>(kAllocatorTable[i].allocator) != i + 1) return false;
    }
    return std::size(kAllocatorTable) == kMaxAllocator;
}
static_assert(in_file_value_order(), "kAllocatorTable: one entry per Allocator, in value order");

}  // namespace

std::span<const AllocatorInfo> allocator_table() { return kAllocatorTable; }

const AllocatorInfo* allocator_info(Allocator allocator) {
    const uint8_t value = static_cast<uint8_t>(allocator);
    return value >= 1 && value <= kMaxAllocator ? &kAllocatorTable[value - 1] : nullptr;
}

const char* allocator_name(Allocator allocator) {
    const AllocatorInfo* info = allocator_info(allocator);
    return info ? info->name : "UNKNOWN";
}

uint8_t public_allocator_value(Allocator allocator) {
    const AllocatorInfo* info = allocator_info(allocator);
    return info ? info->public_value : 0;
}

bool is_deallocator(Allocator allocator) {
    const AllocatorInfo* info = allocator_info(allocator);
    return info && info->deallocator;
}

}  // namespace heapscope
