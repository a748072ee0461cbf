// The capture file's container: a fixed header, then chunks.
//
// Every chunk carries its type, its lengths, a checksum of its stored bytes
// and a sequence number, so a reader can read a file up to the first damaged
// or missing chunk and say exactly where that is. Chunks are compressed with
// zstd unless the writer was asked not to. docs/capture-format.md has the
// byte layout. Never calls Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace heapscope::format {

// 2 added the Weight state token (sampled captures); a version 2 reader
// reads version 1 files unchanged. 3 added the Object record
// (track_object_lifetimes); a version 3 reader reads 1 and 2 unchanged.
// A writer stamps the lowest version its records need.
inline constexpr uint32_t kFormatVersion = 3;
// Byte sizes of the fixed parts (docs/capture-format.md has their layout).
inline constexpr size_t kFileHeaderBytes = 40;
inline constexpr size_t kChunkHeaderBytes = 28;
// The largest chunk payload, before or after compression: a length above it
// is damage, and readers never allocate more than this for one chunk.
inline constexpr size_t kMaxChunkBytes = size_t{1} << 28;

// Journal slots (docs/capture-format.md, "Journal"): where a writer to a
// regular file encodes records as they happen, in a window of the file it
// maps shared, so that a process killed at any moment leaves them in the
// file. Each slot holds the raw payload of one chunk-to-be (its sequence
// number); once that chunk is written the slot is dead. Slots start at
// offsets that are multiples of kJournalAlign, past the last chunk.
inline constexpr size_t kJournalHeaderBytes = 64;
inline constexpr size_t kJournalAlign = 4096;
// Offset of the committed length in a slot header: a little-endian u64, the
// payload bytes that hold whole records, stored (8-byte aligned, so in one
// piece) after each record is complete. Not covered by the header checksum.
inline constexpr size_t kJournalCommittedOffset = 32;

// Writes a slot's header into `slot` (kJournalHeaderBytes, 8-byte aligned)
// with a committed length of 0, in an order that leaves either the previous
// header or a header whose checksum fails if the process dies part-way.
void init_journal_slot(char* slot, uint32_t sequence, uint32_t capacity);
// Publishes `committed` payload bytes of the slot whose header word is `word`.
inline void publish_journal(uint64_t* word, uint64_t committed) {
    __atomic_store_n(word, committed, __ATOMIC_RELEASE);  // after the record's bytes, in program order
}
// Offset of the finishing mark (a little-endian u32, not covered by the
// checksum): the writer stores kJournalFinishingMark in its last slot before
// it writes the last chunks. A capture whose chunks stop where every slot was
// already read as a chunk, the last one so marked, was killed while
// finishing: not finished, not damaged.
inline constexpr size_t kJournalFinishingOffset = 40;
inline constexpr uint32_t kJournalFinishingMark = 0x4e465348;  // "HSFN" in file order
inline void mark_journal_finishing(char* slot) {
    __atomic_store_n(reinterpret_cast<uint32_t*>(slot + kJournalFinishingOffset), kJournalFinishingMark,
                     __ATOMIC_RELEASE);
}

enum class FileFormat : uint8_t { kAllAllocations = 0, kAggregatedAllocations = 1 };

enum class ChunkType : uint8_t {
    kRecords = 1,  // a RecordEncoder payload
    kEnd = 2,      // the last chunk of a capture that stopped cleanly (empty payload)
};

struct FileHeader {
    uint32_t version = kFormatVersion;
    FileFormat format = FileFormat::kAllAllocations;
    bool native_traces = false;
    bool trace_python_allocators = false;
};

// Writes a capture to a file descriptor (a file or a connected socket: it
// never seeks). Not thread-safe.
class ChunkWriter {
  public:
    // `compression_level` 0 stores chunks uncompressed.
    ChunkWriter(int fd, int compression_level);
    // Writes at explicit offsets from `offset` on (pwrite) instead of at the
    // descriptor's position: a regular file whose tail holds journal slots.
    void set_positional(uint64_t offset);
    uint64_t position() const { return position_; }  // positional: where the next chunk goes
    uint32_t next_sequence() const { return sequence_; }
    void set_next_sequence(uint32_t sequence) { sequence_ = sequence; }  // appending to a capture
    ~ChunkWriter();
    ChunkWriter(const ChunkWriter&) = delete;
    ChunkWriter& operator=(const ChunkWriter&) = delete;
    // false on a write error (then error() says which); the descriptor is not closed.
    bool write_header(const FileHeader& header);
    bool write_chunk(ChunkType type, std::string_view payload);
    const std::string& error() const { return error_; }
    int error_number() const { return error_number_; }  // errno of a failed write, else 0
    uint64_t bytes_written() const { return bytes_written_; }

    // True after a failed write: every later write fails at once.
    bool failed() const { return !error_.empty(); }

