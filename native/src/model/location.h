// LocationKey and LocationIndex: dense ids for the places blocks are
// allocated from. Used by the analyses and by the capture writer (aggregated
// format), which keep per-location counters in vectors indexed by these ids.
//
// A location is what a report groups by: thread, allocator, domain and the
// Python and native stack nodes. The analyses keep their counters in vectors
// indexed by these ids (HighWaterMark, per-location totals), so the replay
// loop pays one hash lookup per allocation and nothing per free (a live block
// remembers its location id).
//
// Open addressing over a flat array of (key, id) slots, so a probe touches
// one cache line, with a one-entry memo in front: consecutive allocations
// very often come from the same place. Never calls Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/allocator.h"

namespace heapscope {

struct LocationKey {
    uint32_t thread = 0;  // 0 when threads are merged
    uint32_t python_node = 0;
    uint32_t native_node = 0;
    uint32_t domain = 0;
    Allocator allocator = Allocator::kMalloc;

    bool operator==(const LocationKey& other) const {
        return thread == other.thread && python_node == other.python_node && native_node == other.native_node &&
               domain == other.domain && allocator == other.allocator;
    }
    bool operator!=(const LocationKey& other) const { return !(*this == other); }
    // A total order, so that reports come out the same on every run.
    bool operator<(const LocationKey& other) const;
};

// One row of a location report: blocks and bytes at one location.
struct LocationTotal {
    LocationKey key;
    uint64_t count = 0;
    uint64_t bytes = 0;
};

class LocationIndex {
  public:
    static constexpr uint32_t kNone = UINT32_MAX;

    // The id of `key`, made if new. Ids are dense from 0, in first-seen order.
    uint32_t intern(const LocationKey& key) {
        if (last_id_ != kNone && key == last_key_) return last_id_;
        last_id_ = intern_slow(key, nullptr);
        last_key_ = key;
        return last_id_;
    }
    // The same, telling whether the id is new.
    uint32_t intern(const LocationKey& key, bool* created) {
        *created = false;
        if (last_id_ != kNone && key == last_key_) return last_id_;
        last_id_ = intern_slow(key, created);
        last_key_ = key;
        return last_id_;
    }
    // The id of `key`, or kNone.
    uint32_t find(const LocationKey& key) const;

    const LocationKey& key(uint32_t id) const { return keys_[id]; }
    size_t size() const { return keys_.size(); }

  private:
    static uint64_t hash(const LocationKey& key);
    uint32_t intern_slow(const LocationKey& key, bool* created);
    void grow();

    struct Slot {
        LocationKey key;
        uint32_t id_plus_one = 0;  // 0 marks an empty slot
    };
    std::vector<LocationKey> keys_;  // by id
    std::vector<Slot> slots_;        // size: a power of two, or 0
    uint32_t last_id_ = kNone;
    LocationKey last_key_{};
};

// A report's rows as the front doors want them: rows without a block
// dropped, threads merged if asked (thread 0, equal keys summed), largest
// bytes first, ties broken by key so every run prints the same.
std::vector<LocationTotal> finish_rows(std::vector<LocationTotal> rows, bool merge_threads);

}  // namespace heapscope
