// Allocation histories over time, as memray's temporal reports have them
// (FileReader.get_temporal_allocation_records and
// get_temporal_high_water_mark_allocation_records): time is counted in
// snapshots, the capture's memory records (every `stride`-th of them, as
// FileReader(max_memory_records) keeps them). Snapshot k is taken at the
// k-th record kept; "before snapshot k" means made before it was taken.
//
// - Lifetimes (memray's AllocationLifetimeAggregator): per location, the
//   blocks made before snapshot a and freed before snapshot d (not counting
//   those made and freed between the same two snapshots), and those never
//   freed (d = kNever). A mapping counts once, when its last piece goes.
// - High-water marks (memray's HighWaterMarkAggregator): the heap's highest
//   point in each interval between snapshots (the interval's start counts;
//   the latest of equal maxima), and per location its share of each: runs of
//   equal shares [a, d), the last run ending with kNever, and index
//   snapshots + 1 standing for the end of the capture (what is leaked). Each
//   piece of a mapping counts as a block, as in the peak report. The bytes
//   of the last interval are its true maximum (memray reports the last peak
//   the heap fell from, which misses a rise at the very end).
//
// One pass each, O(events) plus O(intervals) per location that changes.
// Never calls Python.
#pragma once

#include <cstdint>
#include <vector>

#include "analysis/analyses.h"
#include "model/location.h"
#include "read/capture_reader.h"

namespace heapscope::analysis {

inline constexpr uint64_t kNever = UINT64_MAX;

struct TemporalInterval {
    LocationKey key;
    uint64_t allocated_before = 0;    // snapshot index
    uint64_t deallocated_before = 0;  // snapshot index, or kNever
    uint64_t count = 0, bytes = 0;
};

struct TemporalResult {
    PassEnd end;
    // By location (LocationKey order), then allocated_before, deallocated_before, bytes.
    std::vector<TemporalInterval> intervals;
    // High-water marks only: the bytes at each interval's highest point, snapshots + 1 of them.
    std::vector<uint64_t> high_water_marks;
};

TemporalResult allocation_lifetimes(read::CaptureReader& reader, bool merge_threads, uint64_t stride,
                                    const read::Progress& progress);
TemporalResult temporal_high_water_marks(read::CaptureReader& reader, bool merge_threads, uint64_t stride,
                                         const read::Progress& progress);

}  // namespace heapscope::analysis
