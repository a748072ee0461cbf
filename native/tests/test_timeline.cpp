// The timeline pass (heapscope.heapprof's digest) against brute force:
// captures are written with the real encoder and chunk writer from random
// events, and every snapshot is compared with a naive replay that re-sums
// every live block by stack at the memory record each moment falls on.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "read/capture_reader.h"
#include "analysis/timeline.h"
#include "format/chunk_io.h"
#include "format/records.h"

namespace {

using namespace heapscope;
using namespace heapscope::analysis;
using namespace heapscope::read;

std::string temp_path(const std::string& name) {
    return (std::filesystem::temp_directory_path() /
            ("heapscope_timeline_" + std::to_string(::getpid()) + "_" + name))
        .string();
}

struct Event {
    enum Kind { kAlloc, kFree, kMemory } kind = kAlloc;
    format::AllocationRecord alloc{};
    format::DeallocationRecord free{};
    uint64_t time_ms = 0;  // kMemory
};

Event allocation(uint64_t address, uint64_t size, uint32_t python_node, Allocator allocator = Allocator::kMalloc,
                 uint32_t domain = 0, uint32_t thread = 1) {
    Event e;
    e.kind = Event::kAlloc;
    e.alloc.thread = thread;
    e.alloc.address = address;
    e.alloc.size = size;
    e.alloc.allocator = allocator;
    e.alloc.domain = domain;
    e.alloc.python_node = python_node;
    e.alloc.native_node = 0;
    return e;
}

Event deallocation(uint64_t address, Allocator allocator = Allocator::kFree, uint64_t size = 0, uint32_t domain = 0) {
    Event e;
    e.kind = Event::kFree;
    e.free.thread = 1;
    e.free.address = address;
    e.free.size = size;
    e.free.allocator = allocator;
    e.free.domain = domain;
    return e;
}

Event memory(uint64_t time_ms) {
    Event e;
    e.kind = Event::kMemory;
    e.time_ms = time_ms;
    return e;
}

constexpr uint32_t kNodes = 12;

// Writes a capture of `events`, 5 records a chunk; python nodes 1..kNodes
// (node n: line 10 + n, called from node n - 1), and `extra` nodes after them.
void write_capture(const std::string& path, const std::vector<Event>& events, bool end = true,
                   const std::vector<format::PythonNodeRecord>& extra = {}) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    {
        format::ChunkWriter writer(fd, 1);
        format::FileHeader header;
        header.format = format::FileFormat::kAllAllocations;
        ASSERT_TRUE(writer.write_header(header));
        format::RecordEncoder encoder;
        size_t in_chunk = 0;
        auto wrote = [&] {
            if (++in_chunk < 5) return;
            ASSERT_TRUE(writer.write_chunk(format::ChunkType::kRecords, encoder.bytes()));
            encoder.reset();
            in_chunk = 0;
        };
        encoder.thread(format::ThreadRecord{1, 100, "main"});
        wrote();
        encoder.code(format::CodeRecord{1, "f", "prog.py", 1});
        wrote();
        for (uint32_t n = 1; n <= kNodes; ++n) {
            encoder.python_node(format::PythonNodeRecord{n, n > 1 ? n - 1 : 0, 1, static_cast<int32_t>(10 + n), false});
            wrote();
        }
        for (const format::PythonNodeRecord& node : extra) {
            encoder.python_node(node);
            wrote();
        }
        for (const Event& e : events) {
            if (e.kind == Event::kAlloc) encoder.allocation(e.alloc);
            if (e.kind == Event::kFree) encoder.deallocation(e.free);
            if (e.kind == Event::kMemory) encoder.memory(format::MemoryRecord{e.time_ms, 0, 0});
            wrote();
        }
        if (encoder.size() > 0) {
            ASSERT_TRUE(writer.write_chunk(format::ChunkType::kRecords, encoder.bytes()));
        }
        if (end) {
            ASSERT_TRUE(writer.write_chunk(format::ChunkType::kEnd, {}));
        }
    }
    ::close(fd);
}

// The naive heap: every live block, or piece of a mapping, as its own entry.
struct NaiveBlock {
    uint32_t domain;
    uint64_t address, size;
    uint32_t python_node;
    bool mapped;
};

