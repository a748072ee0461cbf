// AggregatedState: an aggregated capture's per-location counters, applied a
// checkpoint at a time.
//
// A CheckpointRecord is followed by `locations` LocationRecords; a location
// not repeated keeps its last state. A checkpoint counts only once all its
// location records were read: a capture cut inside one (a killed process,
// damage) reads as of the checkpoint before. Never calls Python.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "model/location.h"
#include "format/records.h"

namespace heapscope::analysis {

class AggregatedState {
  public:
    void on_checkpoint(const format::CheckpointRecord& r);
    void on_location(const format::LocationRecord& r);

    // Checkpoints read whole so far; the last one's state is what the
    // accessors below describe.
    uint64_t checkpoints() const { return checkpoints_; }
    const format::CheckpointRecord& checkpoint() const { return checkpoint_; }

    // Per location (threads apart): outstanding at the last checkpoint, at
    // the high-water mark as of it, and ever allocated.
    std::vector<LocationTotal> current_rows() const;
    std::vector<LocationTotal> peak_rows() const;
    std::vector<LocationTotal> total_rows() const;

  private:
    void commit();

    // By the writer's location id. A map, not a vector indexed by id: ids
    // are dense in a capture but not in a forked child's, and a damaged file
    // may name any id.
    std::map<uint32_t, format::LocationRecord> locations_;
    std::vector<format::LocationRecord> pending_;
    format::CheckpointRecord pending_checkpoint_{};
    bool in_checkpoint_ = false;
    format::CheckpointRecord checkpoint_{};
    uint64_t checkpoints_ = 0;
};

}  // namespace heapscope::analysis
