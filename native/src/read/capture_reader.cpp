#include "read/capture_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>

namespace heapscope::read {

namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr size_t kPrefetchDepth = 3;  // chunks decompressed ahead: bounded memory, enough to hide jitter

// An independent open file description of the file behind `fd` (its own
// offset), so that passes never disturb each other; `path` if /proc is missing.
int reopen(int fd, const std::string& path) {
    std::string self = "/proc/self/fd/" + std::to_string(fd);
    int fresh = ::open(self.c_str(), O_RDONLY | O_CLOEXEC);
    if (fresh < 0) fresh = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    return fresh;
}

}  // namespace

std::string damage_report(const std::string& chunk_error) {
    // The chunk reader says "damaged capture: chunk N at ..."; a damage
    // report is already about damage.
    constexpr std::string_view kPrefix = "damaged capture: ";
    std::string report = chunk_error.compare(0, kPrefix.size(), kPrefix) == 0 ? chunk_error.substr(kPrefix.size())
                                                                             : chunk_error;
    return report + "; the data before it was read";
}

std::unique_ptr<CaptureReader> CaptureReader::open(const std::string& path, OpenFailure* failure) {
    *failure = OpenFailure{};
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) {
        failure->kind = OpenError::kSystem;
        failure->error_number = errno;
        failure->message = path + ": " + std::strerror(errno);
        if (fd >= 0) ::close(fd);
        return nullptr;
    }
    if (S_ISDIR(st.st_mode)) {
        failure->kind = OpenError::kSystem;
        failure->error_number = EISDIR;
        failure->message = path + ": " + std::strerror(EISDIR);
        ::close(fd);
        return nullptr;
    }
    // A read error is the system's (OSError in Python); anything the chunk
    // reader rejects after a successful read is the file's (ValueError).
    char probe;
    if (::pread(fd, &probe, 1, 0) < 0) {
        failure->kind = OpenError::kSystem;
        failure->error_number = errno;
        failure->message = path + ": " + std::strerror(errno);
        ::close(fd);
        return nullptr;
    }
    format::FileHeader header;
    bool header_ok;
    {
        format::ChunkReader chunks(fd);
        header_ok = chunks.read_header(&header);
        if (!header_ok) {
            failure->kind = OpenError::kNotCapture;
            failure->message = path + ": " + chunks.error();
        }
    }
    if (!header_ok) {
        ::close(fd);
        return nullptr;
    }
    std::unique_ptr<CaptureReader> reader(new CaptureReader());
    reader->path_ = path;
    reader->fd_ = fd;
    reader->file_size_ = static_cast<uint64_t>(st.st_size);
    reader->header_ = header;
    return reader;
}

CaptureReader::~CaptureReader() {
    if (fd_ >= 0) ::close(fd_);
}

// Reads and decompresses chunks on its own thread, a few ahead of the
// consumer. Payload buffers go back and forth, so a steady pass allocates
// nothing.
struct CaptureReader::Cursor::Prefetcher {
    struct Item {
        format::ChunkReader::Status status;
        format::ChunkType type;
        std::string payload;
        std::string error;
        uint64_t start_offset;  // where the chunk starts
        uint64_t end_offset;    // bytes consumed once it was read
    };

    explicit Prefetcher(int fd) : chunks(fd) {}
    ~Prefetcher() {
        {
            std::lock_guard<std::mutex> lock(mutex);
            stop = true;
        }
        changed.notify_all();
        if (thread.joinable()) thread.join();
    }

    void start() {
        thread = std::thread([this] { run(); });
    }

    void run() {
        for (;;) {
            Item item;
            {
                std::unique_lock<std::mutex> lock(mutex);
                changed.wait(lock, [this] { return stop || ready.size() < kPrefetchDepth; });
                if (stop) return;
                if (!spare.empty()) {
                    item.payload = std::move(spare.back());
                    spare.pop_back();
                }
            }
            item.start_offset = chunks.offset();
            item.status = chunks.next(&item.type, &item.payload);
            item.end_offset = chunks.offset();
            if (item.status == format::ChunkReader::Status::kDamaged) item.error = chunks.error();
            bool last = item.status != format::ChunkReader::Status::kChunk || item.type == format::ChunkType::kEnd;
            {
                std::lock_guard<std::mutex> lock(mutex);
                ready.push_back(std::move(item));
            }
            changed.notify_all();
            if (last) return;
        }
    }

