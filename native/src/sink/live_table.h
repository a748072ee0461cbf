// LiveTable: the outstanding blocks of one domain, keyed by address.
//
// Open addressing with linear probing and backward-shift deletion (no
// tombstones), because the hot path is one insert per allocation and one erase
// per free, and probing a flat array beats chasing per-entry nodes (the
// stdlib's table allocates a node for every trace). An entry is 24 bytes.
//
// Not thread-safe: the engine serialises access. Never calls into Python; its
// own memory comes from calloc/free, which the PEP 445 hooks do not see.
#pragma once

#include <cstddef>
#include <cstdint>

namespace heapscope {

// The largest total depth reported: the stdlib's total_nframe is 16 bits,
// and PoolIndex keeps the depth in 16 bits too.
inline constexpr uint32_t kMaxTotalDepth = 65535;

struct BlockInfo {
    uint64_t size = 0;
    uint32_t stack = 0;        // StackTrie node of the innermost stored frame
    uint32_t total_depth = 0;  // Python frames at the time, past the limit too
};

class LiveTable {
  public:
    LiveTable() = default;
    ~LiveTable();
    LiveTable(const LiveTable&) = delete;
    LiveTable& operator=(const LiveTable&) = delete;
    LiveTable(LiveTable&& other) noexcept;
    LiveTable& operator=(LiveTable&& other) noexcept;

    // Adds or replaces the block at `address`. Returns true and fills
    // `*replaced` when a block was already recorded there. Returns false on
    // allocation failure of the table itself only if `ok` is given.
    bool insert(uintptr_t address, const BlockInfo& info, BlockInfo* replaced, bool* ok = nullptr);
    // Removes the block at `address`; returns false if it was not recorded.
    bool erase(uintptr_t address, BlockInfo* removed);
    const BlockInfo* find(uintptr_t address) const;
    void clear();

    size_t size() const { return count_ + (has_zero_ ? 1 : 0); }
    size_t memory_bytes() const { return capacity_ * sizeof(Slot); }

    template <typename F>
    void for_each(F&& visit) const {
        if (has_zero_) visit(uintptr_t{0}, zero_info_);
        for (size_t i = 0; i < capacity_; ++i) {
            if (slots_[i].address != 0) visit(slots_[i].address, slots_[i].info);
        }
    }

  private:
    struct Slot {
        uintptr_t address;  // 0 marks an empty slot; address 0 lives in zero_info_
        BlockInfo info;
    };
    static size_t hash(uintptr_t address) {
        // Blocks are 16-byte aligned: drop the always-zero bits, then mix.
        uint64_t x = static_cast<uint64_t>(address >> 4) * 0x9E3779B97F4A7C15ull;
        return static_cast<size_t>(x ^ (x >> 29));
    }
    bool grow();

    Slot* slots_ = nullptr;
    size_t capacity_ = 0;  // a power of two, or 0
    size_t count_ = 0;
    bool has_zero_ = false;
    BlockInfo zero_info_{};
};

}  // namespace heapscope
