#include "analysis/temporal.h"

#include <algorithm>
#include <map>
#include <memory>
#include <tuple>
#include <type_traits>
#include <unordered_map>

#include "store/address_map.h"
#include "store/mapping_index.h"

namespace heapscope::analysis {

namespace {

using format::Record;
using format::RecordType;

// The heap replayed for a temporal pass: each live block remembers its
// location and the snapshot count when it was made (its generation); each
// piece of a mapping also the mmap call it came from. Tells `history`
// every change: made(location, count, bytes), released(location, count,
// bytes, generation, whole) where `whole` is false for a piece of a mapping
// that others of the same call outlive, and pieces(location, +1) when a
// hole cuts a mapping in two.
template <typename History>
class TemporalReplay {
  public:
    TemporalReplay(History* history, bool merge_threads) : history_(history), merge_threads_(merge_threads) {}

    void allocate(const format::AllocationRecord& r, uint32_t generation) {
        const uint32_t location = locations_.intern(LocationKey{.thread = merge_threads_ ? 0 : r.thread,
                                                                .python_node = r.python_node,
                                                                .native_node = r.native_node, .domain = r.domain,
                                                                .allocator = r.allocator});
        const uint32_t count = r.count ? r.count : 1;
        if (r.allocator == Allocator::kMmap) {
            if (r.size == 0) return;  // a failed call: nothing mapped
            const uint64_t group = next_group_++;
            mappings_.map(r.address, r.size, Piece{location, generation, group}, released_pieces());
            group_pieces_[group] = 1;
        } else {
            Block replaced;
            if (table(r.domain).insert(r.address, Block{r.size, location, generation, count}, &replaced)) {
                history_->released(replaced.location, replaced.count, replaced.size, replaced.generation, true);
            }
        }
        history_->made(location, count, r.size);
    }

    void deallocate(const format::DeallocationRecord& r) {
        if (r.allocator == Allocator::kMunmap) {
            mappings_.unmap(r.address, r.size, released_pieces());
            return;
        }
        auto found = tables_.find(r.domain);
        Block removed;
        if (found != tables_.end() && found->second->erase(r.address, &removed)) {
            history_->released(removed.location, removed.count, removed.size, removed.generation, true);
        }
    }

    const LocationIndex& locations() const { return locations_; }

    // visit(location, generation, count, bytes) for every live block; a
    // mapping's pieces after the first of the same call count no block.
    template <typename Visit>
    void for_each_live(Visit&& visit) const {
        for (const auto& [domain, blocks] : tables_) {
            blocks->for_each([&](uintptr_t, const Block& b) { visit(b.location, b.generation, b.count, b.size); });
        }
        std::unordered_map<uint64_t, bool> seen;
        mappings_.for_each([&](uint64_t, uint64_t length, const Piece& p) {
            visit(p.location, p.generation, seen.emplace(p.group, true).second ? 1u : 0u, length);
        });
    }

  private:
    struct Block {
        uint64_t size = 0;
        uint32_t location = 0;
        uint32_t generation = 0;
        uint32_t count = 0;
    };
    struct Piece {
        uint32_t location;
        uint32_t generation;
        uint64_t group;  // the mmap call
    };

    AddressMap<Block>& table(uint32_t domain) {
        auto& blocks = tables_[domain];
        if (!blocks) blocks = std::make_unique<AddressMap<Block>>();
        return *blocks;
    }
    auto released_pieces() {
        return [this](uint64_t, uint64_t bytes, Unmapped how, const Piece& piece) {
            // Whether this is the call's last piece going (memray counts a mapping once, then).
            bool last = how == Unmapped::kWhole;
            auto pieces = group_pieces_.find(piece.group);
            if (pieces != group_pieces_.end()) {
                if (how == Unmapped::kHole) ++pieces->second;
                if (how == Unmapped::kWhole) {
                    last = --pieces->second == 0;
                    if (last) group_pieces_.erase(pieces);
                }
            }
            if (how == Unmapped::kHole) history_->pieces(piece.location, 1);
            history_->released(piece.location, how == Unmapped::kWhole ? 1 : 0, bytes, piece.generation, last);
        };
    }

