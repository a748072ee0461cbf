// CaptureStream: a capture read while it is being written (heapscope live).
//
// Bytes arrive piecemeal from a socket; read::StreamDecoder decodes whole
// chunks as soon as they are complete, and their records are applied to the current heap: live blocks by
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
#include "analysis/heap_replay.h"
#include "format/records.h"
#include "read/stream_decoder.h"

namespace heapscope::analysis {

class CaptureStream {
  public:
    // Decodes every whole chunk `bytes` completes and applies it.
    void feed(std::string_view bytes);

    bool header_seen() const { return decoder_.header_seen(); }
    const format::FileHeader& header() const { return decoder_.header(); }
    bool ended() const { return decoder_.ended(); }
    const std::string& damage() const { return decoder_.damage(); }
    const read::Definitions& definitions() const { return decoder_.definitions(); }
    read::Definitions& definitions() { return decoder_.definitions(); }

    // Outstanding now, per location (threads apart).
    std::vector<LocationTotal> live_rows() const;
    const std::optional<format::MemoryRecord>& memory() const { return memory_; }
    uint64_t total_allocations() const;
    uint64_t heap() const;
    uint64_t peak_heap() const;

  private:
    void apply(const format::Record& record);
    bool aggregated() const { return decoder_.aggregated(); }

    read::StreamDecoder decoder_;
    uint64_t allocations_ = 0;
    HeapReplay heap_;
    AggregatedState aggregated_;
    std::optional<format::MemoryRecord> memory_;
};

}  // namespace heapscope::analysis
