#include "analysis/timeline.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

#include "analysis/heap_replay.h"

namespace heapscope::analysis {

namespace {

using format::Record;
using format::RecordType;

// Python nodes that show the same frames (function, file, line from the
// outermost frame in) are one stack: the trie tells apart instructions of one
// line, a report does not. Each node maps to the first node seen with its
// frames. Nodes are defined before any event uses them, so the definitions
// read so far always know them.
class StackNames {
  public:
    explicit StackNames(const read::Definitions& definitions) : definitions_(definitions) {}

    uint32_t canonical(uint32_t node) {
        auto [known, inserted] = canonical_.try_emplace(node, node);
        if (!inserted) return known->second;
        frames_.clear();
        if (!definitions_.python_stack(node, SIZE_MAX, &frames_)) return node;
        key_.clear();
        for (const read::PythonFrame& f : frames_) {
            key_ += f.function;
            key_ += '\0';
            key_ += f.file;
            key_ += '\0';
            key_ += std::to_string(f.line);
            key_ += '\n';
        }
        auto [first, added] = first_with_frames_.try_emplace(key_, node);
        known->second = first->second;
        (void)added;
        return first->second;
    }

  private:
    const read::Definitions& definitions_;
    std::unordered_map<uint32_t, uint32_t> canonical_;
    std::unordered_map<std::string, uint32_t> first_with_frames_;
    std::vector<read::PythonFrame> frames_;
    std::string key_;
};

// Live bytes per stack, summed over the replay's locations.
std::vector<std::pair<uint32_t, uint64_t>> bytes_by_stack(const HeapReplay& heap, StackNames* names) {
    std::unordered_map<uint32_t, uint64_t> by_node;
    const HighWaterMark& counters = heap.counters();
    for (uint32_t id = 0; id < counters.size(); ++id) {
        const uint64_t bytes = counters.at(id).current_bytes;
        if (bytes != 0) by_node[names->canonical(heap.locations().key(id).python_node)] += bytes;
    }
    return {by_node.begin(), by_node.end()};
}

}  // namespace

void merge_small_stacks(std::vector<std::pair<uint32_t, uint64_t>>* stacks, double precision, uint64_t* other) {
    auto larger = [](const std::pair<uint32_t, uint64_t>& a, const std::pair<uint32_t, uint64_t>& b) {
        if (a.second != b.second) return a.second > b.second;
        return a.first < b.first;
    };
    std::sort(stacks->begin(), stacks->end(), larger);
    uint64_t total = *other;
    for (const auto& [node, bytes] : *stacks) total += bytes;
    // long double: exact for totals below 2^64, so a precision of 0 drops nothing.
    const long double allowance = static_cast<long double>(precision) * static_cast<long double>(total);
    uint64_t merged = 0;
    size_t keep = stacks->size();
    while (keep > 0 && static_cast<long double>(merged + (*stacks)[keep - 1].second) <= allowance) {
        merged += (*stacks)[keep - 1].second;
        --keep;
    }
    stacks->resize(keep);
    *other += merged;
}

void keep_largest_stacks(std::vector<std::pair<uint32_t, uint64_t>>* stacks, size_t max_stacks, uint64_t* other) {
    if (max_stacks == 0 || stacks->size() <= max_stacks) return;
    for (size_t i = max_stacks; i < stacks->size(); ++i) *other += (*stacks)[i].second;  // sorted largest first
    stacks->resize(max_stacks);
}

Timeline timeline(read::CaptureReader& reader, const TimelineOptions& options, const read::Progress& progress) {
    Timeline result;
    auto cursor = reader.start_pass(progress, true, &result.end.error);
    if (!cursor) return result;
    HeapReplay heap;
    StackNames names(reader.definitions());
    uint64_t next_moment = 0;  // the earliest moment without a snapshot
    bool moments_done = false;
    while (const Record* r = cursor->next()) {
        switch (r->type) {
            case RecordType::kAllocation:
                heap.allocate(r->allocation);
                break;
            case RecordType::kDeallocation:
                heap.deallocate(r->deallocation);
                break;
            case RecordType::kMemory: {
                const uint64_t time = r->memory.time_ms;
                ++result.records;
                result.last_record_ms = std::max(result.last_record_ms, time);
                if (moments_done || next_moment > time) break;
                // Every moment up to this record shares its state: one walk.
                TimelineSnapshot snapshot;
                snapshot.record_ms = time;
                snapshot.stacks = bytes_by_stack(heap, &names);
                for (const auto& [node, bytes] : snapshot.stacks) snapshot.total += bytes;
                merge_small_stacks(&snapshot.stacks, options.precision, &snapshot.other);
                keep_largest_stacks(&snapshot.stacks, options.max_stacks, &snapshot.other);
                while (next_moment <= time) {
                    snapshot.moment_ms = next_moment;
                    result.snapshots.push_back(snapshot);
                    if (next_moment > UINT64_MAX - options.interval_ms) {  // no later moment is representable
                        moments_done = true;
                        break;
                    }
                    next_moment += options.interval_ms;
                }
                break;
            }
            default:
                break;
        }
    }
    result.end.complete = cursor->end_chunk_seen();
    result.end.damage = cursor->damage();
    result.end.cancelled = cursor->cancelled();
    return result;
}

}  // namespace heapscope::analysis