  private:
    bool write_all(const void* first, size_t first_size, const void* second, size_t second_size);
    int fd_;
    int level_;
    bool is_socket_ = false;  // send(MSG_NOSIGNAL): a closed peer gives EPIPE, not SIGPIPE
    bool is_fifo_ = false;    // SIGPIPE blocked around the write, for the same reason
    bool positional_ = false;
    uint64_t position_ = 0;
    uint32_t sequence_ = 0;
    uint64_t bytes_written_ = 0;
    std::string scratch_;
    void* zstd_ = nullptr;  // ZSTD_CCtx*
    std::string error_;
    int error_number_ = 0;
};

// Reads a capture from a file descriptor, streaming: memory is bounded by the
// largest chunk, whatever the file's size.
class ChunkReader {
  public:
    explicit ChunkReader(int fd);
    ~ChunkReader();
    ChunkReader(const ChunkReader&) = delete;
    ChunkReader& operator=(const ChunkReader&) = delete;
    // Reads and checks the file header. False if the file is not a capture,
    // or has a version this reader does not know (error() says which).
    bool read_header(FileHeader* header);
    enum class Status { kChunk, kEnd, kDamaged };
    // The next chunk's decompressed payload. kEnd at a clean end of data
    // (the file simply ends after a whole chunk, or the kEnd chunk was
    // returned: nothing after it is read); kDamaged on a bad checksum, a torn
    // chunk, a bad length, an out-of-order sequence number or a decompression
    // error: error() then names the chunk's number and byte offset. Nothing
    // is read past damage. A capture without a kEnd chunk stopped uncleanly
    // (the process was killed) but is readable up to its last chunk, and
    // then through the journal slots that go on from it: where the chain
    // stops (at the end of the file or at a chunk torn by the kill), slots
    // holding the next sequence numbers are returned as stored records
    // chunks, and a torn chunk they replace is not damage. A chain that
    // stops where every slot in the file was already read as a chunk, the
    // last one marked finishing (the writer died while writing its last
    // chunks), ends there too, at kEnd: not finished.
    Status next(ChunkType* type, std::string* payload);
    const std::string& error() const { return error_; }
    uint64_t offset() const { return offset_; }  // bytes consumed so far
    // After kEnd: whether the last chunks came from journal slots, and the
    // sequence number a chunk (or slot) appended now would need.
    bool read_journal() const { return !journal_.empty(); }
    uint32_t next_sequence() const { return sequence_; }

  private:
    Status damaged(uint64_t chunk_offset, const std::string& what);
    // The chain of chunks stopped at `chunk_offset` (the file ends there, or
    // the chunk there is damaged): true if journal slots go on from the
    // expected sequence number (then next() returns them).
    bool find_journal(uint64_t chunk_offset);
    Status next_from_journal(ChunkType* type, std::string* payload);
    struct JournalSlot {
        uint32_t sequence;
        uint64_t offset;
        uint64_t committed;
        uint32_t capacity;
        bool finishing;  // marked as the writer's last slot
    };
    int fd_;
    uint64_t offset_ = 0;
    uint32_t sequence_ = 0;
    bool journal_checked_ = false;
    std::vector<JournalSlot> journal_;  // sorted by sequence, from the expected one on, without gaps
    size_t journal_next_ = 0;
    uint64_t journal_file_size_ = 0;
    std::string journal_damage_;        // reported after the slot that the file cuts short
    bool finishing_ended_ = false;      // every slot found was read as a chunk, the last one marked finishing
    bool header_read_ = false;
    bool ended_ = false;    // the end chunk was read: nothing after it is read
    bool damaged_ = false;  // nothing after damage is read
    std::string stored_;
    void* zstd_ = nullptr;  // ZSTD_DCtx*
    std::string error_;
};

// The same decoding for bytes that arrive piecemeal (a live socket): feed
// whatever was received, then take whole chunks out. The file header is
// expected first.
class ChunkParser {
  public:
    ChunkParser();
    ~ChunkParser();
    ChunkParser(const ChunkParser&) = delete;
    ChunkParser& operator=(const ChunkParser&) = delete;
    void feed(std::string_view bytes);
    enum class Status { kHeader, kChunk, kNeedMore, kDamaged };
    // kHeader once, when the header is complete (*header filled); then
    // kChunk per whole chunk; kNeedMore until more bytes are fed (and for
    // ever after the kEnd chunk); kDamaged (error() says why, with the same
    // messages as ChunkReader) on bad bytes, after which nothing more is parsed.
    Status next(FileHeader* header, ChunkType* type, std::string* payload);
    const std::string& error() const { return error_; }

    uint64_t offset() const { return offset_; }  // stream bytes consumed so far

  private:
    Status damaged(uint64_t chunk_offset, const std::string& what);
    std::string buffer_;
    size_t pos_ = 0;
    uint64_t offset_ = 0;
    bool have_header_ = false;
    bool ended_ = false;  // the end chunk was parsed: later bytes are ignored
    bool damaged_ = false;
    uint32_t sequence_ = 0;
    void* zstd_ = nullptr;  // ZSTD_DCtx*
    std::string error_;
};

}  // namespace heapscope::format
