// HeapReplay: the traced heap rebuilt from a capture's events, one at a time.
//
// Live blocks are kept per domain in AddressMaps (address -> size, location
// id and count), as the engine keeps them: the same address may be live in two domains
// at once (NumPy reports its malloc'd buffers again in its own domain).
// Mappings (mmap) are kept as address ranges in a MappingIndex, as the engine
// keeps them, because munmap may release part of one or span several; each
// piece counts as a block. Per-location counters and the high-water mark
// come from HighWaterMark.
//
// O(1) per malloc-family event, O(log m) per mmap/munmap (m: live mappings).
// Never calls Python.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/high_water_mark.h"
#include "model/location.h"
#include "format/records.h"
#include "store/address_map.h"
#include "store/mapping_index.h"

namespace heapscope::analysis {

class HeapReplay {
    // A live block as the replay keeps it.
    struct ReplayedBlock {
        uint64_t size = 0;
        uint32_t location = 0;
        uint32_t count = 0;  // the blocks it stands for: 1 unless sampled
    };
    using Blocks = AddressMap<ReplayedBlock>;


  public:
    HeapReplay() = default;
    HeapReplay(const HeapReplay&) = delete;
    HeapReplay& operator=(const HeapReplay&) = delete;

    // Applies an allocation; returns its location id. An allocation at an
    // address already live in its domain replaces that block (its free was
    // not seen).
    uint32_t allocate(const format::AllocationRecord& r) {
        const uint32_t location = locations_.intern(
            LocationKey{.thread = r.thread, .python_node = r.python_node, .native_node = r.native_node,
                        .domain = r.domain, .allocator = r.allocator});
        if (r.allocator == Allocator::kMmap) {
            if (r.size == 0) return location;  // a failed call: nothing mapped
            map(r.address, r.size, location);
        } else {
            ReplayedBlock replaced;
            if (table(r.domain).insert(r.address, ReplayedBlock{r.size, location, r.count}, &replaced)) {
                counters_.remove(replaced.location, replaced.size, replaced.count);
            }
        }
        counters_.add(location, r.size, r.count);
        return location;
    }
    // Applies a deallocation. A free of an address not live is ignored (the
    // block was made before the capture started).
    void deallocate(const format::DeallocationRecord& r) {
        if (r.allocator == Allocator::kMunmap) {
            unmap(r.address, r.size);
            return;
        }
        Blocks* blocks = r.domain == 0 ? &default_domain_ : find_table(r.domain);
        ReplayedBlock removed;
        if (blocks != nullptr && blocks->erase(r.address, &removed)) {
            counters_.remove(removed.location, removed.size, removed.count);
        }
    }

    const LocationIndex& locations() const { return locations_; }
    const HighWaterMark& counters() const { return counters_; }
    uint64_t heap() const { return counters_.heap(); }
    uint64_t peak_heap() const { return counters_.peak_heap(); }

    // Per location (threads apart): outstanding now, at the high-water mark,
    // and ever allocated.
    std::vector<LocationTotal> current_rows() const;
    std::vector<LocationTotal> peak_rows() const;
    std::vector<LocationTotal> total_rows() const;

    // Visits every live block: visit(domain, address, size, location, count),
    // count being the blocks it stands for (1 unless sampled).
    template <typename Visit>
    void for_each_block(Visit&& visit) const {
        default_domain_.for_each([&](uintptr_t address, const ReplayedBlock& block) {
            visit(uint32_t{0}, uint64_t{address}, block.size, block.location, block.count);
        });
        for (const auto& [domain, blocks] : other_domains_) {
            blocks->for_each([&](uintptr_t address, const ReplayedBlock& block) {
                visit(domain, uint64_t{address}, block.size, block.location, block.count);
            });
        }
        mappings_.for_each([&](uint64_t address, uint64_t length, uint32_t location) {
            visit(uint32_t{0}, address, length, location, uint32_t{1});
        });
    }
    size_t live_blocks() const;

  private:
    Blocks& table(uint32_t domain) {
        if (domain == 0) return default_domain_;
        auto& blocks = other_domains_[domain];
        if (!blocks) blocks = std::make_unique<Blocks>();
        return *blocks;
    }
    Blocks* find_table(uint32_t domain) {
        auto found = other_domains_.find(domain);
        return found == other_domains_.end() ? nullptr : found->second.get();
    }
    void map(uint64_t address, uint64_t length, uint32_t location);
    void unmap(uint64_t address, uint64_t length);
    // What the counters do with each piece a munmap touches.
    auto release_pieces() {
        return [this](uint64_t, uint64_t bytes, Unmapped how, uint32_t location) { counters_.unmap(location, bytes, how); };
    }

    LocationIndex locations_;
    HighWaterMark counters_;
    Blocks default_domain_;  // Python's and the native allocators: nearly every event
    std::unordered_map<uint32_t, std::unique_ptr<Blocks>> other_domains_;
    MappingIndex<uint32_t> mappings_;  // each piece's location
};

}  // namespace heapscope::analysis
