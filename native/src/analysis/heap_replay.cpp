#include "analysis/heap_replay.h"

#include <algorithm>

namespace heapscope::analysis {

void HeapReplay::map(uint64_t address, uint64_t length, uint32_t location) {
    mappings_.map(address, length, location, release_pieces());  // MAP_FIXED over live mappings replaces them
}

void HeapReplay::unmap(uint64_t address, uint64_t length) { mappings_.unmap(address, length, release_pieces()); }

std::vector<LocationTotal> HeapReplay::current_rows() const {
    std::vector<LocationTotal> rows;
    for (uint32_t id = 0; id < counters_.size(); ++id) {
        const LocationCounters& c = counters_.at(id);
        if (c.current_count > 0) rows.push_back(LocationTotal{locations_.key(id), c.current_count, c.current_bytes});
    }
    return rows;
}

std::vector<LocationTotal> HeapReplay::peak_rows() const {
    std::vector<LocationTotal> rows;
    const uint64_t epoch = counters_.peak_epoch();
    for (uint32_t id = 0; id < counters_.size(); ++id) {
        const LocationCounters& c = counters_.at(id);
        if (c.peak_count(epoch) > 0) {
            rows.push_back(LocationTotal{locations_.key(id), c.peak_count(epoch), c.peak_bytes(epoch)});
        }
    }
    return rows;
}

std::vector<LocationTotal> HeapReplay::total_rows() const {
    std::vector<LocationTotal> rows;
    for (uint32_t id = 0; id < counters_.size(); ++id) {
        const LocationCounters& c = counters_.at(id);
        if (c.total_count > 0) rows.push_back(LocationTotal{locations_.key(id), c.total_count, c.total_bytes});
    }
    return rows;
}

size_t HeapReplay::live_blocks() const {
    size_t n = default_domain_.size() + mappings_.size();
    for (const auto& [domain, blocks] : other_domains_) n += blocks->size();
    return n;
}

}  // namespace heapscope::analysis
