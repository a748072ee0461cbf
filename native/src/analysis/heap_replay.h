// HeapReplay: the traced heap rebuilt from a capture's events, one at a time.
//
// Live blocks are kept per domain in LiveTables (address -> size and location
// id), as the engine keeps them: the same address may be live in two domains
// at once (NumPy reports its malloc'd buffers again in its own domain).
// Mappings (mmap) are kept as address ranges, because munmap may release part
// of one or span several. Per-location counters and the high-water mark come
// from HighWaterMark.
//
// O(1) per malloc-family event, O(log m) per mmap/munmap (m: live mappings).
// Never calls Python.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "analysis/high_water_mark.h"
#include "analysis/location_index.h"
#include "format/records.h"
#include "sink/live_table.h"

namespace heapscope::analysis {

class HeapReplay {
  public:
    HeapReplay() = default;
    HeapReplay(const HeapReplay&) = delete;
    HeapReplay& operator=(const HeapReplay&) = delete;

    // Applies an allocation; returns its location id. An allocation at an
    // address already live in its domain replaces that block (its free was
    // not seen).
    uint32_t allocate(const format::AllocationRecord& r) {
        const uint32_t location = locations_.intern(
            LocationKey{r.thread, r.python_node, r.native_node, r.domain, r.allocator});
        if (r.allocator == Allocator::kMmap) {
            if (r.size == 0) return location;  // a failed call: nothing mapped
            map(r.address, r.size, location);
        } else {
            // The block's count (1 unless sampled) rides in total_depth,
            // which a replay has no other use for.
            BlockInfo replaced;
            if (table(r.domain).insert(r.address, BlockInfo{r.size, location, r.count}, &replaced)) {
                counters_.remove(replaced.stack, replaced.size, replaced.total_depth);
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
        LiveTable* blocks = r.domain == 0 ? &default_domain_ : find_table(r.domain);
        BlockInfo removed;
        if (blocks != nullptr && blocks->erase(r.address, &removed)) {
            counters_.remove(removed.stack, removed.size, removed.total_depth);
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

    // Visits every live block: visit(domain, address, size, location).
    template <typename Visit>
    void for_each_block(Visit&& visit) const {
        default_domain_.for_each([&](uintptr_t address, const BlockInfo& info) {
            visit(uint32_t{0}, uint64_t{address}, info.size, info.stack);
        });
        for (const auto& [domain, blocks] : other_domains_) {
            blocks->for_each([&](uintptr_t address, const BlockInfo& info) {
                visit(domain, uint64_t{address}, info.size, info.stack);
            });
        }
        for (const auto& [address, mapping] : mappings_) visit(uint32_t{0}, address, mapping.length, mapping.location);
    }
    size_t live_blocks() const;

  private:
    struct Mapping {
        uint64_t length;
        uint32_t location;
        uint64_t group;  // the mmap call it came from: its pieces count as one block
    };

    LiveTable& table(uint32_t domain) {
        if (domain == 0) return default_domain_;
        auto& blocks = other_domains_[domain];
        if (!blocks) blocks = std::make_unique<LiveTable>();
        return *blocks;
    }
    LiveTable* find_table(uint32_t domain) {
        auto found = other_domains_.find(domain);
        return found == other_domains_.end() ? nullptr : found->second.get();
    }
    void map(uint64_t address, uint64_t length, uint32_t location);
    void unmap(uint64_t address, uint64_t length);
    // Drops a whole piece of a mapping: the block goes with its last piece.
    void drop_piece(const Mapping& piece);

    LocationIndex locations_;
    HighWaterMark counters_;
    LiveTable default_domain_;  // Python's and the native allocators: nearly every event
    std::unordered_map<uint32_t, std::unique_ptr<LiveTable>> other_domains_;
    std::map<uint64_t, Mapping> mappings_;                // by start address
    std::unordered_map<uint64_t, uint32_t> group_pieces_;  // pieces left, for split mappings only
    uint64_t next_group_ = 0;
};

}  // namespace heapscope::analysis
