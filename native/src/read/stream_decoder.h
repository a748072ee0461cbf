// StreamDecoder: a capture decoded as its bytes arrive (a socket, heapscope
// live).
//
// Whole chunks are decoded as soon as they are complete; definitions (stack
// nodes, threads, metadata, ...) are kept, and every other record is handed
// to the caller in order. After damage or the end chunk, further bytes are
// ignored. Memory is bounded by the definitions. Not thread-safe. Never
// calls Python.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "format/chunk_io.h"
#include "format/records.h"
#include "read/definitions.h"

namespace heapscope::read {

class StreamDecoder {
  public:
    // Decodes every whole chunk `bytes` completes, calling on_record(const
    // format::Record&) for each record that is not a definition.
    template <typename OnRecord>
    void feed(std::string_view bytes, OnRecord&& on_record) {
        if (ended_ || !damage_.empty()) return;
        parser_.feed(bytes);
        while (next_chunk()) {
            format::RecordDecoder decoder(payload_, header_.version >= 2, header_.version >= 3);
            while (decoder.next(&record_)) {
                if (!definitions_.apply(record_, &generation_)) on_record(record_);
            }
            if (!decoder.error().empty()) {
                set_record_damage(decoder.error());
                return;
            }
        }
    }

    bool header_seen() const { return header_seen_; }
    const format::FileHeader& header() const { return header_; }
    bool aggregated() const { return header_.format == format::FileFormat::kAggregatedAllocations; }
    bool ended() const { return ended_; }                  // the end chunk arrived
    const std::string& damage() const { return damage_; }  // empty if none
    const Definitions& definitions() const { return definitions_; }
    Definitions& definitions() { return definitions_; }

  private:
    // Advances to the next whole records chunk (in payload_); false when more
    // bytes are needed, or after the end chunk or damage.
    bool next_chunk();
    void set_record_damage(const std::string& error);

    format::ChunkParser parser_;
    format::FileHeader header_{};
    bool header_seen_ = false;
    bool ended_ = false;
    std::string damage_;
    uint64_t chunks_ = 0;
    std::string payload_;
    format::Record record_{};
    Definitions definitions_;
    uint32_t generation_ = 0;
};

}  // namespace heapscope::read
