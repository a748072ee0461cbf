#include "store/pool_index.h"

#include <cstdlib>
#include <cstring>
#include <utility>

namespace heapscope {

namespace {
constexpr uintptr_t kRegionBytes = uintptr_t{1} << PoolIndex::kRegionShift;
constexpr size_t kInitialDirectory = 64;

size_t directory_hash(uintptr_t key) {
    uint64_t x = static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ull;
    return static_cast<size_t>(x ^ (x >> 32));
}

// pymalloc's size class for a request: 16-byte steps, at least one step.
uint16_t block_size_for(uint64_t size) { return static_cast<uint16_t>(size <= 16 ? 16 : (size + 15) & ~uint64_t{15}); }
}  // namespace

PoolIndex::Region PoolIndex::kVacant = {0, 0, 0, 0, 0, {}};

PoolIndex::~PoolIndex() { clear(); }

void PoolIndex::free_region(Region* region) {
    if (region == &kVacant) return;
    memory_ -= sizeof(Region) + (region->allocated_slots - 1) * sizeof(Slot);
    std::free(region);
}

void PoolIndex::sweep_empty_regions() {
    for (size_t i = 0; i < directory_capacity_; ++i) {
        Region* region = directory_[i].region;
        if (!region || region == &kVacant || region->live != 0 || region == last_region_) continue;
        free_region(region);
        directory_[i].region = &kVacant;
    }
    empty_regions_ = 0;
}

void PoolIndex::swap(PoolIndex& other) noexcept {
    std::swap(directory_, other.directory_);
    std::swap(directory_capacity_, other.directory_capacity_);
    std::swap(directory_count_, other.directory_count_);
    std::swap(live_, other.live_);
    std::swap(memory_, other.memory_);
    std::swap(empty_regions_, other.empty_regions_);
    std::swap(last_key_, other.last_key_);
    std::swap(last_region_, other.last_region_);
}

void PoolIndex::clear() {
    for (size_t i = 0; i < directory_capacity_; ++i) {
        if (directory_[i].region != &kVacant) std::free(directory_[i].region);
    }
    std::free(directory_);
    directory_ = nullptr;
    directory_capacity_ = directory_count_ = live_ = memory_ = empty_regions_ = 0;
    last_key_ = 0;
    last_region_ = nullptr;
}

PoolIndex::Region* PoolIndex::lookup(uintptr_t key) const {
    if (last_region_ && key == last_key_) return last_region_;
    if (directory_capacity_ == 0) return nullptr;
    size_t mask = directory_capacity_ - 1;
    for (size_t i = directory_hash(key) & mask; directory_[i].region; i = (i + 1) & mask) {
        if (directory_[i].key == key) {
            last_key_ = key;
            last_region_ = directory_[i].region;
            return last_region_;
        }
    }
    return nullptr;
}

bool PoolIndex::grow_directory() {
    size_t capacity = directory_capacity_ ? directory_capacity_ * 2 : kInitialDirectory;
    auto* fresh = static_cast<DirectoryEntry*>(std::calloc(capacity, sizeof(DirectoryEntry)));
    if (!fresh) return false;
    for (size_t i = 0; i < directory_capacity_; ++i) {
        if (!directory_[i].region) continue;
        size_t j = directory_hash(directory_[i].key) & (capacity - 1);
        while (fresh[j].region) j = (j + 1) & (capacity - 1);
        fresh[j] = directory_[i];
    }
    memory_ += (capacity - directory_capacity_) * sizeof(DirectoryEntry);
    std::free(directory_);
    directory_ = fresh;
    directory_capacity_ = capacity;
    return true;
}

// A region record for `block_size`, reusing `reuse`'s memory when it is big
// enough. Returns null if memory ran out (then `reuse` is untouched).
PoolIndex::Region* PoolIndex::new_region(uint16_t block_size, uint16_t phase, Region* reuse) {
    // Rounded up: every offset in the region has a slot, whatever the class
    // (blocks that are not pymalloc's can sit anywhere, e.g. under
    // PYTHONMALLOC=malloc or after a realloc shrank a large block).
    auto slots = static_cast<uint32_t>((kRegionBytes + block_size - 1) / block_size);
    if (reuse == &kVacant) reuse = nullptr;
    Region* region = reuse;
    if (!region || region->allocated_slots < slots) {
        size_t bytes = sizeof(Region) + (slots - 1) * sizeof(Slot);
        region = static_cast<Region*>(std::calloc(1, bytes));
        if (!region) return nullptr;
        region->allocated_slots = slots;
        memory_ += bytes;
        if (reuse) free_region(reuse);
    } else {
        std::memset(region->slots, 0, region->allocated_slots * sizeof(Slot));
    }
    region->block_size = block_size;
    region->phase = phase;
    region->live = 0;
    region->slot_count = slots;
    return region;
}

PoolIndex::Region* PoolIndex::lookup_or_create(uintptr_t key, uint16_t block_size, uint16_t phase) {
    if (Region* found = lookup(key)) return found;
    if ((directory_count_ + 1) * 2 > directory_capacity_ && !grow_directory()) return nullptr;
    Region* region = new_region(block_size, phase, nullptr);
    if (!region) return nullptr;
    size_t mask = directory_capacity_ - 1;
    size_t i = directory_hash(key) & mask;
    while (directory_[i].region) i = (i + 1) & mask;
    directory_[i] = DirectoryEntry{key, region};
    ++directory_count_;
    last_key_ = key;
    last_region_ = region;
    return region;
}

PoolIndex::Insert PoolIndex::insert(uintptr_t address, const BlockInfo& info, BlockInfo* replaced) {
    if (info.size > kMaxBlockSize) return Insert::kRefused;
    uint16_t block_size = block_size_for(info.size);
    auto offset = static_cast<uint16_t>(address & (kRegionBytes - 1));
    auto phase = static_cast<uint16_t>(offset % block_size);
    uintptr_t key = address >> kRegionShift;
    Region* region = lookup_or_create(key, block_size, phase);
    if (!region) return Insert::kRefused;
    if (region->block_size != block_size || region->phase != phase) {
        // pymalloc recycles an empty pool for another size class (or the
        // record was swept while the pool was empty).
        if (region->live != 0) return Insert::kRefused;
        Region* renewed = new_region(block_size, phase, region);
        if (!renewed) return Insert::kRefused;
        if (renewed != region) {
            size_t mask = directory_capacity_ - 1;
            size_t i = directory_hash(key) & mask;
            while (directory_[i].key != key || !directory_[i].region) i = (i + 1) & mask;
            directory_[i].region = renewed;
            last_region_ = renewed;
        }
        region = renewed;
    }
    uint32_t index = offset / block_size;
    if (index >= region->slot_count) return Insert::kRefused;  // cannot happen with rounded-up slots
    Slot& slot = region->slots[index];
    Slot fresh{info.stack, static_cast<uint16_t>(info.size + 1),
               static_cast<uint16_t>(info.total_depth < kMaxTotalDepth ? info.total_depth : kMaxTotalDepth)};
    if (slot.size_plus_one) {
        if (replaced) *replaced = decode(slot);
        slot = fresh;
        return Insert::kReplaced;
    }
    slot = fresh;
    if (region->live++ == 0 && empty_regions_ > 0) --empty_regions_;
    ++live_;
    return Insert::kStored;
}

PoolIndex::Slot* PoolIndex::occupied_slot(uintptr_t address, Region** region_out) const {
    Region* region = lookup(address >> kRegionShift);
    if (!region || region->live == 0) return nullptr;
    auto offset = static_cast<uint16_t>(address & (kRegionBytes - 1));
    if (offset % region->block_size != region->phase) return nullptr;
    uint32_t index = offset / region->block_size;
    if (index >= region->slot_count) return nullptr;
    Slot* slot = &region->slots[index];
    if (!slot->size_plus_one) return nullptr;
    if (region_out) *region_out = region;
    return slot;
}

bool PoolIndex::erase(uintptr_t address, BlockInfo* removed) {
    Region* region = nullptr;
    Slot* slot = occupied_slot(address, &region);
    if (!slot) return false;
    if (removed) *removed = decode(*slot);
    slot->size_plus_one = 0;
    --live_;
    if (--region->live == 0 && ++empty_regions_ > 64 && empty_regions_ * 4 > directory_count_) {
        sweep_empty_regions();
    }
    return true;
}

bool PoolIndex::find(uintptr_t address, BlockInfo* out) const {
    const Slot* slot = occupied_slot(address, nullptr);
    if (!slot) return false;
    *out = decode(*slot);
    return true;
}

}  // namespace heapscope
