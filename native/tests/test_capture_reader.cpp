// The capture reader and its analyses against ground truth: captures are
// written with the real encoder and chunk writer from known events, and
// every report is checked against a brute-force replay of the same events.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "analysis/analyses.h"
#include "analysis/capture_file.h"
#include "read/capture_reader.h"
#include "analysis/capture_stream.h"
#include "model/high_water_mark.h"
#include "common/loaded_object.h"
#include "format/chunk_io.h"
#include "format/records.h"

namespace heapscope {
// Readable keys in failure messages.
void PrintTo(const LocationKey& k, std::ostream* os) {
    *os << "{thread " << k.thread << ", py " << k.python_node << ", native " << k.native_node << ", domain "
        << k.domain << ", allocator " << int(static_cast<uint8_t>(k.allocator)) << "}";
}
}  // namespace heapscope

namespace {

using namespace heapscope;
using namespace heapscope::analysis;
using namespace heapscope::read;
using format::AllocationRecord;
using format::DeallocationRecord;
using format::FileFormat;

// ---------------------------------------------------------------------------
// Writing captures

// One event of a synthetic capture, in file order.
struct Event {
    enum Kind { kAlloc, kFree, kMemory } kind;
    AllocationRecord alloc{};
    DeallocationRecord free{};
    format::MemoryRecord memory{};
};

std::string temp_path(const std::string& name) {
    return (std::filesystem::temp_directory_path() /
            ("heapscope_test_" + std::to_string(::getpid()) + "_" + name))
        .string();
}

// Writes records into chunks of about `records_per_chunk` records.
class CaptureBuilder {
  public:
    CaptureBuilder(const std::string& path, FileFormat file_format, int level = 3, size_t records_per_chunk = 7)
        : path_(path), records_per_chunk_(records_per_chunk) {
        fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        EXPECT_GE(fd_, 0);
        writer_ = std::make_unique<format::ChunkWriter>(fd_, level);
        format::FileHeader header;
        header.format = file_format;
        header.native_traces = true;
        EXPECT_TRUE(writer_->write_header(header));
    }
    ~CaptureBuilder() { close(); }

    format::RecordEncoder& encoder() { return encoder_; }
    // Counts a record written through encoder(); flushes a full chunk.
    void wrote() {
        if (++in_chunk_ >= records_per_chunk_) flush();
    }
    void flush() {
        if (encoder_.size() == 0) return;
        EXPECT_TRUE(writer_->write_chunk(format::ChunkType::kRecords, encoder_.bytes()));
        chunk_ends_.push_back(writer_->bytes_written());
        encoder_.reset();
        in_chunk_ = 0;
    }
    void end() {
        flush();
        EXPECT_TRUE(writer_->write_chunk(format::ChunkType::kEnd, {}));
    }
    void close() {
        if (fd_ < 0) return;
        flush();
        writer_.reset();
        ::close(fd_);
        fd_ = -1;
    }
    // File offsets at which each records chunk ends.
    const std::vector<uint64_t>& chunk_ends() const { return chunk_ends_; }

    void events(const std::vector<Event>& events) {
        for (const Event& e : events) {
            switch (e.kind) {
                case Event::kAlloc:
                    encoder_.allocation(e.alloc);
                    break;
                case Event::kFree:
                    encoder_.deallocation(e.free);
                    break;
                case Event::kMemory:
                    encoder_.memory(e.memory);
                    break;
            }
            wrote();
        }
    }

  private:
    std::string path_;
    int fd_ = -1;
    std::unique_ptr<format::ChunkWriter> writer_;
    format::RecordEncoder encoder_;
    size_t records_per_chunk_;
    size_t in_chunk_ = 0;
    std::vector<uint64_t> chunk_ends_;
};

// Definitions for python nodes 1..n (a chain per node: parent node-1 for
// even nodes, 0 for odd ones) and native nodes 1..n, written first.
void write_definitions(CaptureBuilder* b, uint32_t python_nodes, uint32_t native_nodes, uint32_t threads) {
    for (uint32_t t = 1; t <= threads; ++t) {
        b->encoder().thread(format::ThreadRecord{t, 1000 + t, "thread-" + std::to_string(t)});
        b->wrote();
    }
    b->encoder().code(format::CodeRecord{1, "outer", "outer.py", 1});
    b->wrote();
    b->encoder().code(format::CodeRecord{2, "inner", "inner.py", 10});
    b->wrote();
    for (uint32_t n = 1; n <= python_nodes; ++n) {
        b->encoder().python_node(format::PythonNodeRecord{n, n % 2 == 0 ? n - 1 : 0, n % 2 == 0 ? 2u : 1u,
                                                          static_cast<int32_t>(100 + n), n % 2 == 1});
        b->wrote();
    }
    for (uint32_t n = 1; n <= native_nodes; ++n) {
        b->encoder().native_node(format::NativeNodeRecord{n, 0, 0x1000 + n});
        b->wrote();
    }
}

// ---------------------------------------------------------------------------
// Ground truth

// The heap after each event, replayed naively: every live block (or piece
// of a mapping: each counts as a block, as memray counts them) as its own entry.
struct NaiveBlock {
    uint32_t domain;
    uint64_t address, size;
    LocationKey key;
};

struct NaiveHeap {
    std::vector<NaiveBlock> blocks;

