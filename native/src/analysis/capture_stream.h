// CaptureStream: a capture read while it is being written (heapscope live).
//
// Bytes arrive piecemeal from a socket; whole chunks are decoded as soon as
// they are complete and applied to the current heap: live blocks by
// location, the latest memory record, the definitions and the metadata. An
// aggregated capture shows its last whole checkpoint. Memory is bounded by
// the live blocks and the definitions, however long the program runs.
//
// Not thread-safe. Never calls Python.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/aggregated_state.h"
#include "analysis/definitions.h"
#include "analysis/heap_replay.h"
#include "format/chunk_io.h"
#include "format/records.h"

namespace heapscope::analysis {

class CaptureStream {
  public:
    // Decodes every whole chunk `bytes` completes. After damage or the end
    // chunk, further bytes are ignored.
    void feed(std::string_view bytes);

    bool header_seen() const { return header_seen_; }
    const format::FileHeader& header() const { return header_; }
    bool ended() const { return ended_; }                     // the end chunk arrived
    const std::string& damage() const { return damage_; }     // empty if none
    const Definitions& definitions() const { return definitions_; }
    Definitions& definitions() { return definitions_; }

    // Outstanding now, per location (threads apart).
    std::vector<LocationTotal> live_rows() const;
    const std::optional<format::MemoryRecord>& memory() const { return memory_; }
    uint64_t total_allocations() const;
    uint64_t heap() const;
    uint64_t peak_heap() const;

  private:
    void apply(std::string_view payload, uint64_t chunk_number);
    bool aggregated() const { return header_.format == format::FileFormat::kAggregatedAllocations; }

    format::ChunkParser parser_;
    format::FileHeader header_{};
    bool header_seen_ = false;
    bool ended_ = false;
    std::string damage_;
    uint64_t chunks_ = 0;
    uint64_t allocations_ = 0;
    std::string payload_;
    format::Record record_{};
    Definitions definitions_;
    uint32_t generation_ = 0;
    HeapReplay heap_;
    AggregatedState aggregated_;
    std::optional<format::MemoryRecord> memory_;
};

}  // namespace heapscope::analysis