    History* history_;
    bool merge_threads_;
    LocationIndex locations_;
    std::unordered_map<uint32_t, std::unique_ptr<AddressMap<Block>>> tables_;
    MappingIndex<Piece> mappings_;
    std::unordered_map<uint64_t, uint32_t> group_pieces_;  // pieces left of each mmap call
    uint64_t next_group_ = 0;
};

// Runs `replay` over the capture: every kept memory record is a snapshot
// (history->snapshot()). Returns the number of snapshots.
template <typename History>
uint64_t replay_with_snapshots(read::CaptureReader::Cursor& cursor, TemporalReplay<History>& replay,
                               History* history, uint64_t stride) {
    uint64_t memory_records = 0, snapshots = 0;
    while (const Record* r = cursor.next()) {
        switch (r->type) {
            case RecordType::kAllocation:
                replay.allocate(r->allocation, static_cast<uint32_t>(snapshots));
                break;
            case RecordType::kDeallocation:
                replay.deallocate(r->deallocation);
                break;
            case RecordType::kMemory:
                if (memory_records++ % stride == 0) {
                    history->snapshot();
                    ++snapshots;
                }
                break;
            default:
                break;
        }
    }
    return snapshots;
}

void sort_intervals(std::vector<TemporalInterval>* intervals) {
    std::sort(intervals->begin(), intervals->end(), [](const TemporalInterval& a, const TemporalInterval& b) {
        if (a.key != b.key) return a.key < b.key;
        return std::tie(a.allocated_before, a.deallocated_before, a.bytes) <
               std::tie(b.allocated_before, b.deallocated_before, b.bytes);
    });
}

// Lifetimes: blocks freed, by (made before, freed before, location).
class Lifetimes {
  public:
    void made(uint32_t, uint64_t, uint64_t) {}
    void pieces(uint32_t, uint64_t) {}
    void released(uint32_t location, uint64_t count, uint64_t bytes, uint32_t generation, bool whole) {
        if (generation == snapshots_) return;  // made and freed between the same two snapshots
        auto& [n, b] = freed_[std::make_tuple(location, uint64_t{generation}, snapshots_)];
        n += whole ? count : 0;
        b += bytes;
    }
    void snapshot() { ++snapshots_; }

    template <typename Replay>
    std::vector<TemporalInterval> intervals(const Replay& replay) const {
        std::map<std::pair<uint32_t, uint64_t>, std::pair<uint64_t, uint64_t>> leaked;
        replay.for_each_live([&](uint32_t location, uint32_t generation, uint64_t count, uint64_t bytes) {
            auto& [n, b] = leaked[{location, generation}];
            n += count;
            b += bytes;
        });
        std::vector<TemporalInterval> result;
        for (const auto& [when, total] : leaked) {
            result.push_back(TemporalInterval{replay.locations().key(when.first), when.second, kNever, total.first,
                                              total.second});
        }
        for (const auto& [when, total] : freed_) {
            result.push_back(TemporalInterval{replay.locations().key(std::get<0>(when)), std::get<1>(when),
                                              std::get<2>(when), total.first, total.second});
        }
        sort_intervals(&result);
        return result;
    }

  private:
    uint64_t snapshots_ = 0;
    std::map<std::tuple<uint32_t, uint64_t, uint64_t>, std::pair<uint64_t, uint64_t>> freed_;
};

// High-water marks per interval, and each location's share of them. A
// location's share of an interval's highest point is found as HighWaterMark
// finds it for the whole capture (model/high_water_mark.h: `epoch` counts
// the moments the heap reached its high point, a snapshot starting a new
// interval counts as one), lazily: when a location first changes in a later
// interval, its shares of the intervals since its last change are known
// (the last one from its epochs, the ones after it: its value, unchanged).
class HighWaterMarks {
  public:
    void made(uint32_t location, uint64_t count, uint64_t bytes) { change(location, int64_t(count), bytes, true); }
    void pieces(uint32_t location, uint64_t count) { change(location, int64_t(count), 0, true); }
    void released(uint32_t location, uint64_t count, uint64_t bytes, uint32_t, bool) {
        change(location, -int64_t(count), bytes, false);
    }
    void snapshot() {
        final_epoch_.push_back(epoch_);
        high_water_marks_.push_back(peak_);
        peak_ = heap_;  // the interval's start is its first high point
        ++epoch_;
    }