    void apply(const Event& e) {
        if (e.kind == Event::kAlloc) {
            const AllocationRecord& a = e.alloc;
            LocationKey key{a.thread, a.python_node, a.native_node, a.domain, a.allocator};
            if (a.allocator == Allocator::kMmap) {
                if (a.size == 0) return;
                unmap(a.address, a.size);
            } else {
                std::erase_if(blocks, [&](const NaiveBlock& b) {
                    return b.domain == a.domain && b.address == a.address && b.key.allocator != Allocator::kMmap;
                });
            }
            blocks.push_back(NaiveBlock{a.domain, a.address, a.size, key});
        } else if (e.kind == Event::kFree) {
            const DeallocationRecord& d = e.free;
            if (d.allocator == Allocator::kMunmap) {
                unmap(d.address, d.size);
            } else {
                std::erase_if(blocks, [&](const NaiveBlock& b) {
                    return b.domain == d.domain && b.address == d.address && b.key.allocator != Allocator::kMmap;
                });
            }
        }
    }
    void unmap(uint64_t address, uint64_t length) {
        std::vector<NaiveBlock> kept;
        for (const NaiveBlock& b : blocks) {
            if (b.key.allocator != Allocator::kMmap) {
                kept.push_back(b);
                continue;
            }
            const uint64_t end = address + length, b_end = b.address + b.size;
            if (b_end <= address || b.address >= end) {
                kept.push_back(b);
                continue;
            }
            if (b.address < address) kept.push_back(NaiveBlock{b.domain, b.address, address - b.address, b.key});
            if (b_end > end) kept.push_back(NaiveBlock{b.domain, end, b_end - end, b.key});
        }
        blocks = kept;
    }
    uint64_t bytes() const {
        uint64_t total = 0;
        for (const NaiveBlock& b : blocks) total += b.size;
        return total;
    }
    // Per location: blocks and bytes.
    std::map<LocationKey, std::pair<uint64_t, uint64_t>> by_location() const {
        std::map<LocationKey, std::pair<uint64_t, uint64_t>> result;
        for (const NaiveBlock& b : blocks) {
            auto& [count, bytes] = result[b.key];
            ++count;
            bytes += b.size;
        }
        return result;
    }
};

std::map<LocationKey, std::pair<uint64_t, uint64_t>> as_map(const std::vector<LocationTotal>& rows) {
    std::map<LocationKey, std::pair<uint64_t, uint64_t>> result;
    for (const LocationTotal& row : rows) {
        auto& [count, bytes] = result[row.key];
        count += row.count;
        bytes += row.bytes;
    }
    return result;
}

std::map<LocationKey, std::pair<uint64_t, uint64_t>> merged(std::map<LocationKey, std::pair<uint64_t, uint64_t>> m) {
    std::map<LocationKey, std::pair<uint64_t, uint64_t>> result;
    for (const auto& [key, value] : m) {
        LocationKey apart = key;
        apart.thread = 0;
        result[apart].first += value.first;
        result[apart].second += value.second;
    }
    return result;
}

struct Truth {
    std::map<LocationKey, std::pair<uint64_t, uint64_t>> peak, leaks, totals;
    uint64_t peak_heap = 0, end_heap = 0, allocations = 0, bytes = 0;
    std::vector<std::pair<uint64_t, std::map<LocationKey, std::pair<uint64_t, uint64_t>>>> at_memory;  // (time, heap)
};

// The high-water mark is the last moment the heap was at its maximum (memray's rule).
Truth brute_force(const std::vector<Event>& events) {
    Truth truth;
    NaiveHeap heap;
    for (const Event& e : events) {
        heap.apply(e);
        if (e.kind == Event::kAlloc) {
            ++truth.allocations;
            truth.bytes += e.alloc.size;
            auto& [count, bytes] = truth.totals[LocationKey{e.alloc.thread, e.alloc.python_node, e.alloc.native_node,
                                                            e.alloc.domain, e.alloc.allocator}];
            ++count;
            bytes += e.alloc.size;
        }
        if (e.kind == Event::kMemory) truth.at_memory.emplace_back(e.memory.time_ms, heap.by_location());
        if (heap.bytes() >= truth.peak_heap) {
            truth.peak_heap = heap.bytes();
            truth.peak = heap.by_location();
        }
    }
    truth.leaks = heap.by_location();
    truth.end_heap = heap.bytes();
    return truth;
}

// Random events: several threads and domains, reallocs (free + alloc),
// frees of unknown addresses, allocations over live addresses, mmaps with
// partial and spanning munmaps, and memory records.
std::vector<Event> random_events(size_t n, uint32_t seed, uint64_t* time_ms = nullptr) {
    std::mt19937_64 rng(seed);
    std::vector<Event> events;
    struct Live {
        uint32_t domain;
        uint64_t address, size;
        uint32_t thread;
    };
    std::vector<Live> live;
    std::vector<std::pair<uint64_t, uint64_t>> maps;
    uint64_t next_address = 0x10000;
    uint64_t next_map = 0x7f0000000000;
    uint64_t t = 0;
    const Allocator allocators[] = {Allocator::kMalloc, Allocator::kCalloc, Allocator::kPymallocMalloc,
                                    Allocator::kPymallocCalloc, Allocator::kPosixMemalign, Allocator::kTrack};
    while (events.size() < n) {
        const uint32_t thread = 1 + static_cast<uint32_t>(rng() % 3);
        const uint64_t dice = rng() % 100;
        Event e{};
        if (dice < 45 || live.empty()) {
            Allocator allocator = allocators[rng() % 6];
            uint32_t domain = allocator == Allocator::kTrack ? 7 : 0;
            uint64_t address;
            if (!live.empty() && rng() % 20 == 0) {
                address = live[rng() % live.size()].address;  // reuse: an alloc whose free was missed, or another domain
            } else {
                address = next_address;
                next_address += 16 * (1 + rng() % 8);
            }
            e.kind = Event::kAlloc;
            e.alloc = AllocationRecord{thread, address, 1 + rng() % 5000, allocator, domain,
                                       static_cast<uint32_t>(rng() % 6), static_cast<uint32_t>(rng() % 3)};
            events.push_back(e);
            std::erase_if(live, [&](const Live& l) { return l.domain == domain && l.address == address; });
            live.push_back(Live{domain, address, e.alloc.size, thread});
        } else if (dice < 85) {
            size_t i = rng() % live.size();
            Live block = live[i];
            live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
            const uint32_t free_thread = rng() % 4 == 0 ? 1 + static_cast<uint32_t>(rng() % 3) : block.thread;
            e.kind = Event::kFree;
            e.free = DeallocationRecord{free_thread, block.address, 0,
                                        block.domain == 7 ? Allocator::kUntrack
                                                          : (rng() % 2 ? Allocator::kFree : Allocator::kPymallocFree),
                                        block.domain};
            events.push_back(e);
            if (rng() % 4 == 0) {  // realloc: the free above, then an allocation at once
                Event r{};
                r.kind = Event::kAlloc;
                r.alloc = AllocationRecord{free_thread, next_address, 1 + rng() % 9000,
                                           rng() % 2 ? Allocator::kRealloc : Allocator::kPymallocRealloc, 0,
                                           static_cast<uint32_t>(rng() % 6), 0};
                next_address += 16 * (1 + rng() % 600);
                events.push_back(r);
                live.push_back(Live{0, r.alloc.address, r.alloc.size, free_thread});
            }
        } else if (dice < 88) {
            e.kind = Event::kFree;  // a block made before the capture
            e.free = DeallocationRecord{thread, 0x5000 + 16 * (rng() % 100), 0, Allocator::kFree, 0};
            events.push_back(e);
        } else if (dice < 93) {
            const uint64_t pages = 1 + rng() % 8;
            e.kind = Event::kAlloc;
            e.alloc = AllocationRecord{thread, next_map, pages * 4096, Allocator::kMmap, 0,
                                       static_cast<uint32_t>(rng() % 6), static_cast<uint32_t>(rng() % 3)};
            maps.emplace_back(next_map, pages * 4096);
            next_map += pages * 4096 + (rng() % 2 ? 0 : 4096);  // some mappings touch
            events.push_back(e);
        } else if (dice < 97 && !maps.empty()) {
            // munmap: a whole mapping, its middle, its end, or a span across neighbours
            auto [start, length] = maps[rng() % maps.size()];
            uint64_t from = start + 4096 * (rng() % (length / 4096));
            uint64_t len = 4096 * (1 + rng() % 10);
            if (rng() % 3 == 0) {
                from = start;
                len = length;
            }
            e.kind = Event::kFree;
            e.free = DeallocationRecord{thread, from, len, Allocator::kMunmap, 0};
            events.push_back(e);
        } else {
            t += 1 + rng() % 20;
            e.kind = Event::kMemory;
            e.memory = format::MemoryRecord{t, 1000000 + rng() % 1000, 0};
            events.push_back(e);
        }
    }
    if (time_ms) *time_ms = t;
    return events;
}

std::unique_ptr<CaptureFile> open_file(const std::string& path) {
    CaptureReader::OpenFailure failure;
    auto file = CaptureFile::open(path, &failure);
    EXPECT_TRUE(file) << failure.message;
    return file;
}

void write_capture(const std::string& path, const std::vector<Event>& events, bool end = true,
                   size_t records_per_chunk = 7, int level = 3) {
    CaptureBuilder b(path, FileFormat::kAllAllocations, level, records_per_chunk);
    write_definitions(&b, 6, 2, 3);
    b.encoder().metadata(format::MetadataRecord{{{"command", "python demo.py"}, {"pid", "42"}}});
    b.wrote();
    b.events(events);
    b.encoder().metadata(format::MetadataRecord{{{"end_time", "1234"}, {"pid", "43"}}});
    b.wrote();
    if (end) b.end();
}

// ---------------------------------------------------------------------------
// Tests

TEST(CaptureReader, PeakLeaksAndTotalsMatchBruteForce) {
    for (uint32_t seed = 1; seed <= 6; ++seed) {
        std::vector<Event> events = random_events(1500, seed);
        std::string path = temp_path("peak_" + std::to_string(seed));
        write_capture(path, events);
        Truth truth = brute_force(events);
        auto file = open_file(path);
        PassEnd end;
        const CaptureSummary* s = file->summary(nullptr, &end);
        ASSERT_NE(s, nullptr);
        EXPECT_TRUE(s->end.complete);
        EXPECT_EQ(s->end.damage, "");
        EXPECT_EQ(s->peak_heap, truth.peak_heap) << "seed " << seed;
        EXPECT_EQ(s->end_heap, truth.end_heap);
        EXPECT_EQ(s->total_allocations, truth.allocations);
        EXPECT_EQ(s->total_bytes, truth.bytes);
        EXPECT_EQ(as_map(s->peak), truth.peak) << "seed " << seed;
        EXPECT_EQ(as_map(s->leaks), truth.leaks);
        EXPECT_EQ(as_map(s->totals), truth.totals);
        // Merged threads: the same moment, thread ids summed away.
        EXPECT_EQ(as_map(finish_rows(s->peak, true)), merged(truth.peak));
        EXPECT_EQ(as_map(finish_rows(s->leaks, true)), merged(truth.leaks));
        std::remove(path.c_str());
    }
}

TEST(CaptureReader, FinishRowsSortsByBytesThenKey) {
    std::vector<LocationTotal> rows = {
        {LocationKey{1, 5, 0, 0, Allocator::kMalloc}, 1, 10},
        {LocationKey{2, 5, 0, 0, Allocator::kMalloc}, 2, 30},
        {LocationKey{1, 4, 0, 0, Allocator::kMalloc}, 1, 30},
        {LocationKey{1, 9, 0, 0, Allocator::kMalloc}, 0, 0},
    };
    auto apart = finish_rows(rows, false);
    ASSERT_EQ(apart.size(), 3u);
    EXPECT_EQ(apart[0].key.python_node, 4u);  // 30 bytes, smaller key first
    EXPECT_EQ(apart[1].key.thread, 2u);
    auto together = finish_rows(rows, true);
    ASSERT_EQ(together.size(), 2u);
    EXPECT_EQ(together[0].key.python_node, 5u);
    EXPECT_EQ(together[0].count, 3u);
    EXPECT_EQ(together[0].bytes, 40u);
    EXPECT_EQ(together[0].key.thread, 0u);
}

TEST(CaptureReader, PeakIsTheLastMomentOfTheMaximum) {
    // a: 100 (peak 100), free a, b: 100 (ties the peak: the peak is now, as memray has it).
    std::vector<Event> events;
    auto alloc = [&](uint64_t address, uint64_t size, uint32_t node) {
        Event e{};
        e.kind = Event::kAlloc;
        e.alloc = AllocationRecord{1, address, size, Allocator::kMalloc, 0, node, 0};
        events.push_back(e);
    };
    auto release = [&](uint64_t address) {
        Event e{};
        e.kind = Event::kFree;
        e.free = DeallocationRecord{1, address, 0, Allocator::kFree, 0};
        events.push_back(e);
    };
    alloc(0x100, 100, 1);
    release(0x100);
    alloc(0x200, 100, 2);
    std::string path = temp_path("tie");
    write_capture(path, events);
    auto file = open_file(path);
    PassEnd end;
    const CaptureSummary* s = file->summary(nullptr, &end);
    ASSERT_NE(s, nullptr);
    auto rows = finish_rows(s->peak, true);
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(rows[0].key.python_node, 2u);  // the last time 100 bytes were reached
    auto leaks = finish_rows(s->leaks, true);
    ASSERT_EQ(leaks.size(), 1u);
    EXPECT_EQ(leaks[0].key.python_node, 2u);
    std::remove(path.c_str());
}

TEST(CaptureReader, EachPieceOfAMappingIsABlock) {
    std::vector<Event> events(4);
    events[0].kind = Event::kAlloc;
    events[0].alloc = AllocationRecord{1, 0x100000, 4 * 4096, Allocator::kMmap, 0, 1, 0};
    events[1].kind = Event::kFree;  // the middle page
    events[1].free = DeallocationRecord{1, 0x100000 + 4096, 4096, Allocator::kMunmap, 0};
    events[2].kind = Event::kFree;  // the first page
    events[2].free = DeallocationRecord{1, 0x100000, 4096, Allocator::kMunmap, 0};
    events[3].kind = Event::kFree;  // the rest, and more
    events[3].free = DeallocationRecord{1, 0x100000 + 2 * 4096, 8 * 4096, Allocator::kMunmap, 0};
    std::string path = temp_path("mmap");
    for (size_t upto = 1; upto <= events.size(); ++upto) {
        std::vector<Event> prefix(events.begin(), events.begin() + static_cast<std::ptrdiff_t>(upto));
        write_capture(path, prefix);
        auto file = open_file(path);
        PassEnd end;
        const CaptureSummary* s = file->summary(nullptr, &end);
        ASSERT_NE(s, nullptr);
        const uint64_t expected_bytes[] = {4 * 4096, 3 * 4096, 2 * 4096, 0};
        const uint64_t expected_blocks[] = {1, 2, 1, 0};  // the hole left two pieces, as memray counts them
        auto leaks = finish_rows(s->leaks, true);
        if (expected_bytes[upto - 1] == 0) {
            EXPECT_TRUE(leaks.empty());
        } else {
            ASSERT_EQ(leaks.size(), 1u);
            EXPECT_EQ(leaks[0].count, expected_blocks[upto - 1]) << upto;
            EXPECT_EQ(leaks[0].bytes, expected_bytes[upto - 1]) << upto;
        }
        EXPECT_EQ(s->end_heap, expected_bytes[upto - 1]);
        EXPECT_EQ(s->peak_heap, 4u * 4096);
    }
    std::remove(path.c_str());
}

// memray's temporary-allocation rule, literally: per thread, a window of the
// last threshold + 1 allocations; a free matches the newest entry of its own
// thread's window with the same address (and size, for munmap).
std::map<LocationKey, std::pair<uint64_t, uint64_t>> memray_temporary(const std::vector<Event>& events,
                                                                      uint64_t threshold) {
    // Entries stay in the window once matched (memray never removes them); a
    // flag keeps a block from matching twice.
    std::map<uint32_t, std::deque<std::pair<AllocationRecord, bool>>> windows;
    std::map<LocationKey, std::pair<uint64_t, uint64_t>> result;
    for (const Event& e : events) {
        if (e.kind == Event::kAlloc) {
            auto& window = windows[e.alloc.thread];
            window.emplace_front(e.alloc, false);
            if (window.size() > threshold + 1) window.pop_back();
        } else if (e.kind == Event::kFree) {
            auto& window = windows[e.free.thread];
            for (auto& [a, matched] : window) {
                bool match = !matched && a.address == e.free.address && a.domain == e.free.domain;
                if (e.free.allocator == Allocator::kMunmap) match = match && a.size == e.free.size;
                if (match) {
                    auto& [count, bytes] =
                        result[LocationKey{a.thread, a.python_node, a.native_node, a.domain, a.allocator}];
                    ++count;
                    bytes += a.size;
                    matched = true;
                    break;
                }
            }
        }
    }
    return result;
}

// Events where every block is freed by the thread that made it (where
// memray's window and the live-block rule cannot disagree), with gaps of
// 0..5 other allocations of the same thread, interleaved with other threads.
std::vector<Event> same_thread_events(size_t n, uint32_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<Event> events;
    std::map<uint32_t, std::vector<std::pair<uint64_t, uint64_t>>> live;  // thread -> (address, size)
    uint64_t next = 0x1000;
    while (events.size() < n) {
        uint32_t thread = 1 + static_cast<uint32_t>(rng() % 3);
        auto& mine = live[thread];
        Event e{};
        if (mine.empty() || rng() % 2 == 0) {
            e.kind = Event::kAlloc;
            bool map = rng() % 10 == 0;
            uint64_t size = map ? 4096 * (1 + rng() % 3) : 1 + rng() % 300;
            e.alloc = AllocationRecord{thread, next, size, map ? Allocator::kMmap : Allocator::kMalloc, 0,
                                       static_cast<uint32_t>(1 + rng() % 5), 0};
            next += 0x10000;
            mine.emplace_back(e.alloc.address, size);
        } else {
            // Mostly the newest blocks: a spread of distances.
            size_t back = std::min<size_t>(mine.size() - 1, rng() % 4);
            size_t i = mine.size() - 1 - back;
            auto [address, size] = mine[i];
            mine.erase(mine.begin() + static_cast<std::ptrdiff_t>(i));
            e.kind = Event::kFree;
            bool map = size >= 4096;
            e.free = DeallocationRecord{thread, address, map ? size : 0, map ? Allocator::kMunmap : Allocator::kFree, 0};
        }
        events.push_back(e);
    }
    return events;
}

// The documented rule from first principles: the block freed was made by
// the freeing thread, which made at most `threshold` allocations between.
std::map<LocationKey, std::pair<uint64_t, uint64_t>> rule_temporary(const std::vector<Event>& events,
                                                                    uint64_t threshold) {
    std::map<LocationKey, std::pair<uint64_t, uint64_t>> result;
    for (size_t j = 0; j < events.size(); ++j) {
        if (events[j].kind != Event::kFree) continue;
        const DeallocationRecord& d = events[j].free;
        // The live block at the address: the latest allocation there not freed since.
        size_t made = SIZE_MAX;
        for (size_t i = j; i-- > 0;) {
            const Event& e = events[i];
            if (e.kind == Event::kFree && e.free.address == d.address && e.free.domain == d.domain) break;
            if (e.kind == Event::kAlloc && e.alloc.address == d.address && e.alloc.domain == d.domain) {
                made = i;
                break;
            }
        }
        if (made == SIZE_MAX) continue;
        const AllocationRecord& a = events[made].alloc;
        if (d.allocator == Allocator::kMunmap && d.size != a.size) continue;
        if (a.thread != d.thread) continue;
        uint64_t between = 0;
        for (size_t k = made + 1; k < j; ++k) {
            if (events[k].kind == Event::kAlloc && events[k].alloc.thread == d.thread) ++between;
        }
        if (between > threshold) continue;
        auto& [count, bytes] = result[LocationKey{a.thread, a.python_node, a.native_node, a.domain, a.allocator}];
        ++count;
        bytes += a.size;
    }
    return result;
}

TEST(CaptureReader, TemporaryAllocationsFollowMemraysWindow) {
    for (uint64_t threshold : {0u, 1u, 2u, 5u}) {
        std::vector<Event> events = same_thread_events(3000, static_cast<uint32_t>(threshold) + 11);
        std::string path = temp_path("temporary");
        write_capture(path, events);
        auto file = open_file(path);
        TemporaryResult result = file->temporary(threshold, nullptr);
        EXPECT_TRUE(result.end.complete);
        auto expected = memray_temporary(events, threshold);
        EXPECT_FALSE(expected.empty());
        EXPECT_EQ(as_map(result.rows), expected) << "threshold " << threshold;
        EXPECT_EQ(as_map(result.rows), rule_temporary(events, threshold));
        std::remove(path.c_str());
    }
}

TEST(CaptureReader, TemporaryAllocationsOnMixedEvents) {
    // Cross-thread frees, reused addresses, domains, partial munmaps.
    for (uint64_t threshold : {0u, 1u, 3u, 1000u}) {
        std::vector<Event> events = random_events(2500, 77 + static_cast<uint32_t>(threshold));
        std::string path = temp_path("temporary_mixed");
        write_capture(path, events);
        auto file = open_file(path);
        TemporaryResult result = file->temporary(threshold, nullptr);
        EXPECT_EQ(as_map(result.rows), rule_temporary(events, threshold)) << "threshold " << threshold;
        std::remove(path.c_str());
    }
}

TEST(CaptureReader, TemporaryThresholdCountsOtherAllocations) {
    // Thread 1: a, b, free a -> one allocation between: temporary at threshold >= 1 only.
    std::vector<Event> events(3);
    events[0].kind = Event::kAlloc;
    events[0].alloc = AllocationRecord{1, 0x100, 10, Allocator::kMalloc, 0, 1, 0};
    events[1].kind = Event::kAlloc;
    events[1].alloc = AllocationRecord{1, 0x200, 20, Allocator::kMalloc, 0, 2, 0};
    events[2].kind = Event::kFree;
    events[2].free = DeallocationRecord{1, 0x100, 0, Allocator::kFree, 0};
    std::string path = temp_path("threshold");
    write_capture(path, events);
    auto file = open_file(path);
    EXPECT_TRUE(file->temporary(0, nullptr).rows.empty());
    auto rows = finish_rows(file->temporary(1, nullptr).rows, true);
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(rows[0].key.python_node, 1u);
    EXPECT_EQ(rows[0].count, 1u);
    EXPECT_EQ(rows[0].bytes, 10u);
    std::remove(path.c_str());
}

TEST(CaptureReader, StatsMatchBruteForce) {
    std::vector<Event> events = random_events(2000, 5);
    std::string path = temp_path("stats");
    write_capture(path, events);
    auto file = open_file(path);
    PassEnd end;
    const CaptureSummary* s = file->summary(nullptr, &end);
    ASSERT_NE(s, nullptr);
    std::map<uint64_t, uint64_t> by_width;
    std::map<Allocator, uint64_t> by_allocator;
    std::map<std::pair<uint32_t, uint32_t>, std::pair<uint64_t, uint64_t>> by_stack;
    for (const Event& e : events) {
        if (e.kind != Event::kAlloc) continue;
        uint64_t width = 0;
        while (width < 64 && (e.alloc.size >> width) != 0) ++width;
        ++by_width[width];
        ++by_allocator[e.alloc.allocator];
        auto& [count, bytes] = by_stack[{e.alloc.python_node, e.alloc.native_node}];
        ++count;
        bytes += e.alloc.size;
    }
    auto buckets = size_histogram(*s);
    ASSERT_FALSE(buckets.empty());
    EXPECT_EQ(buckets.front().low, uint64_t{1} << (by_width.begin()->first - 1));
    EXPECT_EQ(buckets.back().high, (uint64_t{1} << by_width.rbegin()->first) - 1);
    uint64_t counted = 0;
    for (const SizeBucket& b : buckets) {
        uint64_t width = 0;
        while ((b.high >> width) != 0) ++width;
        EXPECT_EQ(b.count, by_width.count(width) ? by_width[width] : 0) << b.low << "-" << b.high;
        counted += b.count;
    }
    EXPECT_EQ(counted, s->total_allocations);
    for (uint8_t a = 1; a <= kMaxAllocator; ++a) {
        auto found = by_allocator.find(static_cast<Allocator>(a));
        EXPECT_EQ(s->allocations_by_allocator[a], found == by_allocator.end() ? 0 : found->second);
    }
    for (bool by_bytes : {true, false}) {
        auto top = top_stacks(s->totals, 3, by_bytes);
        std::vector<std::tuple<uint64_t, uint32_t, uint32_t>> expected;
        for (auto& [stack, value] : by_stack) {
            expected.emplace_back(by_bytes ? value.second : value.first, stack.first, stack.second);
        }
        std::sort(expected.begin(), expected.end(), [](const auto& a, const auto& b) {
            if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
            return std::make_pair(std::get<1>(a), std::get<2>(a)) < std::make_pair(std::get<1>(b), std::get<2>(b));
        });
        ASSERT_EQ(top.size(), 3u);
        for (size_t i = 0; i < 3; ++i) {
            EXPECT_EQ(top[i].value, std::get<0>(expected[i]));
            EXPECT_EQ(top[i].python_node, std::get<1>(expected[i]));
            EXPECT_EQ(top[i].native_node, std::get<2>(expected[i]));
        }
    }
    std::remove(path.c_str());
}

TEST(CaptureReader, SnapshotAtReplaysToTheLastMemoryRecord) {
    std::vector<Event> events = random_events(1200, 9);
    std::string path = temp_path("snapshot");
    write_capture(path, events);
    Truth truth = brute_force(events);
    ASSERT_GT(truth.at_memory.size(), 5u);
    auto file = open_file(path);
    PassEnd end;
    const CaptureSummary* s = file->summary(nullptr, &end);
    ASSERT_NE(s, nullptr);
    ASSERT_EQ(s->memory.size(), truth.at_memory.size());
    for (size_t i = 0; i < truth.at_memory.size(); i += 3) {
        const auto& [time, state] = truth.at_memory[i];
        // Any time from this record's up to (not including) the next one's.
        for (uint64_t t : {time, time + 0}) {
            CaptureFile::Moment m = file->heap_at_time(t, nullptr);
            EXPECT_TRUE(m.state.reached);
            EXPECT_EQ(m.time_ms, time);
            EXPECT_EQ(as_map(m.state.heap->current_rows()), state) << "t=" << t;
            std::map<LocationKey, std::pair<uint64_t, uint64_t>> from_blocks;
            std::set<std::pair<LocationKey, uint64_t>> seen;
            m.state.heap->for_each_block([&](uint32_t, uint64_t, uint64_t size, uint32_t location, uint32_t) {
                from_blocks[m.state.heap->locations().key(location)].second += size;
            });
            for (auto& [key, value] : state) EXPECT_EQ(from_blocks[key].second, value.second);
        }
        if (i + 1 < truth.at_memory.size() && truth.at_memory[i + 1].first > time + 1) {
            CaptureFile::Moment m = file->heap_at_time(truth.at_memory[i + 1].first - 1, nullptr);
            EXPECT_EQ(m.time_ms, time);
            EXPECT_EQ(as_map(m.state.heap->current_rows()), state);
        }
    }
    // Before the first record: the empty heap at 0.
    CaptureFile::Moment before = file->heap_at_time(0, nullptr);
    if (truth.at_memory.front().first > 0) {
        EXPECT_EQ(before.time_ms, 0u);
        EXPECT_TRUE(before.state.heap->current_rows().empty());
    }
    std::remove(path.c_str());
}

TEST(CaptureReader, DamagedChunkStopsTheReadAndSaysWhere) {
    std::vector<Event> events = random_events(800, 21);
    std::string path = temp_path("damaged");
    std::vector<uint64_t> chunk_ends;
    {
        CaptureBuilder b(path, FileFormat::kAllAllocations, 3, 50);
        write_definitions(&b, 6, 2, 3);
        b.flush();
        b.events(events);
        b.end();
        chunk_ends = b.chunk_ends();
    }
    // Flip a byte inside the 6th records chunk (its payload, past its header).
    const size_t bad = 6;
    ASSERT_GT(chunk_ends.size(), bad + 2);
    const uint64_t offset = chunk_ends[bad - 1] + 40;
    ASSERT_LT(offset, chunk_ends[bad]);
    {
        std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
        f.seekg(static_cast<std::streamoff>(offset));
        char c;
        f.get(c);
        f.seekp(static_cast<std::streamoff>(offset));
        f.put(static_cast<char>(c ^ 0x5a));
    }
    // Events in the chunks before: chunk 0 holds the definitions, then 50 records a chunk.
    const size_t events_read = (bad - 1) * 50;
    std::vector<Event> readable(events.begin(), events.begin() + static_cast<std::ptrdiff_t>(events_read));
    Truth truth = brute_force(readable);
    auto file = open_file(path);
    PassEnd end;
    const CaptureSummary* s = file->summary(nullptr, &end);
    ASSERT_NE(s, nullptr);
    EXPECT_FALSE(s->end.complete);
    EXPECT_EQ(s->end.damage.rfind("chunk " + std::to_string(bad) + " at byte offset " +
                                      std::to_string(chunk_ends[bad - 1]) + ": ",
                                  0),
              0u)
        << s->end.damage;
    EXPECT_NE(s->end.damage.find("; the data before it was read"), std::string::npos);
    EXPECT_EQ(s->total_allocations, truth.allocations);
    EXPECT_EQ(as_map(s->peak), truth.peak);
    EXPECT_EQ(as_map(s->leaks), truth.leaks);
    std::remove(path.c_str());
}

TEST(CaptureReader, TruncatedFileReadsWholeChunks) {
    std::vector<Event> events = random_events(600, 3);
    std::string path = temp_path("truncated");
    std::vector<uint64_t> chunk_ends;
    {
        CaptureBuilder b(path, FileFormat::kAllAllocations, 3, 100);
        write_definitions(&b, 6, 2, 3);
        b.flush();
        b.events(events);
        b.end();
        chunk_ends = b.chunk_ends();
    }
    // Cut inside the 3rd records chunk: two chunks of events survive.
    ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(chunk_ends[2] + 17)), 0);
    std::vector<Event> readable(events.begin(), events.begin() + 200);
    Truth truth = brute_force(readable);
    auto file = open_file(path);
    PassEnd end;
    const CaptureSummary* s = file->summary(nullptr, &end);
    ASSERT_NE(s, nullptr);
    EXPECT_FALSE(s->end.complete);
    EXPECT_NE(s->end.damage.find("chunk 3 at byte offset " + std::to_string(chunk_ends[2])), std::string::npos)
        << s->end.damage;
    EXPECT_EQ(as_map(s->leaks), truth.leaks);
    // Cut exactly between chunks: no damage, but not complete either.
    ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(chunk_ends[2])), 0);
    auto again = open_file(path);
    const CaptureSummary* s2 = again->summary(nullptr, &end);
    ASSERT_NE(s2, nullptr);
    EXPECT_FALSE(s2->end.complete);
    EXPECT_EQ(s2->end.damage, "");
    EXPECT_EQ(as_map(s2->leaks), truth.leaks);
    std::remove(path.c_str());
}

