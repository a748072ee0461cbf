// Timeline: the live heap by Python stack at regular moments, in one pass
// over a capture of every event (heapscope.heapprof's digest).
//
// A capture has no time on its events, only on its memory records (every
// memory_interval_ms, 10 ms by default, and one at the end). Moment k is
// k * interval_ms after the capture started; its snapshot is the heap as of
// the first memory record whose time is >= that moment (every event written
// before that record), so a snapshot is at most one memory interval late.
// Moments after the last memory record get no snapshot.
//
// At each moment the stacks are the Python stacks as frames (function, file,
// line): threads, allocators, domains and native frames merged, and trie
// nodes that differ only in the instruction within a line are one stack,
// named by the first such node met. The smallest stacks whose
// bytes add up to at most `precision` of that moment's total go into one
// "other" amount. Stacks with no live byte are left out.
//
// One HeapReplay for the whole pass; each snapshot costs one walk over the
// locations seen so far. Never calls Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "analysis/analyses.h"
#include "read/capture_reader.h"

namespace heapscope::analysis {

struct TimelineOptions {
    uint64_t interval_ms = 60000;  // > 0
    double precision = 0.01;       // in [0, 1)
    // At most this many stacks kept per moment, the largest; the rest go into
    // `other` too (0: no limit). Bounds a temporal page for a program with
    // thousands of small stacks, where `precision` alone keeps them all.
    size_t max_stacks = 0;
};

struct TimelineSnapshot {
    uint64_t moment_ms = 0;  // k * interval_ms
    uint64_t record_ms = 0;  // the time of the memory record it was taken at
    // Python node -> live bytes, for the stacks kept; largest first, then by node.
    std::vector<std::pair<uint32_t, uint64_t>> stacks;
    uint64_t other = 0;  // bytes of the stacks merged for being small
    uint64_t total = 0;  // every live byte: the kept stacks and `other`
};

struct Timeline {
    PassEnd end;
    std::vector<TimelineSnapshot> snapshots;  // moments 0, 1, 2, ... without gaps
    uint64_t records = 0;                     // memory records read
    uint64_t last_record_ms = 0;              // the time of the last one
};

// One pass over an all-allocations capture. `options` must be valid (the
// caller checks: interval_ms > 0, 0 <= precision < 1).
Timeline timeline(read::CaptureReader& reader, const TimelineOptions& options, const read::Progress& progress);

// Moves the smallest stacks of `stacks` (python node -> bytes, zero-byte
// entries already left out), whose bytes add up to at most precision * total,
// into `*other`; sorts what is left largest first (ties: smaller node first).
// Ties at the cut are broken the same way, so the result is deterministic.
void merge_small_stacks(std::vector<std::pair<uint32_t, uint64_t>>* stacks, double precision, uint64_t* other);
// Then, if more than `max_stacks` (> 0) are left, moves the smallest into `*other`.
void keep_largest_stacks(std::vector<std::pair<uint32_t, uint64_t>>* stacks, size_t max_stacks, uint64_t* other);

}  // namespace heapscope::analysis
