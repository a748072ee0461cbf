// The analyses of a capture, each one pass over its records.
//
// - summarize: the high-water mark by location, leaks (outstanding at the
//   end), totals, memory over time and the statistics, all in one pass; for
//   an aggregated capture, as of its last whole checkpoint.
// - temporary_allocations: blocks freed soon after they were made (memray's
//   definition, see below). Needs every event.
// - heap_at: the heap replayed up to one MemoryRecord (or, aggregated, one
//   checkpoint), for snapshot_at(t).
//
// Rows come out per location with threads apart and unsorted; finish_rows()
// (location_index.h) merges and sorts them for a report. Never calls Python.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "analysis/aggregated_state.h"
#include "read/capture_reader.h"
#include "analysis/heap_replay.h"
#include "model/location.h"

namespace heapscope::analysis {

// How a pass ended.
struct PassEnd {
    bool complete = false;   // the capture's end chunk was read: it stopped cleanly
    std::string damage;      // where reading stopped early, or empty
    bool cancelled = false;  // the progress callback asked to stop
    std::string error;       // the pass could not start (the file went away)
    bool ok() const { return !cancelled && error.empty(); }
};

// Fills `end` from a pass's cursor once it has returned its last record.
void finish_pass(const read::CaptureReader::Cursor& cursor, PassEnd* end);

inline constexpr size_t kSizeBuckets = 65;  // bucket i: sizes whose bit width is i (0, 1, 2-3, 4-7, ...)

struct CaptureSummary {
    PassEnd end;
    std::vector<LocationTotal> peak;   // outstanding at the high-water mark
    std::vector<LocationTotal> leaks;  // outstanding at the end
    std::vector<LocationTotal> totals; // ever allocated
    uint64_t total_allocations = 0;
    uint64_t total_bytes = 0;
    uint64_t deallocations = 0;        // ALL format only
    uint64_t peak_heap = 0;
    uint64_t end_heap = 0;
    std::vector<format::MemoryRecord> memory;
    std::vector<uint64_t> checkpoint_times;  // aggregated: each whole checkpoint's time, in order
    bool final_checkpoint = false;           // aggregated: the last one was written by a clean stop
    // ALL format only:
    std::array<uint64_t, kSizeBuckets> size_histogram{};
    std::array<uint64_t, kSizeBuckets> size_histogram_bytes{};  // bytes allocated in each bucket
    std::array<uint64_t, kMaxAllocator + 1> allocations_by_allocator{};
};

// One pass over the whole capture. Reads chunks ahead on a second thread
// when `prefetch`.
CaptureSummary summarize(read::CaptureReader& reader, const read::Progress& progress, bool prefetch = true);

struct SizeBucket {
    uint64_t low, high;  // inclusive
    uint64_t count;
    uint64_t bytes = 0;
};
// The histogram's buckets from the smallest to the largest size seen (empty
// buckets between them included, so it draws without gaps).
std::vector<SizeBucket> size_histogram(const CaptureSummary& summary);

struct StackTotal {
    uint32_t python_node;
    uint32_t native_node;
    uint64_t value;
};
// The `n` stacks (python node, native node: threads, allocators and domains
// merged) that allocated the most bytes or blocks, largest first.
std::vector<StackTotal> top_stacks(const std::vector<LocationTotal>& totals, size_t n, bool by_bytes);

// Temporary allocations, as memray defines them: a block is temporary if the
// thread that made it frees it before making more than `threshold` other
// allocations (threshold 0: freed before the thread's next allocation). A
// block freed by another thread is not temporary (memray looks only at the
// freeing thread's recent allocations). A munmap counts only if it releases
// the whole mapping. Rows: per location, the temporary blocks and their bytes.
struct TemporaryResult {
    PassEnd end;
    std::vector<LocationTotal> rows;
};
TemporaryResult temporary_allocations(read::CaptureReader& reader, uint64_t threshold, const read::Progress& progress);

// The heap as of a moment: for an ALL capture, replayed up to and including
// the `index`-th MemoryRecord (0-based; -1: the start, nothing allocated);
// for an aggregated one, the `index`-th whole checkpoint.
struct HeapAt {
    PassEnd end;
    bool reached = false;              // the moment was found (false: the file ended first)
    std::unique_ptr<HeapReplay> heap;  // ALL format
    AggregatedState aggregated;        // aggregated format
};
HeapAt heap_at(read::CaptureReader& reader, int64_t index, const read::Progress& progress);

// The index of the last entry of `times` (in file order) that is <= t_ms,
// or -1.
int64_t last_at_or_before(const std::vector<uint64_t>& times, uint64_t t_ms);

}  // namespace heapscope::analysis