TEST(CaptureReader, MalformedRecordInAGoodChunkIsDamage) {
    // Chunks with valid checksums whose second payload is not whole records.
    std::string path = temp_path("malformed");
    {
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        format::ChunkWriter w(fd, 0);
        ASSERT_TRUE(w.write_header(format::FileHeader{}));
        format::RecordEncoder e;
        e.allocation(AllocationRecord{1, 0x100, 10, Allocator::kMalloc, 0, 0, 0});
        ASSERT_TRUE(w.write_chunk(format::ChunkType::kRecords, e.bytes()));
        const uint64_t second = w.bytes_written();
        e.reset();
        e.allocation(AllocationRecord{1, 0x200, 1u << 30, Allocator::kMalloc, 0, 0, 0});
        std::string cut = e.bytes().substr(0, e.bytes().size() - 2);
        ASSERT_TRUE(w.write_chunk(format::ChunkType::kRecords, cut));
        ASSERT_TRUE(w.write_chunk(format::ChunkType::kEnd, {}));
        ::close(fd);
        auto file = open_file(path);
        PassEnd end;
        const CaptureSummary* s = file->summary(nullptr, &end);
        ASSERT_NE(s, nullptr);
        EXPECT_EQ(s->total_allocations, 1u);
        EXPECT_FALSE(s->end.complete);
        EXPECT_EQ(s->end.damage.rfind("chunk 1 at byte offset " + std::to_string(second) + ": ", 0), 0u)
            << s->end.damage;
    }
    std::remove(path.c_str());
}

