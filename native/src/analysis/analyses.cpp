#include "analysis/analyses.h"

#include <algorithm>
#include <bit>
#include <unordered_map>
#include <utility>

namespace heapscope::analysis {

namespace {

using format::Record;
using format::RecordType;

// Allocations made so far per thread (the position of each new allocation in
// its thread's sequence). Threads are few and events come in runs from one
// thread: a one-entry memo before the map.
class ThreadCounters {
  public:
    uint64_t& operator[](uint32_t thread) {
        if (last_ == nullptr || thread != last_thread_) {
            last_ = &counts_[thread];
            last_thread_ = thread;
        }
        return *last_;
    }

  private:
    std::unordered_map<uint32_t, uint64_t> counts_;  // node-based: references stay valid
    uint64_t* last_ = nullptr;
    uint32_t last_thread_ = 0;
};

}  // namespace

void finish_pass(const read::CaptureReader::Cursor& cursor, PassEnd* end) {
    end->complete = cursor.end_chunk_seen();
    end->damage = cursor.damage();
    end->cancelled = cursor.cancelled();
}

CaptureSummary summarize(read::CaptureReader& reader, const read::Progress& progress, bool prefetch) {
    CaptureSummary summary;
    auto cursor = reader.start_pass(progress, prefetch, &summary.end.error);
    if (!cursor) return summary;
    HeapReplay heap;
    AggregatedState aggregated;
    uint64_t allocations = 0, bytes = 0, deallocations = 0;
    auto& histogram = summary.size_histogram;
    auto& by_allocator = summary.allocations_by_allocator;
    while (const Record* r = cursor->next()) {
        switch (r->type) {
            case RecordType::kAllocation: {
                const format::AllocationRecord& a = r->allocation;
                heap.allocate(a);
                // A sampled record stands for `count` blocks of about
                // size / count bytes each (sample/sampler.h).
                const uint64_t count = a.count ? a.count : 1;
                allocations += count;
                bytes += a.size;
                histogram[std::bit_width(a.size / count)] += count;
                summary.size_histogram_bytes[std::bit_width(a.size / count)] += a.size;
                by_allocator[static_cast<uint8_t>(a.allocator) <= kMaxAllocator ? static_cast<uint8_t>(a.allocator) : 0] +=
                    count;
                break;
            }
            case RecordType::kDeallocation:
                heap.deallocate(r->deallocation);
                ++deallocations;
                break;
            case RecordType::kMemory:
                summary.memory.push_back(r->memory);
                break;
            case RecordType::kCheckpoint:
            case RecordType::kLocation: {
                const uint64_t before = aggregated.checkpoints();
                if (r->type == RecordType::kCheckpoint) {
                    aggregated.on_checkpoint(r->checkpoint);
                } else {
                    aggregated.on_location(r->location);
                }
                if (aggregated.checkpoints() != before) summary.checkpoint_times.push_back(aggregated.checkpoint().time_ms);
                break;
            }
            default:
                break;
        }
    }
    finish_pass(*cursor, &summary.end);
    if (reader.aggregated()) {
        summary.peak = aggregated.peak_rows();
        summary.leaks = aggregated.current_rows();
        summary.totals = aggregated.total_rows();
        for (const LocationTotal& row : summary.totals) {
            summary.total_allocations += row.count;
            summary.total_bytes += row.bytes;
        }
        if (aggregated.checkpoints() > 0) {
            summary.peak_heap = aggregated.checkpoint().peak_heap;
            summary.end_heap = aggregated.checkpoint().heap;
            summary.final_checkpoint = aggregated.checkpoint().final;
        }
        summary.size_histogram.fill(0);
        summary.size_histogram_bytes.fill(0);
        summary.allocations_by_allocator.fill(0);
    } else {
        summary.peak = heap.peak_rows();
        summary.leaks = heap.current_rows();
        summary.totals = heap.total_rows();
        summary.total_allocations = allocations;
        summary.total_bytes = bytes;
        summary.deallocations = deallocations;
        summary.peak_heap = heap.peak_heap();
        summary.end_heap = heap.heap();
    }
    return summary;
}

std::vector<SizeBucket> size_histogram(const CaptureSummary& summary) {
    const auto& h = summary.size_histogram;
    size_t first = 0, last = kSizeBuckets;
    while (first < kSizeBuckets && h[first] == 0) ++first;
    while (last > first && h[last - 1] == 0) --last;
    std::vector<SizeBucket> buckets;
    for (size_t i = first; i < last; ++i) {
        const uint64_t low = i == 0 ? 0 : uint64_t{1} << (i - 1);
        const uint64_t high = i == 0 ? 0 : (i == 64 ? UINT64_MAX : (uint64_t{1} << i) - 1);
        buckets.push_back(SizeBucket{low, high, h[i], summary.size_histogram_bytes[i]});
    }
    return buckets;
}

std::vector<StackTotal> top_stacks(const std::vector<LocationTotal>& totals, size_t n, bool by_bytes) {
    std::unordered_map<uint64_t, uint64_t> by_stack;
    for (const LocationTotal& row : totals) {
        const uint64_t stack = (uint64_t{row.key.python_node} << 32) | row.key.native_node;
        by_stack[stack] += by_bytes ? row.bytes : row.count;
    }
    std::vector<StackTotal> result;
    result.reserve(by_stack.size());
    for (const auto& [stack, value] : by_stack) {
        result.push_back(StackTotal{static_cast<uint32_t>(stack >> 32), static_cast<uint32_t>(stack), value});
    }
    auto larger = [](const StackTotal& a, const StackTotal& b) {
        if (a.value != b.value) return a.value > b.value;
        if (a.python_node != b.python_node) return a.python_node < b.python_node;
        return a.native_node < b.native_node;
    };
    if (result.size() > n) {
        std::partial_sort(result.begin(), result.begin() + static_cast<std::ptrdiff_t>(n), result.end(), larger);
        result.resize(n);
    } else {
        std::sort(result.begin(), result.end(), larger);
    }
    return result;
}

TemporaryResult temporary_allocations(read::CaptureReader& reader, uint64_t threshold, const read::Progress& progress) {
    TemporaryResult result;
    if (reader.aggregated()) return result;
    auto cursor = reader.start_pass(progress, true, &result.end.error);
    if (!cursor) return result;

    // The live blocks, per domain: address -> size, count and an entry in
    // `made`, which holds what a 64-bit position needs.
    struct Made {
        uint64_t position;  // the block's place in its thread's allocations
        uint32_t thread, python_node, native_node;
        Allocator allocator;
    };
    std::vector<Made> made;
    std::vector<uint32_t> free_entries;
    struct PendingBlock {
        uint64_t size = 0;
        uint32_t made_entry = 0;
        uint32_t count = 0;  // 1 unless sampled
    };
    using Blocks = AddressMap<PendingBlock>;
    std::unordered_map<uint32_t, Blocks> blocks_by_domain;
    Blocks* last_blocks = nullptr;
    uint32_t last_domain = 0;
    auto blocks_of = [&](uint32_t domain) -> Blocks& {
        if (last_blocks == nullptr || domain != last_domain) {
            last_blocks = &blocks_by_domain[domain];
            last_domain = domain;
        }
        return *last_blocks;
    };
    ThreadCounters allocated_by;
    LocationIndex locations;
    std::vector<LocationTotal> rows;

    while (const Record* r = cursor->next()) {
        if (r->type == RecordType::kAllocation) {
            const format::AllocationRecord& a = r->allocation;
            uint32_t entry;
            if (!free_entries.empty()) {
                entry = free_entries.back();
                free_entries.pop_back();
            } else {
                entry = static_cast<uint32_t>(made.size());
                made.emplace_back();
            }
            made[entry] = Made{allocated_by[a.thread]++, a.thread, a.python_node, a.native_node, a.allocator};
            PendingBlock replaced;
            if (blocks_of(a.domain).insert(a.address, PendingBlock{a.size, entry, a.count}, &replaced)) {
                free_entries.push_back(replaced.made_entry);
            }
        } else if (r->type == RecordType::kDeallocation) {
            const format::DeallocationRecord& d = r->deallocation;
            Blocks& blocks = blocks_of(d.domain);
            const PendingBlock* block = blocks.find(d.address);
            if (block == nullptr) continue;
            const bool unmap = d.allocator == Allocator::kMunmap;
            // A partial munmap leaves the block: only a whole one can match.
            if (unmap && d.size != 0 && d.size != block->size) continue;
            const PendingBlock info = *block;
            blocks.erase(d.address, nullptr);
            free_entries.push_back(info.made_entry);
            const Made& m = made[info.made_entry];
            if (m.thread != d.thread) continue;
            const uint64_t later = allocated_by[d.thread] - m.position - 1;  // allocations since
            if (later > threshold) continue;
            const uint32_t id =
                locations.intern(LocationKey{.thread = m.thread, .python_node = m.python_node, .native_node = m.native_node,
                                             .domain = d.domain, .allocator = m.allocator});
            if (id >= rows.size()) rows.resize(size_t{id} + 1);
            rows[id].key = locations.key(id);
            rows[id].count += info.count;
            rows[id].bytes += info.size;
        }
    }
    finish_pass(*cursor, &result.end);
    result.rows = std::move(rows);
    return result;
}

HeapAt heap_at(read::CaptureReader& reader, int64_t index, const read::Progress& progress) {
    HeapAt result;
    result.heap = std::make_unique<HeapReplay>();
    if (index < 0) {
        result.reached = true;
        return result;
    }
    auto cursor = reader.start_pass(progress, true, &result.end.error);
    if (!cursor) return result;
    const bool aggregated = reader.aggregated();
    int64_t seen = 0;  // memory records, or whole checkpoints
    while (const Record* r = cursor->next()) {
        switch (r->type) {
            case RecordType::kAllocation:
                result.heap->allocate(r->allocation);
                break;
            case RecordType::kDeallocation:
                result.heap->deallocate(r->deallocation);
                break;
            case RecordType::kMemory:
                if (!aggregated && seen++ == index) result.reached = true;
                break;
            case RecordType::kCheckpoint:
            case RecordType::kLocation: {
                const uint64_t before = result.aggregated.checkpoints();
                if (r->type == RecordType::kCheckpoint) {
                    result.aggregated.on_checkpoint(r->checkpoint);
                } else {
                    result.aggregated.on_location(r->location);
                }
                if (aggregated && result.aggregated.checkpoints() != before && seen++ == index) result.reached = true;
                break;
            }
            default:
                break;
        }
        if (result.reached) break;
    }
    finish_pass(*cursor, &result.end);
    return result;
}

int64_t last_at_or_before(const std::vector<uint64_t>& times, uint64_t t_ms) {
    for (size_t i = times.size(); i > 0; --i) {
        if (times[i - 1] <= t_ms) return static_cast<int64_t>(i - 1);
    }
    return -1;
}

}  // namespace heapscope::analysis