class NaiveHeap {
  public:
    void apply(const Event& e) {
        if (e.kind == Event::kAlloc) {
            const format::AllocationRecord& a = e.alloc;
            if (a.allocator == Allocator::kMmap) {
                if (a.size == 0) return;
                unmap(a.address, a.size);
            } else {
                drop(a.domain, a.address);
            }
            blocks_.push_back(NaiveBlock{a.domain, a.address, a.size, a.python_node, a.allocator == Allocator::kMmap});
        } else if (e.kind == Event::kFree) {
            if (e.free.allocator == Allocator::kMunmap) {
                unmap(e.free.address, e.free.size);
            } else {
                drop(e.free.domain, e.free.address);
            }
        }
    }
    std::map<uint32_t, uint64_t> by_stack() const {
        std::map<uint32_t, uint64_t> result;
        for (const NaiveBlock& b : blocks_) result[b.python_node] += b.size;
        return result;
    }

  private:
    void drop(uint32_t domain, uint64_t address) {
        std::erase_if(blocks_, [&](const NaiveBlock& b) { return !b.mapped && b.domain == domain && b.address == address; });
    }
    void unmap(uint64_t address, uint64_t length) {
        std::vector<NaiveBlock> kept;
        for (const NaiveBlock& b : blocks_) {
            const uint64_t end = address + length, b_end = b.address + b.size;
            if (!b.mapped || b_end <= address || b.address >= end) {
                kept.push_back(b);
                continue;
            }
            if (b.address < address) kept.push_back(NaiveBlock{0, b.address, address - b.address, b.python_node, true});
            if (b_end > end) kept.push_back(NaiveBlock{0, end, b_end - end, b.python_node, true});
        }
        blocks_ = std::move(kept);
    }
    std::vector<NaiveBlock> blocks_;
};

// The expected snapshots, computed the slow way: for each moment k *
// interval, the state at the first memory record at or after it.
struct Expected {
    uint64_t moment_ms, record_ms;
    std::map<uint32_t, uint64_t> stacks;
};

std::vector<Expected> brute_force(const std::vector<Event>& events, uint64_t interval_ms) {
    std::vector<std::pair<uint64_t, std::map<uint32_t, uint64_t>>> at_records;
    NaiveHeap heap;
    for (const Event& e : events) {
        heap.apply(e);
        if (e.kind == Event::kMemory) at_records.emplace_back(e.time_ms, heap.by_stack());
    }
    uint64_t last = 0;
    for (const auto& record : at_records) last = std::max(last, record.first);
    std::vector<Expected> expected;
    for (uint64_t moment = 0; !at_records.empty() && moment <= last; moment += interval_ms) {
        for (const auto& [time, stacks] : at_records) {
            if (time >= moment) {
                expected.push_back(Expected{moment, time, stacks});
                break;
            }
        }
    }
    return expected;
}

// Random events over a few stacks: mallocs, frees (some of blocks never
// seen), allocations over live addresses, a custom domain, mmaps with
// partial munmaps, and memory records at irregular times (some equal).
std::vector<Event> random_events(size_t n, uint32_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<Event> events;
    std::vector<std::pair<uint32_t, uint64_t>> live;  // (domain, address)
    std::vector<std::pair<uint64_t, uint64_t>> maps;
    uint64_t next_address = 0x10000, next_map = 0x7f0000000000, t = 0;
    while (events.size() < n) {
        const uint64_t dice = rng() % 100;
        const uint32_t node = static_cast<uint32_t>(rng() % (kNodes + 1));  // 0: no Python frame
        if (dice < 45 || live.empty()) {
            const bool custom = rng() % 10 == 0;
            uint64_t address = next_address;
            if (!live.empty() && rng() % 25 == 0) {
                address = live[rng() % live.size()].second;
            } else {
                next_address += 16 * (1 + rng() % 16);
            }
            // Sizes from bytes to megabytes, so that some stacks are tiny.
            const uint64_t size = 1 + (rng() % 4000) * (rng() % 8 == 0 ? 1000 : 1);
            events.push_back(allocation(address, size, node, custom ? Allocator::kTrack : Allocator::kMalloc,
                                        custom ? 7 : 0));
            live.emplace_back(custom ? 7 : 0, address);
        } else if (dice < 80) {
            const size_t i = rng() % live.size();
            const auto [domain, address] = live[i];
            live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
            events.push_back(deallocation(address, domain == 7 ? Allocator::kUntrack : Allocator::kFree, 0, domain));
        } else if (dice < 83) {
            events.push_back(deallocation(0x5000 + 16 * (rng() % 50)));  // made before the capture
        } else if (dice < 88) {
            const uint64_t pages = 1 + rng() % 6;
            events.push_back(allocation(next_map, pages * 4096, node, Allocator::kMmap));
            maps.emplace_back(next_map, pages * 4096);
            next_map += pages * 4096 + 4096;
        } else if (dice < 91 && !maps.empty()) {
            const auto [start, length] = maps[rng() % maps.size()];
            const uint64_t from = start + 4096 * (rng() % (length / 4096));
            events.push_back(deallocation(from, Allocator::kMunmap, 4096 * (1 + rng() % 3)));
        } else {
            t += rng() % 4 == 0 ? 0 : 1 + rng() % 30;
            events.push_back(memory(t));
        }
    }
    return events;
}

