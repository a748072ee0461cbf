// The capture container: file header and checksummed chunks.
// docs/capture-format.md ("File header", "Chunks", "Damage") specifies the bytes.
//
//   file header, 40 bytes          chunk header, 28 bytes, then the stored payload
//   0  magic "HEAPSCOPE-CAPTURE"   0  magic "HSCK"
//      + NUL padding to 24 bytes   4  u8 type       5 u8 codec (0 stored, 1 zstd)
//   24 u32 version                 6  u16 reserved (0)
//   28 u8 format  29 u8 flags      8  u32 sequence number (0, 1, 2, ...)
//   30 u16 reserved 32 u32 reserved 12 u32 raw length   16 u32 stored length
//   36 u32 CRC32C of bytes 0..35   20 u32 CRC32C of the stored payload
//                                  24 u32 CRC32C of bytes 0..23
// Integers are little-endian.
#include "format/chunk_io.h"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>

#include "format/crc32c.h"

namespace heapscope::format {

namespace {

constexpr char kFileMagic[24] = "HEAPSCOPE-CAPTURE";  // the rest of the 24 bytes are NUL
constexpr size_t kFileMagicBytes = sizeof kFileMagic;
constexpr uint32_t kChunkMagic = 0x4b435348;  // "HSCK" in file order
constexpr uint32_t kJournalMagic = 0x4c4a5348;  // "HSJL" in file order
constexpr uint8_t kCodecStored = 0;
constexpr uint8_t kCodecZstd = 1;
constexpr uint8_t kFlagNativeTraces = 1;
constexpr uint8_t kFlagTracePythonAllocators = 2;

void put_u16(uint8_t* p, uint16_t v) {
    p[0] = static_cast<uint8_t>(v);
    p[1] = static_cast<uint8_t>(v >> 8);
}
void put_u32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get_u32(const uint8_t* p) {
    return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

std::string errno_text(const char* what, int error) { return std::string(what) + ": " + std::strerror(error); }

enum class HeaderParse { kOk, kNeedMore, kBad };

// Checks a file header given the first `available` bytes of the stream. When
// `available` is all there will ever be (a file), kNeedMore means truncated.
// The magic and the version are checked before the checksum: a newer version
// may lay out the rest differently, and deserves its own message.
HeaderParse parse_file_header(const uint8_t* data, size_t available, FileHeader* header, std::string* error) {
    const size_t magic_seen = available < kFileMagicBytes ? available : kFileMagicBytes;
    if (std::memcmp(data, kFileMagic, magic_seen) != 0) {
        *error = "not a heapscope capture";
        return HeaderParse::kBad;
    }
    if (available < 28) return HeaderParse::kNeedMore;
    const uint32_t version = get_u32(data + 24);
    if (version == 0) {
        *error = "not a heapscope capture (format version 0)";
        return HeaderParse::kBad;
    }
    if (version > kFormatVersion) {
        *error = "capture format version " + std::to_string(version) + " is newer than this heapscope (reads up to " +
                 std::to_string(kFormatVersion) + ")";
        return HeaderParse::kBad;
    }
    if (available < kFileHeaderBytes) return HeaderParse::kNeedMore;
    if (crc32c(data, 36) != get_u32(data + 36)) {
        *error = "the capture's file header is damaged (checksum mismatch)";
        return HeaderParse::kBad;
    }
    if (data[28] > static_cast<uint8_t>(FileFormat::kAggregatedAllocations)) {
        *error = "the capture's file header names an unknown file format " + std::to_string(data[28]);
        return HeaderParse::kBad;
    }
    if (data[29] & ~(kFlagNativeTraces | kFlagTracePythonAllocators)) {
        *error = "the capture's file header has unknown flags";
        return HeaderParse::kBad;
    }
    header->version = version;
    header->format = static_cast<FileFormat>(data[28]);
    header->native_traces = data[29] & kFlagNativeTraces;
    header->trace_python_allocators = data[29] & kFlagTracePythonAllocators;
    return HeaderParse::kOk;
}

struct ChunkHeader {
    ChunkType type;
    uint8_t codec;
    uint32_t raw_length;
    uint32_t stored_length;
    uint32_t payload_crc;
};

// Checks a whole chunk header; false with `*what` on damage.
bool parse_chunk_header(const uint8_t* h, uint32_t expected_sequence, ChunkHeader* out, std::string* what) {
    if (get_u32(h) != kChunkMagic) {
        *what = "no chunk magic";
        return false;
    }
    if (crc32c(h, 24) != get_u32(h + 24)) {
        *what = "chunk header checksum mismatch";
        return false;
    }
    // A header whose checksum is right but whose fields make no sense was
    // written by a broken writer: still damage, said precisely.
    const uint8_t type = h[4];
    if (type != static_cast<uint8_t>(ChunkType::kRecords) && type != static_cast<uint8_t>(ChunkType::kEnd)) {
        *what = "unknown chunk type " + std::to_string(type);
        return false;
    }
    out->type = static_cast<ChunkType>(type);
    out->codec = h[5];
    if (out->codec != kCodecStored && out->codec != kCodecZstd) {
        *what = "unknown chunk codec " + std::to_string(out->codec);
        return false;
    }
    const uint32_t sequence = get_u32(h + 8);
    if (sequence != expected_sequence) {
        *what = "sequence number " + std::to_string(sequence) + " where " + std::to_string(expected_sequence) +
                " was expected (a chunk is missing or repeated)";
        return false;
    }
    out->raw_length = get_u32(h + 12);
    out->stored_length = get_u32(h + 16);
    out->payload_crc = get_u32(h + 20);
    if (out->raw_length > kMaxChunkBytes || out->stored_length > kMaxChunkBytes) {
        *what = "absurd chunk length";
        return false;
    }
    if (out->codec == kCodecStored && out->stored_length != out->raw_length) {
        *what = "stored chunk whose lengths differ";
        return false;
    }
    if (out->type == ChunkType::kEnd && out->raw_length != 0) {
        *what = "end chunk with a payload";
        return false;
    }
    return true;
}

// Checks and decompresses a chunk's stored bytes into `*payload`.
bool decode_payload(ZSTD_DCtx* dctx, const ChunkHeader& h, const uint8_t* stored, std::string* payload,
                    std::string* what) {
    if (crc32c(stored, h.stored_length) != h.payload_crc) {
        *what = "payload checksum mismatch";
        return false;
    }
    if (h.codec == kCodecStored) {
        payload->assign(reinterpret_cast<const char*>(stored), h.stored_length);
        return true;
    }
    payload->resize(h.raw_length);
    const size_t n = ZSTD_decompressDCtx(dctx, payload->data(), h.raw_length, stored, h.stored_length);
    if (ZSTD_isError(n)) {
        *what = std::string("decompression failed: ") + ZSTD_getErrorName(n);
        return false;
    }
    if (n != h.raw_length) {
        *what = "decompressed length differs from the header's";
        return false;
    }
    return true;
}

std::string damage_text(uint32_t chunk, uint64_t offset, const std::string& what) {
    return "damaged capture: chunk " + std::to_string(chunk) + " at byte offset " + std::to_string(offset) + ": " +
           what;
}

// Reads up to `size` bytes, stopping early only at end of file.
ssize_t read_fully(int fd, void* buffer, size_t size, int* error) {
    size_t done = 0;
    while (done < size) {
        const ssize_t n = ::read(fd, static_cast<char*>(buffer) + done, size - done);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            *error = errno;
            return -1;
        }
        done += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(done);
}

}  // namespace

// ---------------------------------------------------------------------------

// Journal slot header (kJournalHeaderBytes, at a multiple of kJournalAlign):
//   0 magic "HSJL"  4 u32 reserved (0)  8 u32 sequence number
//   12 u32 capacity (payload bytes)  16 u64 reserved (0)
//   24 u32 CRC32C of bytes 0..23  28 u32 reserved
//   32 u64 committed length (not in the CRC)  40..63 reserved (0)
void init_journal_slot(char* slot, uint32_t sequence, uint32_t capacity) {
    uint8_t h[kJournalHeaderBytes] = {};
    put_u32(h, kJournalMagic);
    put_u32(h + 8, sequence);
    put_u32(h + 12, capacity);
    put_u32(h + 24, crc32c(h, 24));
    // The magic goes last: a process that dies part-way leaves a header whose
    // magic or checksum is wrong, never a valid one with a stale length.
    volatile uint32_t* magic = reinterpret_cast<volatile uint32_t*>(slot);
    *magic = 0;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    std::memcpy(slot + 4, h + 4, kJournalHeaderBytes - 4);
    publish_journal(reinterpret_cast<uint64_t*>(slot + kJournalCommittedOffset), 0);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    *magic = get_u32(h);  // little-endian machines: the same bytes
}

ChunkWriter::ChunkWriter(int fd, int compression_level) : fd_(fd), level_(compression_level) {
    struct stat st;
    if (::fstat(fd, &st) == 0) {
        is_socket_ = S_ISSOCK(st.st_mode);
        is_fifo_ = S_ISFIFO(st.st_mode);
    }
    if (level_ > ZSTD_maxCLevel()) level_ = ZSTD_maxCLevel();
}

ChunkWriter::~ChunkWriter() { ZSTD_freeCCtx(static_cast<ZSTD_CCtx*>(zstd_)); }

void ChunkWriter::set_positional(uint64_t offset) {
    positional_ = true;
    position_ = offset;
}

// Writes both pieces whole, or fails with error_ set. Never raises SIGPIPE.
bool ChunkWriter::write_all(const void* first, size_t first_size, const void* second, size_t second_size) {
    if (failed()) return false;
    struct iovec iov[2] = {{const_cast<void*>(first), first_size}, {const_cast<void*>(second), second_size}};
    int count = second_size > 0 ? 2 : 1;
    struct iovec* next = iov;

    // A pipe whose reader went away raises SIGPIPE on write: block it on this
    // thread for the write, and consume the one our write left pending.
    sigset_t pipe_set, old_set;
    bool was_pending = false;
    if (is_fifo_) {
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        sigset_t pending;
        sigpending(&pending);
        was_pending = sigismember(&pending, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    }
    int error = 0;
    while (count > 0) {
        ssize_t n;
        if (positional_) {
            n = ::pwritev(fd_, next, count, static_cast<off_t>(position_));
        } else if (is_socket_) {
            struct msghdr message {};
            message.msg_iov = next;
            message.msg_iovlen = static_cast<size_t>(count);
            n = ::sendmsg(fd_, &message, MSG_NOSIGNAL);
        } else {
            n = ::writev(fd_, next, count);
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd p = {fd_, POLLOUT, 0};
                ::poll(&p, 1, -1);
                continue;
            }
            error = errno;
            break;
        }
        bytes_written_ += static_cast<uint64_t>(n);
        position_ += static_cast<uint64_t>(n);
        size_t left = static_cast<size_t>(n);
        while (count > 0 && left >= next->iov_len) {
            left -= next->iov_len;
            ++next;
            --count;
        }
        if (count > 0) {
            next->iov_base = static_cast<char*>(next->iov_base) + left;
            next->iov_len -= left;
        }
    }
    if (is_fifo_) {
        if (error == EPIPE && !was_pending) {
            const struct timespec zero = {0, 0};
            sigtimedwait(&pipe_set, nullptr, &zero);
        }
        pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
    }
    if (error != 0) {
        error_number_ = error;
        error_ = is_socket_ && (error == EPIPE || error == ECONNRESET)
                     ? "the live viewer disconnected (" + std::string(std::strerror(error)) + ")"
                     : errno_text("writing the capture failed", error);
        return false;
    }
    return true;
}

bool ChunkWriter::write_header(const FileHeader& header) {
    uint8_t h[kFileHeaderBytes] = {};
    std::memcpy(h, kFileMagic, kFileMagicBytes);
    put_u32(h + 24, header.version);
    h[28] = static_cast<uint8_t>(header.format);
    h[29] = static_cast<uint8_t>((header.native_traces ? kFlagNativeTraces : 0) |
                                 (header.trace_python_allocators ? kFlagTracePythonAllocators : 0));
    put_u32(h + 36, crc32c(h, 36));
    return write_all(h, sizeof h, nullptr, 0);
}

bool ChunkWriter::write_chunk(ChunkType type, std::string_view payload) {
    if (failed()) return false;
    if (payload.size() > kMaxChunkBytes) {
        error_ = "a chunk exceeds the format's largest size";
        return false;
    }
    const void* stored = payload.data();
    size_t stored_size = payload.size();
    uint8_t codec = kCodecStored;
    if (level_ != 0 && !payload.empty()) {
        if (zstd_ == nullptr) zstd_ = ZSTD_createCCtx();
        if (zstd_ == nullptr) {
            error_ = "cannot create a zstd context (out of memory)";
            return false;
        }
        scratch_.resize(ZSTD_compressBound(payload.size()));
        const size_t n = ZSTD_compressCCtx(static_cast<ZSTD_CCtx*>(zstd_), scratch_.data(), scratch_.size(),
                                           payload.data(), payload.size(), level_);
        if (ZSTD_isError(n)) {
            error_ = std::string("compression failed: ") + ZSTD_getErrorName(n);
            return false;
        }
        if (n < payload.size()) {  // incompressible payloads are stored as they are
            stored = scratch_.data();
            stored_size = n;
            codec = kCodecZstd;
        }
    }
    uint8_t h[kChunkHeaderBytes] = {};
    put_u32(h, kChunkMagic);
    h[4] = static_cast<uint8_t>(type);
    h[5] = codec;
    put_u16(h + 6, 0);
    put_u32(h + 8, sequence_);
    put_u32(h + 12, static_cast<uint32_t>(payload.size()));
    put_u32(h + 16, static_cast<uint32_t>(stored_size));
    put_u32(h + 20, crc32c(stored, stored_size));
    put_u32(h + 24, crc32c(h, 24));
    if (!write_all(h, sizeof h, stored, stored_size)) return false;
    ++sequence_;
    return true;
}

// ---------------------------------------------------------------------------

ChunkReader::ChunkReader(int fd) : fd_(fd) {}
ChunkReader::~ChunkReader() { ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(zstd_)); }

bool ChunkReader::read_header(FileHeader* header) {
    uint8_t h[kFileHeaderBytes];
    int read_error = 0;
    const ssize_t n = read_fully(fd_, h, sizeof h, &read_error);
    if (n < 0) {
        error_ = errno_text("cannot read the capture", read_error);
        return false;
    }
    if (n == 0) {
        error_ = "not a heapscope capture (empty file)";
        return false;
    }
    offset_ = static_cast<uint64_t>(n);
    switch (parse_file_header(h, static_cast<size_t>(n), header, &error_)) {
        case HeaderParse::kOk:
            header_read_ = true;
            return true;
        case HeaderParse::kNeedMore:
            error_ = "damaged capture: the file header is cut short (" + std::to_string(n) + " of " +
                     std::to_string(kFileHeaderBytes) + " bytes)";
            return false;
        case HeaderParse::kBad:
            return false;
    }
    return false;
}

ChunkReader::Status ChunkReader::damaged(uint64_t chunk_offset, const std::string& what) {
    damaged_ = true;
    error_ = damage_text(sequence_, chunk_offset, what);
    return Status::kDamaged;
}

ChunkReader::Status ChunkReader::next(ChunkType* type, std::string* payload) {
    if (damaged_) return Status::kDamaged;
    if (ended_) return Status::kEnd;
    if (!header_read_) {
        error_ = "read_header() must succeed before next()";
        damaged_ = true;
        return Status::kDamaged;
    }
    if (journal_checked_) return next_from_journal(type, payload);
    const uint64_t chunk_offset = offset_;
    // Where the chain of chunks stops: the journal may go on from there.
    auto chain_stops = [&](const std::string& what) {
        if (find_journal(chunk_offset)) return next_from_journal(type, payload);
        if (what.empty()) return Status::kEnd;
        // The writer died while writing its last chunks (before truncating
        // the journal away): what follows is the journal's remains, not damage.
        if (finishing_ended_) {
            offset_ = chunk_offset;  // where a chunk appended now would go
            return Status::kEnd;
        }
        return damaged(chunk_offset, what);
    };
    uint8_t h[kChunkHeaderBytes];
    int read_error = 0;
    ssize_t n = read_fully(fd_, h, sizeof h, &read_error);
    if (n < 0) return damaged(chunk_offset, errno_text("read error", read_error));
    if (n == 0) return chain_stops("");
    offset_ += static_cast<uint64_t>(n);
    if (static_cast<size_t>(n) < sizeof h) {
        return chain_stops("the file ends inside the chunk header (" + std::to_string(n) + " of " +
                           std::to_string(kChunkHeaderBytes) + " bytes)");
    }
    ChunkHeader header;
    std::string what;
    if (!parse_chunk_header(h, sequence_, &header, &what)) return chain_stops(what);
    stored_.resize(header.stored_length);
    n = read_fully(fd_, stored_.data(), header.stored_length, &read_error);
    if (n < 0) return damaged(chunk_offset, errno_text("read error", read_error));
    offset_ += static_cast<uint64_t>(n);
    if (static_cast<size_t>(n) < header.stored_length) {
        return chain_stops("the file ends inside the chunk payload (" + std::to_string(n) + " of " +
                           std::to_string(header.stored_length) + " bytes)");
    }
    if (header.codec == kCodecZstd && zstd_ == nullptr) {
        zstd_ = ZSTD_createDCtx();
        if (zstd_ == nullptr) return damaged(chunk_offset, "cannot create a zstd context (out of memory)");
    }
    if (!decode_payload(static_cast<ZSTD_DCtx*>(zstd_), header, reinterpret_cast<const uint8_t*>(stored_.data()),
                        payload, &what)) {
        return chain_stops(what);
    }
    // A chunk buffer a hundred times the usual size is not kept for the rest of the file.
    if (stored_.capacity() > (size_t{64} << 20)) std::string().swap(stored_);
    ++sequence_;
    *type = header.type;
    if (header.type == ChunkType::kEnd) ended_ = true;
    return Status::kChunk;
}

// Journal slots lie past the last chunk, at multiples of kJournalAlign. The
// scan reads the rest of the file (its last GiB at most) a block at a time.
bool ChunkReader::find_journal(uint64_t chunk_offset) {
    journal_checked_ = true;
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) return false;
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    constexpr uint64_t kScanLimit = uint64_t{1} << 30;
    uint64_t from = (chunk_offset + kJournalAlign - 1) / kJournalAlign * kJournalAlign;
    if (size > kScanLimit && from < size - kScanLimit) from = (size - kScanLimit) / kJournalAlign * kJournalAlign;
    std::vector<JournalSlot> found;
    std::string block;
    constexpr size_t kBlock = size_t{1} << 20;  // a multiple of kJournalAlign
    for (uint64_t at = from; at + kJournalHeaderBytes <= size; at += kBlock) {
        block.resize(static_cast<size_t>(std::min<uint64_t>(kBlock, size - at)));
        const ssize_t n = ::pread(fd_, block.data(), block.size(), static_cast<off_t>(at));
        if (n <= 0) break;
        const uint8_t* data = reinterpret_cast<const uint8_t*>(block.data());
        for (size_t pos = 0; pos + kJournalHeaderBytes <= static_cast<size_t>(n); pos += kJournalAlign) {
            const uint8_t* h = data + pos;
            if (get_u32(h) != kJournalMagic || crc32c(h, 24) != get_u32(h + 24)) continue;
            uint64_t committed = 0;
            for (int i = 7; i >= 0; --i) committed = committed << 8 | h[kJournalCommittedOffset + i];
            const uint32_t capacity = get_u32(h + 12);
            found.push_back(JournalSlot{get_u32(h + 8), at + pos, committed, capacity,
                                        get_u32(h + kJournalFinishingOffset) == kJournalFinishingMark});
        }
    }
    // By sequence number; of two slots with the same one (a stale copy), the fuller.
    std::sort(found.begin(), found.end(), [](const JournalSlot& a, const JournalSlot& b) {
        return a.sequence != b.sequence ? a.sequence < b.sequence : a.committed > b.committed;
    });
    journal_file_size_ = size;
    finishing_ended_ = !found.empty() && found.back().sequence < sequence_ &&
                       std::any_of(found.begin(), found.end(), [&](const JournalSlot& slot) {
                           return slot.sequence == found.back().sequence && slot.finishing;
                       });
    uint32_t expected = sequence_;
    for (const JournalSlot& slot : found) {
        if (slot.sequence < expected) continue;  // its chunk was written (or a duplicate)
        if (slot.sequence != expected) break;     // a gap: nothing after it follows on
        journal_.push_back(slot);
        ++expected;
    }
    return !journal_.empty();
}

