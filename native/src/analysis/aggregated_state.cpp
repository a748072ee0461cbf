#include "analysis/aggregated_state.h"

#include "model/high_water_mark.h"

namespace heapscope::analysis {

namespace {
LocationKey key_of(const format::LocationRecord& r) {
    return LocationKey{.thread = r.thread, .python_node = r.python_node, .native_node = r.native_node,
                       .domain = r.domain, .allocator = r.allocator};
}
}  // namespace

void AggregatedState::on_checkpoint(const format::CheckpointRecord& r) {
    // A checkpoint whose locations were cut short by a newer one is dropped.
    pending_.clear();
    pending_checkpoint_ = r;
    in_checkpoint_ = true;
    if (r.locations == 0) commit();
}

void AggregatedState::on_location(const format::LocationRecord& r) {
    if (!in_checkpoint_) return;  // not announced by a checkpoint: not part of any state
    pending_.push_back(r);
    if (pending_.size() == pending_checkpoint_.locations) commit();
}

void AggregatedState::commit() {
    for (const format::LocationRecord& r : pending_) locations_[r.location] = r;
    pending_.clear();
    checkpoint_ = pending_checkpoint_;
    in_checkpoint_ = false;
    ++checkpoints_;
}

std::vector<LocationTotal> AggregatedState::current_rows() const {
    std::vector<LocationTotal> rows;
    for (const auto& [id, r] : locations_) {
        if (r.current_count > 0) rows.push_back(LocationTotal{key_of(r), r.current_count, r.current_bytes});
    }
    return rows;
}

std::vector<LocationTotal> AggregatedState::peak_rows() const {
    std::vector<LocationTotal> rows;
    for (const auto& [id, r] : locations_) {
        // The writer's counters, read with the writer's rule (high_water_mark.h).
        LocationCounters c;
        c.current_count = r.current_count;
        c.current_bytes = r.current_bytes;
        c.at_peak_count = r.at_peak_count;
        c.at_peak_bytes = r.at_peak_bytes;
        c.epoch = r.epoch;
        const uint64_t count = c.peak_count(checkpoint_.peak_epoch);
        if (count > 0) rows.push_back(LocationTotal{key_of(r), count, c.peak_bytes(checkpoint_.peak_epoch)});
    }
    return rows;
}

std::vector<LocationTotal> AggregatedState::total_rows() const {
    std::vector<LocationTotal> rows;
    for (const auto& [id, r] : locations_) {
        if (r.total_count > 0) rows.push_back(LocationTotal{key_of(r), r.total_count, r.total_bytes});
    }
    return rows;
}

}  // namespace heapscope::analysis