Timeline run(const std::string& path, uint64_t interval_ms, double precision, const Progress& progress = nullptr) {
    CaptureReader::OpenFailure failure;
    auto reader = CaptureReader::open(path, &failure);
    EXPECT_TRUE(reader) << failure.message;
    if (!reader) return {};
    return timeline(*reader, TimelineOptions{interval_ms, precision}, progress);
}

std::map<uint32_t, uint64_t> as_map(const TimelineSnapshot& s) {
    return {s.stacks.begin(), s.stacks.end()};
}

TEST(Timeline, EverySnapshotMatchesBruteForce) {
    for (uint32_t seed = 1; seed <= 8; ++seed) {
        const std::vector<Event> events = random_events(3000, seed);
        const std::string path = temp_path("exact_" + std::to_string(seed));
        write_capture(path, events);
        for (uint64_t interval : {1u, 7u, 50u, 100000u}) {
            const std::vector<Expected> expected = brute_force(events, interval);
            const Timeline t = run(path, interval, 0.0);
            EXPECT_TRUE(t.end.complete);
            EXPECT_TRUE(t.end.damage.empty());
            ASSERT_EQ(t.snapshots.size(), expected.size()) << "seed " << seed << " interval " << interval;
            for (size_t i = 0; i < expected.size(); ++i) {
                const TimelineSnapshot& s = t.snapshots[i];
                EXPECT_EQ(s.moment_ms, expected[i].moment_ms);
                EXPECT_EQ(s.record_ms, expected[i].record_ms);
                EXPECT_EQ(s.other, 0u);  // precision 0 merges nothing
                std::map<uint32_t, uint64_t> want;
                uint64_t total = 0;
                for (const auto& [node, bytes] : expected[i].stacks) {
                    if (bytes) want[node] = bytes;
                    total += bytes;
                }
                EXPECT_EQ(as_map(s), want) << "seed " << seed << " interval " << interval << " moment " << i;
                EXPECT_EQ(s.total, total);
                EXPECT_TRUE(std::is_sorted(s.stacks.begin(), s.stacks.end(),
                                           [](const auto& a, const auto& b) { return a.second > b.second; }));
            }
        }
        std::remove(path.c_str());
    }
}