TEST(CaptureReader, ForeignFilesAreRefusedClearly) {
    std::string path = temp_path("foreign");
    {
        std::ofstream f(path);
        f << "this is not a capture, just some text that is long enough to fill a header\n";
    }
    CaptureReader::OpenFailure failure;
    EXPECT_EQ(CaptureFile::open(path, &failure), nullptr);
    EXPECT_EQ(failure.kind, CaptureReader::OpenError::kNotCapture);
    EXPECT_NE(failure.message.find(path), std::string::npos);
    EXPECT_NE(failure.message.find("not a heapscope capture"), std::string::npos);
    { std::ofstream f(path, std::ios::trunc); }
    EXPECT_EQ(CaptureFile::open(path, &failure), nullptr);
    EXPECT_EQ(failure.kind, CaptureReader::OpenError::kNotCapture);
    std::remove(path.c_str());
    EXPECT_EQ(CaptureFile::open(path, &failure), nullptr);
    EXPECT_EQ(failure.kind, CaptureReader::OpenError::kSystem);
    EXPECT_EQ(failure.error_number, ENOENT);
    EXPECT_EQ(CaptureFile::open("/", &failure), nullptr);
    EXPECT_EQ(failure.kind, CaptureReader::OpenError::kSystem);
}

TEST(CaptureReader, StacksDefinitionsAndMetadata) {
    std::vector<Event> events = random_events(50, 1);
    std::string path = temp_path("stacks");
    write_capture(path, events);
    auto file = open_file(path);
    PassEnd end;
    std::vector<PythonFrame> frames;
    // Node 4: inner (code 2) line 104, called from node 3: outer line 103, an entry frame.
    ASSERT_EQ(file->python_stack(4, 100, nullptr, &frames, &end), CaptureFile::StackStatus::kOk);
    ASSERT_EQ(frames.size(), 2u);
    EXPECT_EQ(frames[0].function, "inner");
    EXPECT_EQ(frames[0].file, "inner.py");
    EXPECT_EQ(frames[0].line, 104);
    EXPECT_FALSE(frames[0].is_entry);
    EXPECT_EQ(frames[1].function, "outer");
    EXPECT_EQ(frames[1].line, 103);
    EXPECT_TRUE(frames[1].is_entry);
    ASSERT_EQ(file->python_stack(4, 1, nullptr, &frames, &end), CaptureFile::StackStatus::kOk);
    EXPECT_EQ(frames.size(), 1u);
    ASSERT_EQ(file->python_stack(0, 10, nullptr, &frames, &end), CaptureFile::StackStatus::kOk);
    EXPECT_TRUE(frames.empty());
    EXPECT_EQ(file->python_stack(99, 10, nullptr, &frames, &end), CaptureFile::StackStatus::kUnknownNode);
    EXPECT_NE(file->cached_summary(), nullptr);  // an unknown node made it read everything once
    // Threads and metadata: a key written again keeps its place and takes the new value.
    auto threads = file->definitions().threads();
    ASSERT_EQ(threads.size(), 3u);
    EXPECT_EQ(threads[1].first, 2u);
    EXPECT_EQ(threads[1].second.os_tid, 1002u);
    EXPECT_EQ(threads[1].second.name, "thread-2");
    const auto& metadata = file->definitions().metadata();
    ASSERT_EQ(metadata.size(), 3u);
    EXPECT_EQ(metadata[0], (std::pair<std::string, std::string>{"command", "python demo.py"}));
    EXPECT_EQ(metadata[1], (std::pair<std::string, std::string>{"pid", "43"}));
    EXPECT_EQ(metadata[2], (std::pair<std::string, std::string>{"end_time", "1234"}));
    EXPECT_EQ(file->definitions().python_node_count(), 6u);
    std::remove(path.c_str());
}

