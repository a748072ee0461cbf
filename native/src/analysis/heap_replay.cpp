#include "analysis/heap_replay.h"

#include <algorithm>

namespace heapscope::analysis {

void HeapReplay::map(uint64_t address, uint64_t length, uint32_t location) {
    unmap(address, length);  // MAP_FIXED over an existing mapping replaces it
    mappings_[address] = Mapping{length, location, next_group_++};
}

void HeapReplay::drop_piece(const Mapping& piece) {
    auto pieces = group_pieces_.find(piece.group);
    if (pieces == group_pieces_.end()) {
        counters_.remove(piece.location, piece.length);
        return;
    }
    counters_.shrink(piece.location, piece.length);
    if (--pieces->second == 1) group_pieces_.erase(pieces);
}

void HeapReplay::unmap(uint64_t address, uint64_t length) {
    if (length == 0) {  // no length recorded: the whole mapping starting there
        auto found = mappings_.find(address);
        if (found == mappings_.end()) return;
        Mapping piece = found->second;
        mappings_.erase(found);
        drop_piece(piece);
        return;
    }
    const uint64_t end = address + length < address ? UINT64_MAX : address + length;
    auto it = mappings_.upper_bound(address);
    if (it != mappings_.begin()) {
        auto before = std::prev(it);
        if (before->first + before->second.length > address) it = before;
    }
    while (it != mappings_.end() && it->first < end) {
        const uint64_t start = it->first;
        const Mapping piece = it->second;
        const uint64_t piece_end = start + piece.length;
        const uint64_t cut_from = std::max(start, address);
        const uint64_t cut_to = std::min(piece_end, end);
        it = mappings_.erase(it);
        const bool left = cut_from > start;
        const bool right = piece_end > cut_to;
        if (!left && !right) {
            drop_piece(piece);
            continue;
        }
        counters_.shrink(piece.location, cut_to - cut_from);
        if (left) mappings_[start] = Mapping{cut_from - start, piece.location, piece.group};
        if (right) mappings_[cut_to] = Mapping{piece_end - cut_to, piece.location, piece.group};
        if (left && right) {
            auto [pieces, inserted] = group_pieces_.try_emplace(piece.group, 1);
            ++pieces->second;
            (void)inserted;
        }
        // The right piece starts at or past `end`: the loop stops on it.
    }
}

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
