// CaptureReader: a capture file opened for analysis, read as a stream.
//
// Every analysis is one pass from the start of the file (RecordCursor), so
// memory is bounded by the definitions and the state the analysis keeps
// (live blocks, per-location counters), never by the file's size. A pass
// applies definition and metadata records to the reader's Definitions on
// its way and hands out only events: Allocation, Deallocation, Memory,
// Checkpoint, Location and Object.
//
// A pass stops at the first damaged chunk, or the first record that does not
// decode, and says where (damage()); everything before it has been read.
// Chunks are read and decompressed on a second thread while the caller
// decodes the previous one.
//
// Never calls Python. One pass at a time may use the reader's Definitions:
// callers serialise passes on one reader.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "read/definitions.h"
#include "format/chunk_io.h"
#include "format/records.h"

namespace heapscope::read {

// Called between chunks with the bytes read so far and the file's size.
// Returning false cancels the pass (RecordCursor::cancelled()).
using Progress = std::function<bool(uint64_t bytes_done, uint64_t bytes_total)>;

// A damage report from a chunk reader's error: "chunk N at byte offset X:
// <reason>; the data before it was read".
std::string damage_report(const std::string& chunk_error);

class CaptureReader {
  public:
    enum class OpenError {
        kNone,
        kSystem,      // open/read failed: `error_number` says why
        kNotCapture,  // not a capture, or a version this reader does not know
    };
    struct OpenFailure {
        OpenError kind = OpenError::kNone;
        int error_number = 0;
        std::string message;  // names the path
    };

    // Opens `path` and checks its header. Null on failure.
    static std::unique_ptr<CaptureReader> open(const std::string& path, OpenFailure* failure);
    ~CaptureReader();
    CaptureReader(const CaptureReader&) = delete;
    CaptureReader& operator=(const CaptureReader&) = delete;

    const std::string& path() const { return path_; }
    const format::FileHeader& header() const { return header_; }
    bool aggregated() const { return header_.format == format::FileFormat::kAggregatedAllocations; }
    uint64_t file_size() const { return file_size_; }
    Definitions& definitions() { return definitions_; }
    const Definitions& definitions() const { return definitions_; }

    class Cursor;
    // A new pass from the start of the file. `prefetch` reads chunks on a
    // second thread. Null if the file can no longer be read (`*error`).
    std::unique_ptr<Cursor> start_pass(Progress progress, bool prefetch, std::string* error);

  private:
    CaptureReader() = default;
    std::string path_;
    int fd_ = -1;  // kept open: each pass opens its own description of the same file
    uint64_t file_size_ = 0;
    format::FileHeader header_{};
    Definitions definitions_;
};

// One pass over a capture's records.
class CaptureReader::Cursor {
  public:
    ~Cursor();
    Cursor(const Cursor&) = delete;
    Cursor& operator=(const Cursor&) = delete;

    // The next event, or null at the end of the records (clean end, damage
    // or cancellation). The record stays valid until the next call.
    // Definitions are applied, and returned too after every_record().
    const format::Record* next() {
        for (;;) {
            if (decoder_.next(&record_)) {
                if (is_event(record_.type)) return &record_;
                definitions_->apply(record_, &generation_);
                if (every_record_) return &record_;
                continue;
            }
            if (!decoder_.error().empty() || !next_chunk()) {
                if (!decoder_.error().empty() && damage_.empty()) note_decoder_damage();
                return nullptr;
            }
        }
    }

    // From now on next() returns the definition and metadata records too (heapscope parse).
    void every_record() { every_record_ = true; }

    bool end_chunk_seen() const { return end_chunk_seen_; }  // the capture stopped cleanly
    const std::string& damage() const { return damage_; }    // empty if none was met
    bool cancelled() const { return cancelled_; }
    uint64_t bytes_done() const { return bytes_done_; }

  private:
    friend class CaptureReader;
    struct Prefetcher;
    Cursor();
    static bool is_event(format::RecordType type) {
        return type == format::RecordType::kAllocation || type == format::RecordType::kDeallocation ||
               type == format::RecordType::kMemory || type == format::RecordType::kCheckpoint ||
               type == format::RecordType::kLocation || type == format::RecordType::kObject;
    }
    // Moves to the next records chunk; false at the end of the pass.
    bool next_chunk();
    void note_decoder_damage();

    Definitions* definitions_ = nullptr;
    int fd_ = -1;
    std::unique_ptr<format::ChunkReader> chunks_;  // without prefetch
    std::unique_ptr<Prefetcher> prefetcher_;       // with it
    std::string payload_;
    format::RecordDecoder decoder_;
    bool weights_allowed_ = true;  // the file is format version 2 or later
    bool objects_allowed_ = true;  // 3 or later
    format::Record record_{};
    Progress progress_;
    uint64_t file_size_ = 0;
    uint64_t bytes_done_ = 0;
    uint32_t generation_ = 0;  // loaded objects in force at this point of the stream
    uint64_t chunk_offset_ = 0;  // where the chunk being decoded starts
    uint64_t chunk_number_ = 0;  // counted from 0, as the chunk reader counts
    uint64_t next_progress_ = 0;
    uint64_t progress_step_ = 0;
    bool finished_ = false;
    bool end_chunk_seen_ = false;
    bool cancelled_ = false;
    bool final_progress_sent_ = false;
    bool every_record_ = false;
    std::string damage_;
};

}  // namespace heapscope::read
