#include "analysis/capture_stream.h"

#include "analysis/capture_reader.h"

namespace heapscope::analysis {

void CaptureStream::feed(std::string_view bytes) {
    if (ended_ || !damage_.empty()) return;
    parser_.feed(bytes);
    for (;;) {
        format::ChunkType type{};
        switch (parser_.next(&header_, &type, &payload_)) {
            case format::ChunkParser::Status::kHeader:
                header_seen_ = true;
                break;
            case format::ChunkParser::Status::kChunk:
                ++chunks_;
                if (type == format::ChunkType::kEnd) {
                    ended_ = true;
                    return;
                }
                if (type == format::ChunkType::kRecords) apply(payload_, chunks_ - 1);
                if (!damage_.empty()) return;
                break;
            case format::ChunkParser::Status::kNeedMore:
                return;
            case format::ChunkParser::Status::kDamaged:
                damage_ = damage_report(parser_.error());
                return;
        }
    }
}

void CaptureStream::apply(std::string_view payload, uint64_t chunk_number) {
    format::RecordDecoder decoder(payload, header_.version >= 2);
    while (decoder.next(&record_)) {
        if (definitions_.apply(record_, &generation_)) continue;
        switch (record_.type) {
            case format::RecordType::kAllocation:
                heap_.allocate(record_.allocation);
                allocations_ += record_.allocation.count;
                break;
            case format::RecordType::kDeallocation:
                heap_.deallocate(record_.deallocation);
                break;
            case format::RecordType::kMemory:
                memory_ = record_.memory;
                break;
            case format::RecordType::kCheckpoint:
                aggregated_.on_checkpoint(record_.checkpoint);
                break;
            case format::RecordType::kLocation:
                aggregated_.on_location(record_.location);
                break;
            default:
                break;
        }
    }
    if (!decoder.error().empty()) {
        // The parser does not say where a chunk started in the stream; its number does.
        damage_ = "chunk " + std::to_string(chunk_number) + ": " + decoder.error() + "; the data before it was read";
    }
}

std::vector<LocationTotal> CaptureStream::live_rows() const {
    return aggregated() ? aggregated_.current_rows() : heap_.current_rows();
}

uint64_t CaptureStream::total_allocations() const {
    if (!aggregated()) return allocations_;
    uint64_t total = 0;
    for (const LocationTotal& row : aggregated_.total_rows()) total += row.count;
    return total;
}

uint64_t CaptureStream::heap() const { return aggregated() ? aggregated_.checkpoint().heap : heap_.heap(); }

uint64_t CaptureStream::peak_heap() const {
    return aggregated() ? aggregated_.checkpoint().peak_heap : heap_.peak_heap();
}

}  // namespace heapscope::analysis
