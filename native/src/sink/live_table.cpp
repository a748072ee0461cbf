#include "sink/live_table.h"

#include <cstdlib>
#include <utility>

namespace heapscope {

namespace {
constexpr size_t kInitialCapacity = 64;  // small: most custom domains hold a few blocks
// Linear probing stays short below ~70% occupancy.
constexpr size_t kMaxLoadNumerator = 7;
constexpr size_t kMaxLoadDenominator = 10;
}  // namespace

LiveTable::~LiveTable() { std::free(slots_); }

LiveTable::LiveTable(LiveTable&& other) noexcept { *this = std::move(other); }

LiveTable& LiveTable::operator=(LiveTable&& other) noexcept {
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

bool LiveTable::grow() {
    size_t new_capacity = capacity_ ? capacity_ * 2 : kInitialCapacity;
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

bool LiveTable::insert(uintptr_t address, const BlockInfo& info, BlockInfo* replaced, bool* ok) {
    if (ok) *ok = true;
    if (address == 0) {
        bool existed = has_zero_;
        if (existed && replaced) *replaced = zero_info_;
        has_zero_ = true;
        zero_info_ = info;
        return existed;
    }
    if ((count_ + 1) * kMaxLoadDenominator > capacity_ * kMaxLoadNumerator) {
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

const BlockInfo* LiveTable::find(uintptr_t address) const {
    if (address == 0) return has_zero_ ? &zero_info_ : nullptr;
    if (capacity_ == 0) return nullptr;
    size_t mask = capacity_ - 1;
    for (size_t i = hash(address) & mask; slots_[i].address != 0; i = (i + 1) & mask) {
        if (slots_[i].address == address) return &slots_[i].info;
    }
    return nullptr;
}

bool LiveTable::erase(uintptr_t address, BlockInfo* removed) {
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

void LiveTable::clear() {
    std::free(slots_);
    slots_ = nullptr;
    capacity_ = 0;
    count_ = 0;
    has_zero_ = false;
}

}  // namespace heapscope