TEST(CaptureReader, UnknownCodeIsAnUnknownFrame) {
    std::string path = temp_path("unknown_code");
    {
        CaptureBuilder b(path, FileFormat::kAllAllocations);
        b.encoder().python_node(format::PythonNodeRecord{1, 0, 0, 7, true});
        b.wrote();
        b.end();
    }
    auto file = open_file(path);
    PassEnd end;
    std::vector<PythonFrame> frames;
    ASSERT_EQ(file->python_stack(1, 10, nullptr, &frames, &end), CaptureFile::StackStatus::kOk);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].function, "<unknown>");
    EXPECT_EQ(frames[0].file, "<unknown>");
    EXPECT_EQ(frames[0].line, 7);
    std::remove(path.c_str());
}

// A damaged file whose parent ids loop, with one far id that grows the node
// table: a stack walks each defined node once, not once per slot (the fuzzer
// found a file where every stack went 65,000 times around its loop).
TEST(CaptureReader, LoopingParentsWalkEachDefinedNodeOnce) {
    std::string path = temp_path("looping_parents");
    {
        CaptureBuilder b(path, FileFormat::kAllAllocations);
        b.encoder().python_node(format::PythonNodeRecord{1, 2, 0, 7, true});
        b.encoder().python_node(format::PythonNodeRecord{2, 1, 0, 8, true});
        b.encoder().python_node(format::PythonNodeRecord{60000, 0, 0, 9, true});
        b.wrote();
        b.end();
    }
    auto file = open_file(path);
    PassEnd end;
    std::vector<PythonFrame> frames;
    ASSERT_EQ(file->python_stack(1, SIZE_MAX, nullptr, &frames, &end), CaptureFile::StackStatus::kOk);
    EXPECT_LE(frames.size(), file->definitions().python_node_count());
    ASSERT_GE(frames.size(), 2u);
    EXPECT_EQ(frames[0].line, 7);
    EXPECT_EQ(frames[1].line, 8);
    std::remove(path.c_str());
}

}  // namespace