    template <typename Replay>
    std::vector<TemporalInterval> intervals(const Replay& replay, std::vector<uint64_t>* high_water_marks) {
        const uint64_t last = final_epoch_.size();  // the interval still open: snapshots taken
        std::vector<TemporalInterval> result;
        for (uint32_t id = 0; id < locations_.size(); ++id) {
            Location& l = locations_[id];
            Share now{l.count, l.bytes};
            if (l.interval < last) {
                close_intervals(&l, last);
                add_share(&l, last, now, true);
            } else {
                add_share(&l, last, l.epoch < epoch_ ? now : l.at_peak, true);
            }
            if (l.shares.back().second != now) l.shares.emplace_back(last + 1, now);  // the end: leaks
            for (size_t i = 0; i < l.shares.size(); ++i) {
                const uint64_t until = i + 1 < l.shares.size() ? l.shares[i + 1].first : kNever;
                result.push_back(TemporalInterval{replay.locations().key(id), l.shares[i].first, until,
                                                  l.shares[i].second.count, l.shares[i].second.bytes});
            }
        }
        sort_intervals(&result);
        *high_water_marks = high_water_marks_;
        high_water_marks->push_back(peak_);
        return result;
    }

  private:
    struct Share {
        uint64_t count = 0, bytes = 0;
        bool operator!=(const Share& other) const { return count != other.count || bytes != other.bytes; }
    };
    struct Location {
        uint64_t count = 0, bytes = 0;
        Share at_peak;           // its value at the latest high point of `interval`, once it changed after it
        uint64_t epoch = 0;      // epoch_ at its last change
        uint64_t interval = 0;   // the interval of its last change
        std::vector<std::pair<uint64_t, Share>> shares;  // (from interval, share): each change of its share
    };

    // memray's rule for recording a share: only when it differs from the
    // last one recorded; before the first, a share of nothing is not
    // recorded, except in the last interval (`last`), which always has one.
    static void add_share(Location* l, uint64_t interval, Share share, bool last) {
        if (l->shares.empty() ? (share.count || share.bytes || last) : l->shares.back().second != share) {
            l->shares.emplace_back(interval, share);
        }
    }
    // The shares of `l` in the intervals from its last change to `now` (excluded).
    void close_intervals(Location* l, uint64_t now) {
        const Share current{l->count, l->bytes};
        add_share(l, l->interval, l->epoch < final_epoch_[l->interval] ? current : l->at_peak, false);
        if (l->interval + 1 < now) add_share(l, l->interval + 1, current, false);
        l->interval = now;
    }

    void change(uint32_t location, int64_t count, uint64_t bytes, bool grow) {
        if (location >= locations_.size()) locations_.resize(size_t{location} + 1);  // held nothing before
        Location& l = locations_[location];
        const uint64_t now = final_epoch_.size();
        if (l.interval < now) close_intervals(&l, now);
        if (l.epoch < epoch_) l.at_peak = Share{l.count, l.bytes};
        l.epoch = epoch_;
        l.count = static_cast<uint64_t>(static_cast<int64_t>(l.count) + count);
        if (grow) {
            l.bytes += bytes;
            heap_ += bytes;
        } else {
            const uint64_t released = std::min(bytes, l.bytes);
            l.bytes -= released;
            heap_ -= std::min(released, heap_);
        }
        if (heap_ >= peak_) {  // the latest of equal maxima
            peak_ = heap_;
            ++epoch_;
        }
    }

    std::vector<Location> locations_;
    std::vector<uint64_t> final_epoch_;       // per finished interval: epoch_ when it ended
    std::vector<uint64_t> high_water_marks_;  // per finished interval: its highest heap
    uint64_t heap_ = 0, peak_ = 0, epoch_ = 0;
};

template <typename History>
TemporalResult temporal_pass(read::CaptureReader& reader, bool merge_threads, uint64_t stride,
                             const read::Progress& progress) {
    TemporalResult result;
    if (reader.aggregated()) return result;
    auto cursor = reader.start_pass(progress, true, &result.end.error);
    if (!cursor) return result;
    History history;
    TemporalReplay<History> replay(&history, merge_threads);
    replay_with_snapshots(*cursor, replay, &history, stride ? stride : 1);
    finish_pass(*cursor, &result.end);
    if constexpr (std::is_same_v<History, HighWaterMarks>) {
        result.intervals = history.intervals(replay, &result.high_water_marks);
    } else {
        result.intervals = history.intervals(replay);
    }
    return result;
}

}  // namespace

TemporalResult allocation_lifetimes(read::CaptureReader& reader, bool merge_threads, uint64_t stride,
                                    const read::Progress& progress) {
    return temporal_pass<Lifetimes>(reader, merge_threads, stride, progress);
}

TemporalResult temporal_high_water_marks(read::CaptureReader& reader, bool merge_threads, uint64_t stride,
                                         const read::Progress& progress) {
    return temporal_pass<HighWaterMarks>(reader, merge_threads, stride, progress);
}

}  // namespace heapscope::analysis
