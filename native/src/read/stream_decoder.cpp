#include "read/stream_decoder.h"

#include "read/capture_reader.h"

namespace heapscope::read {

bool StreamDecoder::next_chunk() {
    if (ended_ || !damage_.empty()) return false;
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
                    return false;
                }
                if (type == format::ChunkType::kRecords) return true;
                break;
            case format::ChunkParser::Status::kNeedMore:
                return false;
            case format::ChunkParser::Status::kDamaged:
                damage_ = damage_report(parser_.error());
                return false;
        }
    }
}

void StreamDecoder::set_record_damage(const std::string& error) {
    // The parser does not say where a chunk started in the stream; its number does.
    damage_ = "chunk " + std::to_string(chunks_ - 1) + ": " + error + "; the data before it was read";
}

}  // namespace heapscope::read