namespace capture_reader_fixture {
__attribute__((noinline)) int outer_function(int x) { return x * 3 + 1; }
__attribute__((noinline)) int inner_function(int x) { return x * 5 + 2; }
}  // namespace capture_reader_fixture

namespace {

TEST(CaptureReader, NativeNodesResolveAgainstTheirGeneration) {
    const uint64_t outer = reinterpret_cast<uintptr_t>(&capture_reader_fixture::outer_function) + 1;
    const uint64_t inner = reinterpret_cast<uintptr_t>(&capture_reader_fixture::inner_function) + 1;
    std::string path = temp_path("native");
    {
        CaptureBuilder b(path, FileFormat::kAllAllocations);
        // Generation 1 knows this binary; nodes 1 and 2 are defined under it.
        b.encoder().loaded_objects(format::LoadedObjectsRecord{1, current_loaded_objects()});
        b.encoder().native_node(format::NativeNodeRecord{1, 0, outer});
        b.encoder().native_node(format::NativeNodeRecord{2, 1, inner});
        // Generation 2 knows nothing: node 3, same address, stays unknown.
        b.encoder().loaded_objects(format::LoadedObjectsRecord{2, {}});
        b.encoder().native_node(format::NativeNodeRecord{3, 0, inner});
        b.wrote();
        b.end();
    }
    auto file = open_file(path);
    PassEnd end;
    std::vector<NativeFrame> frames;
    ASSERT_EQ(file->native_stack(2, 10, nullptr, &frames, &end), CaptureFile::StackStatus::kOk);
    ASSERT_EQ(frames.size(), 2u);
    EXPECT_NE(frames[0].function.find("inner_function"), std::string::npos) << frames[0].function;
    EXPECT_NE(frames[1].function.find("outer_function"), std::string::npos) << frames[1].function;
    ASSERT_EQ(file->native_stack(2, 1, nullptr, &frames, &end), CaptureFile::StackStatus::kOk);
    EXPECT_EQ(frames.size(), 1u);
    ASSERT_EQ(file->native_stack(3, 10, nullptr, &frames, &end), CaptureFile::StackStatus::kOk);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].function, "??");
    EXPECT_EQ(file->native_stack(4, 10, nullptr, &frames, &end), CaptureFile::StackStatus::kUnknownNode);
    // Hybrid without Python frames is the native stack.
    ASSERT_EQ(file->hybrid_stack(0, 2, 10, nullptr, &frames, &end), CaptureFile::StackStatus::kOk);
    ASSERT_EQ(frames.size(), 2u);
    EXPECT_NE(frames[0].function.find("inner_function"), std::string::npos);
    std::remove(path.c_str());
}