TEST(Timeline, PrecisionMergesTheSmallestStacksUpToTheFraction) {
    for (uint32_t seed = 11; seed <= 14; ++seed) {
        const std::vector<Event> events = random_events(2500, seed);
        const std::string path = temp_path("precision_" + std::to_string(seed));
        write_capture(path, events);
        const Timeline exact = run(path, 20, 0.0);
        for (double precision : {0.01, 0.2, 0.9}) {
            const Timeline merged = run(path, 20, precision);
            ASSERT_EQ(merged.snapshots.size(), exact.snapshots.size());
            for (size_t i = 0; i < exact.snapshots.size(); ++i) {
                const TimelineSnapshot& e = exact.snapshots[i];
                const TimelineSnapshot& m = merged.snapshots[i];
                EXPECT_EQ(m.total, e.total);
                // Kept stacks keep their exact bytes; the rest add up to `other`.
                std::map<uint32_t, uint64_t> all = as_map(e);
                uint64_t kept = 0;
                for (const auto& [node, bytes] : m.stacks) {
                    EXPECT_EQ(all[node], bytes);
                    kept += bytes;
                }
                EXPECT_EQ(kept + m.other, m.total);
                EXPECT_LE(static_cast<long double>(m.other), precision * static_cast<long double>(m.total));
                // The largest stack dropped is no larger than the smallest kept...
                std::vector<uint64_t> dropped;
                for (const auto& [node, bytes] : e.stacks) {
                    if (!std::count_if(m.stacks.begin(), m.stacks.end(), [&](const auto& k) { return k.first == node; })) {
                        dropped.push_back(bytes);
                    }
                }
                if (!dropped.empty() && !m.stacks.empty()) {
                    EXPECT_LE(*std::max_element(dropped.begin(), dropped.end()), m.stacks.back().second);
                }
                // ...and one more stack would have gone over the fraction.
                if (!m.stacks.empty()) {
                    EXPECT_GT(static_cast<long double>(m.other + m.stacks.back().second),
                              precision * static_cast<long double>(m.total));
                }
            }
        }
        std::remove(path.c_str());
    }
}

TEST(Timeline, MergeRuleOnKnownNumbers) {
    // Total 1000: at 1%, the 3- and 6-byte stacks go (9 <= 10), the 11-byte one stays.
    std::vector<std::pair<uint32_t, uint64_t>> stacks{{1, 500}, {2, 3}, {3, 11}, {4, 6}, {5, 480}};
    uint64_t other = 0;
    merge_small_stacks(&stacks, 0.01, &other);
    EXPECT_EQ(other, 9u);
    EXPECT_EQ(stacks, (std::vector<std::pair<uint32_t, uint64_t>>{{1, 500}, {5, 480}, {3, 11}}));
    // Ties: the larger node goes first, so equal stacks split deterministically.
    std::vector<std::pair<uint32_t, uint64_t>> ties{{7, 5}, {8, 5}, {9, 90}};
    other = 0;
    merge_small_stacks(&ties, 0.05, &other);
    EXPECT_EQ(other, 5u);
    EXPECT_EQ(ties, (std::vector<std::pair<uint32_t, uint64_t>>{{9, 90}, {7, 5}}));
    // Precision 0 keeps everything, however small.
    std::vector<std::pair<uint32_t, uint64_t>> tiny{{1, 1}, {2, 1000000}};
    other = 0;
    merge_small_stacks(&tiny, 0.0, &other);
    EXPECT_EQ(other, 0u);
    EXPECT_EQ(tiny.size(), 2u);
}

TEST(Timeline, KnownGrowthAtOneStackAndFreesAtAnother) {
    // 1 MiB a block at node 3 every 100 ms (a memory record every 10 ms),
    // then the blocks are freed two at a time by code at node 5.
    std::vector<Event> events;
    uint64_t t = 0;
    for (uint64_t i = 0; i < 10; ++i) {
        events.push_back(allocation(0x100000 + i * 0x200000, 1 << 20, 3));
        for (int r = 0; r < 10; ++r) events.push_back(memory(t += 10));
    }
    for (uint64_t i = 0; i < 10; i += 2) {
        events.push_back(deallocation(0x100000 + i * 0x200000));
        events.push_back(deallocation(0x100000 + (i + 1) * 0x200000));
        for (int r = 0; r < 10; ++r) events.push_back(memory(t += 10));
    }
    const std::string path = temp_path("growth");
    write_capture(path, events);
    const Timeline tl = run(path, 100, 0.01);
    ASSERT_EQ(tl.snapshots.size(), 16u);  // moments 0, 100, ..., 1500 ms
    for (size_t k = 0; k < tl.snapshots.size(); ++k) {
        const TimelineSnapshot& s = tl.snapshots[k];
        // Moment k*100 falls on the record at k*100 (k >= 1) or the first one (10 ms).
        const uint64_t blocks = k == 0 ? 1 : (k <= 10 ? k : 10 - 2 * (k - 10));
        EXPECT_EQ(s.moment_ms, k * 100);
        EXPECT_EQ(s.record_ms, k == 0 ? 10 : k * 100);
        EXPECT_EQ(s.total, blocks << 20) << "moment " << k;
        if (blocks) {
            EXPECT_EQ(as_map(s), (std::map<uint32_t, uint64_t>{{3, blocks << 20}}));
        } else {
            EXPECT_TRUE(s.stacks.empty());
        }
    }
    std::remove(path.c_str());
}

