// PoolIndex: small blocks from pymalloc, found by position instead of by hash.
//
// pymalloc carves 16 KiB pools into blocks of one size class (a multiple of
// 16 bytes), at a fixed phase from the pool's start. So a block is named by
// (region, index) with index = offset / class, and the blocks an allocation
// loop hands out sit next to each other in one slot array, as they do in the
// heap: inserts and erases touch a few hot cache lines instead of missing
// on a random hash slot (the LiveTable's main cost on allocation-heavy code).
//
// Nothing here relies on pymalloc's layout for correctness: a block that does
// not fit its region's class and phase is refused, and the caller keeps it
// in a LiveTable instead. A slot is 8 bytes.
//
// Not thread-safe: the engine serialises access. Never calls into Python.
#pragma once

#include <cstddef>
#include <cstdint>

#include "store/address_map.h"

namespace heapscope {

class PoolIndex {
  public:
    static constexpr unsigned kRegionShift = 14;  // 16 KiB, pymalloc's pool size
    static constexpr uint64_t kMaxBlockSize = 512;  // pymalloc's small-request limit

    PoolIndex() = default;
    ~PoolIndex();
    PoolIndex(const PoolIndex&) = delete;
    PoolIndex& operator=(const PoolIndex&) = delete;
    PoolIndex(PoolIndex&& other) noexcept { swap(other); }
    PoolIndex& operator=(PoolIndex&& other) noexcept {
        if (this != &other) {
            clear();
            swap(other);
        }
        return *this;
    }

    enum class Insert { kStored, kReplaced, kRefused };
    // Stores the block, or refuses it (too large, or not of its region's
    // class and phase while that region holds other blocks).
    Insert insert(uintptr_t address, const BlockInfo& info, BlockInfo* replaced);
    bool erase(uintptr_t address, BlockInfo* removed);
    bool find(uintptr_t address, BlockInfo* out) const;
    void clear();

    size_t size() const { return live_; }
    size_t memory_bytes() const { return memory_; }

    template <typename F>
    void for_each(F&& visit) const {
        for (size_t i = 0; i < directory_capacity_; ++i) {
            const Region* region = directory_[i].region;
            if (!region || region->live == 0) continue;  // kVacant has live == 0
            uintptr_t base = directory_[i].key << kRegionShift;
            for (uint32_t s = 0; s < region->slot_count; ++s) {
                const Slot& slot = region->slots[s];
                if (slot.size_plus_one) visit(base + uintptr_t{s} * region->block_size + region->phase, decode(slot));
            }
        }
    }

  private:
    struct Slot {
        uint32_t stack;
        uint16_t size_plus_one;  // 0: empty
        uint16_t total_depth;
    };
    struct Region {
        uint16_t block_size;
        uint16_t phase;  // offset % block_size of every block
        uint32_t live;
        uint32_t slot_count;
        uint32_t allocated_slots;
        Slot slots[1];  // slot_count of them, allocated past the struct
    };
    struct DirectoryEntry {
        uintptr_t key;  // address >> kRegionShift
        Region* region;  // kVacant after a sweep; null marks an unused entry
    };
    static Region kVacant;  // a region with no slots, standing in for freed records

    void swap(PoolIndex& other) noexcept;
    static BlockInfo decode(const Slot& slot) {
        return BlockInfo{uint64_t{slot.size_plus_one} - 1u, slot.stack, slot.total_depth};
    }
    Region* lookup(uintptr_t key) const;
    // The slot holding a block at `address`, or null; also gives its region.
    Slot* occupied_slot(uintptr_t address, Region** region) const;
    Region* lookup_or_create(uintptr_t key, uint16_t block_size, uint16_t phase);
    bool grow_directory();
    Region* new_region(uint16_t block_size, uint16_t phase, Region* reuse);
    // Frees the records of regions that hold no block (all but the last used
    // one), once there are many: a heap that shrank keeps no slot arrays for
    // pools it no longer uses, and a pool that empties and refills at once
    // is not reallocated each time.
    void sweep_empty_regions();
    void free_region(Region* region);

    DirectoryEntry* directory_ = nullptr;
    size_t directory_capacity_ = 0;  // a power of two, or 0
    size_t directory_count_ = 0;
    size_t live_ = 0;
    size_t memory_ = 0;
    size_t empty_regions_ = 0;  // regions whose last block was freed, not yet swept
    // The region of the last access: allocation loops stay in one pool.
    mutable uintptr_t last_key_ = 0;
    mutable Region* last_region_ = nullptr;
};

}  // namespace heapscope