TEST(CaptureReader, AnyWholePassTellsTheDamage) {
    std::vector<Event> events = random_events(300, 4);
    std::string path = temp_path("whole_pass");
    write_capture(path, events, false);
    auto file = open_file(path);
    EXPECT_FALSE(file->full_pass_end().has_value());
    file->temporary(1, nullptr);
    ASSERT_TRUE(file->full_pass_end().has_value());
    EXPECT_FALSE(file->full_pass_end()->complete);  // no end chunk: the writer did not stop cleanly
    EXPECT_EQ(file->full_pass_end()->damage, "");
    EXPECT_EQ(file->cached_summary(), nullptr);  // and no summary was needed for that
    std::remove(path.c_str());
}

TEST(CaptureReader, ProgressIsReportedAndCanCancel) {
    std::vector<Event> events = random_events(20000, 8);
    std::string path = temp_path("progress");
    write_capture(path, events, true, 64, 0);
    auto file = open_file(path);
    const uint64_t size = std::filesystem::file_size(path);
    std::vector<std::pair<uint64_t, uint64_t>> calls;
    PassEnd end;
    const CaptureSummary* s = file->summary(
        [&](uint64_t done, uint64_t total) {
            calls.emplace_back(done, total);
            return true;
        },
        &end);
    ASSERT_NE(s, nullptr);
    ASSERT_GE(calls.size(), 10u);
    EXPECT_LE(calls.size(), 102u);  // about every 1%
    for (size_t i = 1; i < calls.size(); ++i) EXPECT_GE(calls[i].first, calls[i - 1].first);
    EXPECT_EQ(calls.back(), std::make_pair(size, size));
    // A callback that says stop: the pass ends, nothing is cached.
    auto other = open_file(path);
    int seen = 0;
    EXPECT_EQ(other->summary([&](uint64_t, uint64_t) { return ++seen < 3; }, &end), nullptr);
    EXPECT_TRUE(end.cancelled);
    EXPECT_EQ(seen, 3);
    EXPECT_EQ(other->cached_summary(), nullptr);
    std::remove(path.c_str());
}

TEST(CaptureReader, PrefetchingChangesNothing) {
    std::vector<Event> events = random_events(5000, 12);
    std::string path = temp_path("prefetch");
    write_capture(path, events, true, 40);
    CaptureReader::OpenFailure failure;
    auto reader = CaptureReader::open(path, &failure);
    ASSERT_TRUE(reader);
    CaptureSummary with = summarize(*reader, nullptr, true);
    CaptureSummary without = summarize(*reader, nullptr, false);
    EXPECT_EQ(as_map(with.peak), as_map(without.peak));
    EXPECT_EQ(as_map(with.leaks), as_map(without.leaks));
    EXPECT_EQ(with.memory.size(), without.memory.size());
    EXPECT_TRUE(with.end.complete && without.end.complete);
    // Two passes at once on one reader do not disturb each other's position.
    std::string error;
    auto a = reader->start_pass(nullptr, true, &error);
    auto b = reader->start_pass(nullptr, false, &error);
    ASSERT_TRUE(a && b);
    size_t na = 0, nb = 0;
    while (a->next() != nullptr) {
        ++na;
        if (b->next() != nullptr) ++nb;
    }
    while (b->next() != nullptr) ++nb;
    EXPECT_EQ(na, nb);
    EXPECT_EQ(na, events.size());
    std::remove(path.c_str());
}

// ---------------------------------------------------------------------------
// Aggregated captures

// Writes the aggregated form of `events` as a writer would: a HighWaterMark
// fed every event, and a checkpoint after every `every` events holding the
// locations that changed since the previous one.
struct AggregatedCapture {
    std::vector<uint64_t> checkpoint_event;  // events applied before each checkpoint
    std::vector<uint64_t> checkpoint_time;
};

AggregatedCapture write_aggregated(const std::string& path, const std::vector<Event>& events, size_t every,
                                   bool final_checkpoint, size_t records_per_chunk = 9) {
    AggregatedCapture result;
    CaptureBuilder b(path, FileFormat::kAggregatedAllocations, 3, records_per_chunk);
    write_definitions(&b, 6, 2, 3);
    HighWaterMark hwm;
    LocationIndex locations;
    // Live blocks of the writer (no mmap pieces in these tests).
    std::map<std::pair<uint32_t, uint64_t>, std::pair<uint64_t, uint32_t>> live;
    std::set<uint32_t> changed;
    auto checkpoint = [&](size_t applied, bool is_final) {
        format::CheckpointRecord cp{applied * 10, hwm.peak_epoch(), hwm.heap(), hwm.peak_heap(),
                                    static_cast<uint32_t>(changed.size()), is_final};
        b.encoder().checkpoint(cp);
        b.wrote();
        for (uint32_t id : changed) {
            const LocationCounters& c = hwm.at(id);
            const LocationKey& k = locations.key(id);
            b.encoder().location(format::LocationRecord{id, k.thread, k.allocator, k.domain, k.python_node,
                                                        k.native_node, c.current_count, c.current_bytes,
                                                        c.at_peak_count, c.at_peak_bytes, c.epoch, c.total_count,
                                                        c.total_bytes});
            b.wrote();
        }
        changed.clear();
        result.checkpoint_event.push_back(applied);
        result.checkpoint_time.push_back(applied * 10);
    };
    for (size_t i = 0; i < events.size(); ++i) {
        const Event& e = events[i];
        if (e.kind == Event::kAlloc) {
            const AllocationRecord& a = e.alloc;
            uint32_t id = locations.intern(LocationKey{a.thread, a.python_node, a.native_node, a.domain, a.allocator});
            auto found = live.find({a.domain, a.address});
            if (found != live.end()) {
                hwm.remove(found->second.second, found->second.first);
                changed.insert(found->second.second);
            }
            live[{a.domain, a.address}] = {a.size, id};
            hwm.add(id, a.size);
            changed.insert(id);
        } else if (e.kind == Event::kFree) {
            auto found = live.find({e.free.domain, e.free.address});
            if (found != live.end()) {
                hwm.remove(found->second.second, found->second.first);
                changed.insert(found->second.second);
                live.erase(found);
            }
        }
        if ((i + 1) % every == 0) checkpoint(i + 1, false);
    }
    if (final_checkpoint) {
        checkpoint(events.size(), true);
        b.end();
    }
    return result;
}