    // Blocks until the next item is ready; `*used` (the last payload) is
    // handed back for reuse.
    Item take(std::string* used) {
        std::unique_lock<std::mutex> lock(mutex);
        if (used->capacity() > 0) spare.push_back(std::move(*used));
        changed.wait(lock, [this] { return !ready.empty(); });
        Item item = std::move(ready.front());
        ready.pop_front();
        lock.unlock();
        changed.notify_all();
        return item;
    }

    format::ChunkReader chunks;  // used by the thread only, once started
    std::thread thread;
    std::mutex mutex;
    std::condition_variable changed;
    std::deque<Item> ready;
    std::vector<std::string> spare;
    bool stop = false;
};

std::unique_ptr<CaptureReader::Cursor> CaptureReader::start_pass(Progress progress, bool prefetch,
                                                                 std::string* error) {
    int fd = reopen(fd_, path_);
    if (fd < 0) {
        *error = path_ + ": " + std::strerror(errno);
        return nullptr;
    }
    std::unique_ptr<Cursor> cursor(new Cursor());
    cursor->fd_ = fd;
    cursor->definitions_ = &definitions_;
    cursor->weights_allowed_ = header_.version >= 2;
    cursor->objects_allowed_ = header_.version >= 3;
    cursor->progress_ = std::move(progress);
    // The size now: a capture still being written has grown since open().
    struct stat st {};
    cursor->file_size_ = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : file_size_;
    // About every 1% of the file, and at least every 16 MiB on huge files.
    cursor->progress_step_ = std::clamp<uint64_t>(cursor->file_size_ / 100, 1, 16 * kMiB);
    cursor->next_progress_ = cursor->progress_step_;
    format::FileHeader header;
    format::ChunkReader* chunks;
    if (prefetch) {
        cursor->prefetcher_ = std::make_unique<Cursor::Prefetcher>(fd);
        chunks = &cursor->prefetcher_->chunks;
    } else {
        cursor->chunks_ = std::make_unique<format::ChunkReader>(fd);
        chunks = cursor->chunks_.get();
    }
    if (!chunks->read_header(&header)) {
        *error = path_ + ": " + chunks->error();
        return nullptr;
    }
    cursor->bytes_done_ = chunks->offset();
    if (cursor->prefetcher_) cursor->prefetcher_->start();
    return cursor;
}

CaptureReader::Cursor::Cursor() : decoder_(std::string_view{}) {}

CaptureReader::Cursor::~Cursor() {
    prefetcher_.reset();  // joins its thread before the descriptor goes
    chunks_.reset();
    if (fd_ >= 0) ::close(fd_);
}

bool CaptureReader::Cursor::next_chunk() {
    while (!finished_) {
        format::ChunkReader::Status status;
        format::ChunkType type{};
        std::string error;
        if (prefetcher_) {
            Prefetcher::Item item = prefetcher_->take(&payload_);
            status = item.status;
            type = item.type;
            payload_ = std::move(item.payload);
            error = std::move(item.error);
            chunk_offset_ = item.start_offset;
            bytes_done_ = item.end_offset;
        } else {
            chunk_offset_ = chunks_->offset();
            status = chunks_->next(&type, &payload_);
            bytes_done_ = chunks_->offset();
            if (status == format::ChunkReader::Status::kDamaged) error = chunks_->error();
        }
        if (status == format::ChunkReader::Status::kEnd) {
            finished_ = true;
            break;
        }
        if (status == format::ChunkReader::Status::kDamaged) {
            damage_ = damage_report(error);
            finished_ = true;
            break;
        }
        ++chunk_number_;
        if (progress_ && bytes_done_ >= next_progress_) {
            next_progress_ = bytes_done_ + progress_step_;
            if (!progress_(bytes_done_, file_size_)) {
                cancelled_ = true;
                finished_ = true;
                break;
            }
        }
        if (type == format::ChunkType::kEnd) {
            end_chunk_seen_ = true;
            finished_ = true;  // nothing after the end chunk belongs to the capture
            break;
        }
        if (type != format::ChunkType::kRecords) continue;  // a later version's chunk: skip it
        decoder_ = format::RecordDecoder(payload_, weights_allowed_, objects_allowed_);
        return true;
    }
    if (progress_ && !cancelled_ && !final_progress_sent_) {
        final_progress_sent_ = true;
        progress_(bytes_done_, file_size_);  // the last word: how far the pass got
    }
    return false;
}

void CaptureReader::Cursor::note_decoder_damage() {
    damage_ = "chunk " + std::to_string(chunk_number_ - 1) + " at byte offset " + std::to_string(chunk_offset_) +
              ": " + decoder_.error() + "; the data before it was read";
    finished_ = true;
}

}  // namespace heapscope::read