TEST(Timeline, NodesShowingTheSameFramesAreOneStack) {
    // Node 40 is node 3's frame (same code, line and caller) at another
    // instruction; node 41 is on another line.
    const std::vector<format::PythonNodeRecord> extra{{40, 2, 1, 13, false}, {41, 2, 1, 99, false}};
    const std::vector<Event> events{allocation(0x1000, 100, 40), allocation(0x2000, 30, 3), allocation(0x3000, 7, 41),
                                    memory(5), deallocation(0x2000), memory(10)};
    const std::string path = temp_path("same_frames");
    write_capture(path, events, true, extra);
    const Timeline t = run(path, 5, 0.0);
    ASSERT_EQ(t.snapshots.size(), 3u);
    // Named by the first node met with those frames: the walk over locations meets 40 first.
    EXPECT_EQ(as_map(t.snapshots[0]), (std::map<uint32_t, uint64_t>{{40, 130}, {41, 7}}));
    EXPECT_EQ(as_map(t.snapshots[2]), (std::map<uint32_t, uint64_t>{{40, 100}, {41, 7}}));
    std::remove(path.c_str());
}

TEST(Timeline, NoMemoryRecordMeansNoSnapshot) {
    const std::string path = temp_path("norecord");
    write_capture(path, {allocation(0x1000, 64, 1)});
    const Timeline t = run(path, 10, 0.0);
    EXPECT_TRUE(t.snapshots.empty());
    EXPECT_EQ(t.records, 0u);
    std::remove(path.c_str());
}

TEST(Timeline, CutShortCaptureGivesTheSnapshotsBeforeTheCut) {
    const std::vector<Event> events = random_events(3000, 31);
    const std::string path = temp_path("cut");
    write_capture(path, events, /*end=*/false);
    const Timeline whole = run(path, 10, 0.0);
    EXPECT_FALSE(whole.end.complete);
    EXPECT_TRUE(whole.end.damage.empty());
    const uint64_t size = std::filesystem::file_size(path);
    std::filesystem::resize_file(path, size * 2 / 3);
    const Timeline cut = run(path, 10, 0.0);
    EXPECT_FALSE(cut.end.damage.empty());  // the last chunk is torn
    ASSERT_LT(cut.snapshots.size(), whole.snapshots.size());
    ASSERT_GT(cut.snapshots.size(), 0u);
    // The cut file is a prefix: each of its moments falls on the same record as in the whole file.
    for (size_t i = 0; i < cut.snapshots.size(); ++i) {
        EXPECT_EQ(cut.snapshots[i].record_ms, whole.snapshots[i].record_ms) << i;
        EXPECT_EQ(as_map(cut.snapshots[i]), as_map(whole.snapshots[i])) << i;
    }
    std::remove(path.c_str());
}

TEST(Timeline, ProgressCanCancel) {
    const std::vector<Event> events = random_events(4000, 41);
    const std::string path = temp_path("cancel");
    write_capture(path, events);
    int calls = 0;
    const Timeline t = run(path, 10, 0.0, [&](uint64_t, uint64_t) { return ++calls < 2; });
    EXPECT_TRUE(t.end.cancelled);
    EXPECT_FALSE(t.end.ok());
    std::remove(path.c_str());
}

TEST(Timeline, KeepLargestMovesTheSmallestIntoOther) {
    std::vector<std::pair<uint32_t, uint64_t>> stacks{{3, 50}, {1, 40}, {2, 40}, {7, 5}};
    uint64_t other = 10;
    keep_largest_stacks(&stacks, 2, &other);
    EXPECT_EQ(stacks, (std::vector<std::pair<uint32_t, uint64_t>>{{3, 50}, {1, 40}}));
    EXPECT_EQ(other, 55u);
    keep_largest_stacks(&stacks, 0, &other);  // 0: no limit
    keep_largest_stacks(&stacks, 5, &other);
    EXPECT_EQ(stacks.size(), 2u);
    EXPECT_EQ(other, 55u);
}

}  // namespace
