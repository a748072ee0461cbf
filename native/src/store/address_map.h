// AddressMap: address -> Value, for the outstanding blocks of one domain
// (LiveTable, the engine's) and for the blocks a reader replays.
//
// Open addressing with linear probing and backward-shift deletion (no
// tombstones), because the hot path is one insert per allocation and one erase
// per free, and probing a flat array beats chasing per-entry nodes (the
// stdlib's table allocates a node for every trace). An entry is 8 bytes and the value (24 for a LiveTable).
//
// Not thread-safe: the engine serialises access. Never calls into Python; its
// own memory comes from calloc/free, which the PEP 445 hooks do not see.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <utility>

#include "model/block.h"

namespace heapscope {

template <typename Value>
class AddressMap {
  public:
    AddressMap() = default;
    ~AddressMap();
    AddressMap(const AddressMap&) = delete;
    AddressMap& operator=(const AddressMap&) = delete;
    AddressMap(AddressMap&& other) noexcept;
    AddressMap& operator=(AddressMap&& other) noexcept;

    // Adds or replaces the block at `address`. Returns true and fills
    // `*replaced` when a block was already recorded there. Returns false on
    // allocation failure of the table itself only if `ok` is given.
    bool insert(uintptr_t address, const Value& info, Value* replaced, bool* ok = nullptr);
    // Removes the block at `address`; returns false if it was not recorded.
    bool erase(uintptr_t address, Value* removed);
    const Value* find(uintptr_t address) const;
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
        Value info;
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
    Value zero_info_{};
};



namespace address_map_detail {
inline constexpr size_t kInitialCapacity = 64;  // small: most custom domains hold a few blocks
// Linear probing stays short below ~70% occupancy.
inline constexpr size_t kMaxLoadNumerator = 7;
inline constexpr size_t kMaxLoadDenominator = 10;
}  // namespace address_map_detail

template <typename Value>
AddressMap<Value>::~AddressMap() { std::free(slots_); }

template <typename Value>
AddressMap<Value>::AddressMap(AddressMap&& other) noexcept { *this = std::move(other); }

template <typename Value>
AddressMap<Value>& AddressMap<Value>::operator=(AddressMap&& other) noexcept {
    if (this != &other) {
        std::free(slots_);
        slots_ = std::exchange(other.slots_, nullptr);
        capacity_ = std::exchange(other.capacity_, 0);
        count_ = std::exchange(other.count_, 0);
        has_zero_ = std::exchange(other.has_zero_, false);
        zero_info_ = other.zero_info_;
    }
    return *this;
}

template <typename Value>
bool AddressMap<Value>::grow() {
    size_t new_capacity = capacity_ ? capacity_ * 2 : address_map_detail::kInitialCapacity;
    auto* fresh = static_cast<Slot*>(std::calloc(new_capacity, sizeof(Slot)));
    if (!fresh) return false;
    size_t mask = new_capacity - 1;
    for (size_t i = 0; i < capacity_; ++i) {
        if (slots_[i].address == 0) continue;
        size_t j = hash(slots_[i].address) & mask;
        while (fresh[j].address != 0) j = (j + 1) & mask;
        fresh[j] = slots_[i];
    }
    std::free(slots_);
    slots_ = fresh;
    capacity_ = new_capacity;
    return true;
}

template <typename Value>
bool AddressMap<Value>::insert(uintptr_t address, const Value& info, Value* replaced, bool* ok) {
    if (ok) *ok = true;
    if (address == 0) {
        bool existed = has_zero_;
        if (existed && replaced) *replaced = zero_info_;
        has_zero_ = true;
        zero_info_ = info;
        return existed;
    }
    if ((count_ + 1) * address_map_detail::kMaxLoadDenominator > capacity_ * address_map_detail::kMaxLoadNumerator) {
        if (!grow()) {
            if (ok) *ok = false;
            return false;
        }
    }
    size_t mask = capacity_ - 1;
    size_t i = hash(address) & mask;
    while (slots_[i].address != 0) {
        if (slots_[i].address == address) {
            if (replaced) *replaced = slots_[i].info;
            slots_[i].info = info;
            return true;
        }
        i = (i + 1) & mask;
    }
    slots_[i].address = address;
    slots_[i].info = info;
    ++count_;
    return false;
}

template <typename Value>
const Value* AddressMap<Value>::find(uintptr_t address) const {
    if (address == 0) return has_zero_ ? &zero_info_ : nullptr;
    if (capacity_ == 0) return nullptr;
    size_t mask = capacity_ - 1;
    for (size_t i = hash(address) & mask; slots_[i].address != 0; i = (i + 1) & mask) {
        if (slots_[i].address == address) return &slots_[i].info;
    }
    return nullptr;
}

template <typename Value>
bool AddressMap<Value>::erase(uintptr_t address, Value* removed) {
    if (address == 0) {
        if (!has_zero_) return false;
        if (removed) *removed = zero_info_;
        has_zero_ = false;
        return true;
    }
    if (capacity_ == 0) return false;
    size_t mask = capacity_ - 1;
    size_t i = hash(address) & mask;
    while (slots_[i].address != address) {
        if (slots_[i].address == 0) return false;
        i = (i + 1) & mask;
    }
    if (removed) *removed = slots_[i].info;
    // Backward-shift: pull later members of the probe run into the hole so
    // that lookups never need tombstones.
    size_t hole = i;
    for (size_t j = (i + 1) & mask; slots_[j].address != 0; j = (j + 1) & mask) {
        size_t home = hash(slots_[j].address) & mask;
        // Move j into the hole unless its home lies cyclically in (hole, j].
        bool home_between = (hole <= j) ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!home_between) {
            slots_[hole] = slots_[j];
            hole = j;
        }
    }
    slots_[hole].address = 0;
    --count_;
    return true;
}

template <typename Value>
void AddressMap<Value>::clear() {
    std::free(slots_);
    slots_ = nullptr;
    capacity_ = 0;
    count_ = 0;
    has_zero_ = false;
}


// The engine's table of one domain's blocks.
using LiveTable = AddressMap<BlockInfo>;

}  // namespace heapscope