ChunkReader::Status ChunkReader::next_from_journal(ChunkType* type, std::string* payload) {
    if (journal_next_ >= journal_.size()) {
        if (!journal_damage_.empty()) {
            damaged_ = true;
            error_ = journal_damage_;
            return Status::kDamaged;
        }
        return Status::kEnd;
    }
    const JournalSlot slot = journal_[journal_next_++];
    if (slot.committed > slot.capacity || slot.committed > kMaxChunkBytes) {
        return damaged(slot.offset, "journal slot whose committed length exceeds its capacity");
    }
    payload->resize(static_cast<size_t>(slot.committed));
    size_t done = 0;
    while (done < payload->size()) {
        const ssize_t n = ::pread(fd_, payload->data() + done, payload->size() - done,
                                  static_cast<off_t>(slot.offset + kJournalHeaderBytes + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += static_cast<size_t>(n);
    }
    // A writer extends the file past every slot it makes: a file that ends
    // inside one was cut short. What is there is returned (its last record
    // may be torn, which the decoder reports), then the damage.
    const uint64_t slot_end = slot.offset + kJournalHeaderBytes + slot.capacity;
    if (done < payload->size() || slot_end > journal_file_size_) {
        journal_damage_ = damage_text(slot.sequence, slot.offset,
                                      "the file ends inside the journal slot (" +
                                          std::to_string(journal_file_size_ - std::min(journal_file_size_, slot.offset)) +
                                          " of " + std::to_string(kJournalHeaderBytes + slot.capacity) + " bytes)");
        payload->resize(done);
        journal_.resize(journal_next_);
    }
    offset_ = slot.offset + kJournalHeaderBytes + done;
    sequence_ = slot.sequence + 1;
    *type = ChunkType::kRecords;
    return Status::kChunk;
}

// ---------------------------------------------------------------------------

ChunkParser::ChunkParser() = default;
ChunkParser::~ChunkParser() { ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(zstd_)); }

void ChunkParser::feed(std::string_view bytes) {
    if (damaged_ || ended_) return;
    // Drop what was consumed before growing: memory stays about one chunk.
    if (pos_ > 0 && pos_ >= buffer_.size() / 2) {
        buffer_.erase(0, pos_);
        pos_ = 0;
    }
    buffer_.append(bytes.data(), bytes.size());
}

ChunkParser::Status ChunkParser::damaged(uint64_t chunk_offset, const std::string& what) {
    damaged_ = true;
    error_ = damage_text(sequence_, chunk_offset, what);
    buffer_.clear();
    pos_ = 0;
    return Status::kDamaged;
}

ChunkParser::Status ChunkParser::next(FileHeader* header, ChunkType* type, std::string* payload) {
    if (damaged_) return Status::kDamaged;
    if (ended_) return Status::kNeedMore;
    const uint8_t* data = reinterpret_cast<const uint8_t*>(buffer_.data()) + pos_;
    const size_t available = buffer_.size() - pos_;
    if (!have_header_) {
        if (available == 0) return Status::kNeedMore;
        switch (parse_file_header(data, available, header, &error_)) {
            case HeaderParse::kNeedMore:
                return Status::kNeedMore;
            case HeaderParse::kBad:
                damaged_ = true;
                return Status::kDamaged;
            case HeaderParse::kOk:
                break;
        }
        have_header_ = true;
        pos_ += kFileHeaderBytes;
        offset_ += kFileHeaderBytes;
        return Status::kHeader;
    }
    if (available < kChunkHeaderBytes) return Status::kNeedMore;
    ChunkHeader h;
    std::string what;
    if (!parse_chunk_header(data, sequence_, &h, &what)) return damaged(offset_, what);
    if (available - kChunkHeaderBytes < h.stored_length) return Status::kNeedMore;
    if (h.codec == kCodecZstd && zstd_ == nullptr) {
        zstd_ = ZSTD_createDCtx();
        if (zstd_ == nullptr) return damaged(offset_, "cannot create a zstd context (out of memory)");
    }
    if (!decode_payload(static_cast<ZSTD_DCtx*>(zstd_), h, data + kChunkHeaderBytes, payload, &what)) {
        return damaged(offset_, what);
    }
    const size_t consumed = kChunkHeaderBytes + h.stored_length;
    pos_ += consumed;
    offset_ += consumed;
    ++sequence_;
    *type = h.type;
    if (h.type == ChunkType::kEnd) {
        ended_ = true;
        buffer_.clear();
        pos_ = 0;
    }
    return Status::kChunk;
}

}  // namespace heapscope::format