// Events without mmap (the aggregated writer above keeps whole blocks).
std::vector<Event> events_without_mappings(size_t n, uint32_t seed) {
    std::vector<Event> events = random_events(n * 2, seed);
    std::erase_if(events, [](const Event& e) {
        return e.kind == Event::kMemory || (e.kind == Event::kAlloc && e.alloc.allocator == Allocator::kMmap) ||
               (e.kind == Event::kFree && e.free.allocator == Allocator::kMunmap);
    });
    events.resize(n);
    return events;
}

TEST(CaptureReader, AggregatedPeakAndLeaksMatchBruteForce) {
    for (size_t every : {1u, 7u, 100u}) {
        std::vector<Event> events = events_without_mappings(1200, 31 + static_cast<uint32_t>(every));
        std::string path = temp_path("aggregated");
        write_aggregated(path, events, every, true);
        Truth truth = brute_force(events);
        auto file = open_file(path);
        ASSERT_TRUE(file->aggregated());
        PassEnd end;
        const CaptureSummary* s = file->summary(nullptr, &end);
        ASSERT_NE(s, nullptr);
        EXPECT_TRUE(s->end.complete);
        EXPECT_TRUE(s->final_checkpoint);
        EXPECT_EQ(s->peak_heap, truth.peak_heap);
        EXPECT_EQ(s->end_heap, truth.end_heap);
        EXPECT_EQ(as_map(s->peak), truth.peak) << "every " << every;
        EXPECT_EQ(as_map(s->leaks), truth.leaks);
        EXPECT_EQ(as_map(s->totals), truth.totals);
        EXPECT_EQ(s->total_allocations, truth.allocations);
        EXPECT_TRUE(file->temporary(1, nullptr).rows.empty());
        std::remove(path.c_str());
    }
}

TEST(CaptureReader, AggregatedCaptureCutShortReadsTheLastWholeCheckpoint) {
    std::vector<Event> events = events_without_mappings(900, 41);
    std::string path = temp_path("aggregated_cut");
    AggregatedCapture written = write_aggregated(path, events, 100, false, 5);
    // Cut the file in the middle of the last checkpoint's location records.
    const uint64_t size = std::filesystem::file_size(path);
    ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(size - 30)), 0);
    auto file = open_file(path);
    PassEnd end;
    const CaptureSummary* s = file->summary(nullptr, &end);
    ASSERT_NE(s, nullptr);
    EXPECT_FALSE(s->end.complete);
    EXPECT_FALSE(s->final_checkpoint);
    ASSERT_FALSE(s->checkpoint_times.empty());
    const size_t whole = s->checkpoint_times.size();
    ASSERT_LT(whole, written.checkpoint_event.size() + 1);
    std::vector<Event> upto(events.begin(),
                            events.begin() + static_cast<std::ptrdiff_t>(written.checkpoint_event[whole - 1]));
    Truth truth = brute_force(upto);
    EXPECT_EQ(as_map(s->peak), truth.peak);
    EXPECT_EQ(as_map(s->leaks), truth.leaks);
    EXPECT_EQ(s->peak_heap, truth.peak_heap);
    // snapshot_at on an aggregated capture: the last whole checkpoint at or before t.
    for (size_t i = 0; i < whole; ++i) {
        CaptureFile::Moment m = file->heap_at_time(written.checkpoint_time[i] + 5, nullptr);
        EXPECT_TRUE(m.state.reached);
        EXPECT_EQ(m.time_ms, written.checkpoint_time[i]);
        std::vector<Event> then(events.begin(),
                                events.begin() + static_cast<std::ptrdiff_t>(written.checkpoint_event[i]));
        EXPECT_EQ(as_map(m.state.aggregated.current_rows()), brute_force(then).leaks) << i;
    }
    std::remove(path.c_str());
}

// ---------------------------------------------------------------------------
// Live

TEST(CaptureStream, FedByteByByteMatchesTheFile) {
    std::vector<Event> events = random_events(1500, 55);
    std::string path = temp_path("stream");
    write_capture(path, events, true, 30);
    std::ifstream f(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    Truth truth = brute_force(events);
    CaptureStream stream;
    for (char c : bytes) stream.feed(std::string_view(&c, 1));
    EXPECT_TRUE(stream.header_seen());
    EXPECT_TRUE(stream.ended());
    EXPECT_EQ(stream.damage(), "");
    EXPECT_EQ(as_map(stream.live_rows()), truth.leaks);
    EXPECT_EQ(stream.heap(), truth.end_heap);
    EXPECT_EQ(stream.peak_heap(), truth.peak_heap);
    EXPECT_EQ(stream.total_allocations(), truth.allocations);
    ASSERT_TRUE(stream.memory().has_value());
    EXPECT_EQ(stream.memory()->time_ms, truth.at_memory.back().first);
    EXPECT_EQ(stream.definitions().metadata().size(), 3u);
    std::vector<PythonFrame> frames;
    EXPECT_TRUE(stream.definitions().python_stack(2, 10, &frames));
    EXPECT_EQ(frames.size(), 2u);
    std::remove(path.c_str());
}

TEST(CaptureStream, ShowsEachChunkAsItArrives) {
    std::vector<Event> events = random_events(400, 56);
    std::string path = temp_path("stream_chunks");
    std::vector<uint64_t> chunk_ends;
    {
        CaptureBuilder b(path, FileFormat::kAllAllocations, 3, 40);
        write_definitions(&b, 6, 2, 3);
        b.flush();
        b.events(events);
        b.close();
        chunk_ends = b.chunk_ends();
    }
    std::ifstream f(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    CaptureStream stream;
    size_t fed = 0;
    for (size_t chunk = 1; chunk < chunk_ends.size(); ++chunk) {
        // Everything up to one byte short of the chunk's end: the chunk is not shown yet.
        stream.feed(std::string_view(bytes).substr(fed, chunk_ends[chunk] - 1 - fed));
        fed = chunk_ends[chunk] - 1;
        auto prefix = [&](size_t n) {
            return std::vector<Event>(events.begin(), events.begin() + static_cast<std::ptrdiff_t>(std::min(n, events.size())));
        };
        std::vector<Event> before = prefix((chunk - 1) * 40);
        EXPECT_EQ(as_map(stream.live_rows()), brute_force(before).leaks) << chunk;
        stream.feed(std::string_view(bytes).substr(fed, 1));
        fed += 1;
        EXPECT_EQ(as_map(stream.live_rows()), brute_force(prefix(chunk * 40)).leaks) << chunk;
    }
    EXPECT_FALSE(stream.ended());
    // Garbage after the last chunk is damage, and the state stays as it was.
    auto before = as_map(stream.live_rows());
    stream.feed(std::string(64, '\x7f'));
    EXPECT_NE(stream.damage(), "");
    EXPECT_EQ(as_map(stream.live_rows()), before);
    std::remove(path.c_str());
}

}  // namespace
