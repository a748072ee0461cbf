// The capture format: record codec, chunk container, damage handling.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "format/chunk_io.h"
#include "format/crc32c.h"
#include "format/records.h"

using namespace heapscope;
using namespace heapscope::format;

namespace {

// --- comparison of decoded records with what was encoded -------------------

std::string describe(const Record& r) {
    std::string s = "type " + std::to_string(static_cast<int>(r.type)) + ":";
    auto add = [&](uint64_t v) { s += " " + std::to_string(v); };
    switch (r.type) {
        case RecordType::kThread:
            add(r.thread.thread), add(r.thread.os_tid), s += " '" + r.thread.name + "'";
            break;
        case RecordType::kCode:
            add(r.code.code), s += " '" + r.code.function + "' '" + r.code.filename + "' ";
            s += std::to_string(r.code.first_lineno);
            break;
        case RecordType::kPythonNode:
            add(r.python_node.node), add(r.python_node.parent), add(r.python_node.code);
            s += " " + std::to_string(r.python_node.lineno), add(r.python_node.is_entry);
            break;
        case RecordType::kNativeNode:
            add(r.native_node.node), add(r.native_node.parent), add(r.native_node.ip);
            break;
        case RecordType::kLoadedObjects:
            add(r.loaded_objects.generation);
            for (const LoadedObject& o : r.loaded_objects.objects) {
                s += " [" + o.path, add(o.load_bias);
                for (const LoadedSegment& g : o.segments) add(g.vaddr), add(g.memsz);
                s += "]";
            }
            break;
        case RecordType::kAllocation: {
            const AllocationRecord& a = r.allocation;
            add(a.thread), add(a.address), add(a.size), add(static_cast<int>(a.allocator)), add(a.domain);
            add(a.python_node), add(a.native_node), add(a.count);
            break;
        }
        case RecordType::kDeallocation: {
            const DeallocationRecord& d = r.deallocation;
            add(d.thread), add(d.address), add(d.size), add(static_cast<int>(d.allocator)), add(d.domain);
            break;
        }
        case RecordType::kMemory:
            add(r.memory.time_ms), add(r.memory.rss), add(r.memory.heap);
            break;
        case RecordType::kCheckpoint: {
            const CheckpointRecord& c = r.checkpoint;
            add(c.time_ms), add(c.peak_epoch), add(c.heap), add(c.peak_heap), add(c.locations), add(c.final);
            break;
        }
        case RecordType::kLocation: {
            const LocationRecord& l = r.location;
            add(l.location), add(l.thread), add(static_cast<int>(l.allocator)), add(l.domain), add(l.python_node);
            add(l.native_node), add(l.current_count), add(l.current_bytes), add(l.at_peak_count);
            add(l.at_peak_bytes), add(l.epoch), add(l.total_count), add(l.total_bytes);
            break;
        }
        case RecordType::kMetadata:
            for (const auto& [k, v] : r.metadata.entries) s += " '" + k + "'='" + v + "'";
            break;
        case RecordType::kObject:
            add(r.object.thread), add(r.object.address), add(r.object.created), add(r.object.python_node);
            add(r.object.native_node);
            break;
    }
    return s;
}

// A list of records, kept both as values (to encode) and as text (to compare).
struct Script {
    std::vector<Record> records;
    void encode(RecordEncoder* e) const {
        for (const Record& r : records) {
            switch (r.type) {
                case RecordType::kThread: e->thread(r.thread); break;
                case RecordType::kCode: e->code(r.code); break;
                case RecordType::kPythonNode: e->python_node(r.python_node); break;
                case RecordType::kNativeNode: e->native_node(r.native_node); break;
                case RecordType::kLoadedObjects: e->loaded_objects(r.loaded_objects); break;
                case RecordType::kAllocation: e->allocation(r.allocation); break;
                case RecordType::kDeallocation: e->deallocation(r.deallocation); break;
                case RecordType::kMemory: e->memory(r.memory); break;
                case RecordType::kCheckpoint: e->checkpoint(r.checkpoint); break;
                case RecordType::kLocation: e->location(r.location); break;
                case RecordType::kMetadata: e->metadata(r.metadata); break;
                case RecordType::kObject: e->object(r.object); break;
            }
        }
    }
    std::vector<std::string> text() const {
        std::vector<std::string> out;
        for (const Record& r : records) out.push_back(describe(r));
        return out;
    }
    Record& add(RecordType type) {
        records.emplace_back();
        records.back().type = type;
        return records.back();
    }
};

std::vector<std::string> decode_all(std::string_view payload, std::string* error = nullptr) {
    RecordDecoder decoder(payload);
    Record r;
    std::vector<std::string> out;
    while (decoder.next(&r)) out.push_back(describe(r));
    if (error) *error = decoder.error();
    return out;
}

constexpr uint64_t kMax64 = std::numeric_limits<uint64_t>::max();
constexpr uint32_t kMax32 = std::numeric_limits<uint32_t>::max();

// Every record type, with ordinary and extreme values, in an order that
// exercises every delta in both directions.
Script every_record_script() {
    Script s;
    for (uint32_t thread : {0u, 1u, kMax32}) {
        Record& r = s.add(RecordType::kThread);
        r.thread = ThreadRecord{thread, thread == kMax32 ? kMax64 : 1234, thread == 1 ? "" : "worker-é"};
    }
    {
        Record& r = s.add(RecordType::kCode);
        r.code = CodeRecord{1, "main.<locals>.f", "/tmp/x.py", 1};
        Record& r2 = s.add(RecordType::kCode);
        r2.code = CodeRecord{kMax32, std::string(300, 'q'), "", std::numeric_limits<int32_t>::min()};
        Record& r3 = s.add(RecordType::kCode);
        r3.code = CodeRecord{0, "", "\xff\x00 binary", std::numeric_limits<int32_t>::max()};
        r3.code.filename.assign("\xff\x00 binary", 9);
    }
    for (uint32_t node : {1u, 2u, 3u, kMax32, 0u, 7u}) {
        Record& r = s.add(RecordType::kPythonNode);
        r.python_node = PythonNodeRecord{node, node == kMax32 ? 0u : (node == 0 ? kMax32 : node - 1), node,
                                         node == 7 ? std::numeric_limits<int32_t>::min()
                                                   : (node == kMax32 ? std::numeric_limits<int32_t>::max() : -5),
                                         node % 2 == 1};
    }
    for (uint64_t ip : {uint64_t{0x7f0000001000}, uint64_t{0x7f0000000ff0}, kMax64, uint64_t{0}, uint64_t{1}}) {
        Record& r = s.add(RecordType::kNativeNode);
        r.native_node = NativeNodeRecord{static_cast<uint32_t>(ip & 0xffff) + 1, kMax32, ip};
    }
    {
        Record& r = s.add(RecordType::kLoadedObjects);
        r.loaded_objects.generation = kMax32;
        r.loaded_objects.objects = {LoadedObject{"/usr/lib/libc.so.6", 0x7f0000000000, {{0, 0x1000}, {kMax64, kMax64}}},
                                    LoadedObject{"", 0, {}}, LoadedObject{"/x", kMax64, {{1, 2}}}};
        Record& empty = s.add(RecordType::kLoadedObjects);
        empty.loaded_objects.generation = 0;
    }
    // Allocations and deallocations: every allocator in both kinds of record
    // (compact and general forms), every flag, aligned and odd address steps,
    // and the wrap-around extremes.
    const uint64_t addresses[] = {0x10, 0x7f00deadbee0, 0x7f00deadbee7, 0, kMax64, kMax64 - 15, 16, 0x8000000000000000};
    int i = 0;
    for (uint8_t a = 1; a <= kMaxAllocator; ++a) {
        for (uint64_t address : addresses) {
            ++i;
            Record& r = s.add(RecordType::kAllocation);
            r.allocation = AllocationRecord{static_cast<uint32_t>(i % 3 == 0 ? kMax32 : i % 2), address,
                                            i % 5 == 0 ? kMax64 : static_cast<uint64_t>(i * 16),
                                            static_cast<Allocator>(a), i % 4 == 0 ? kMax32 : 0,
                                            i % 7 == 0 ? kMax32 : static_cast<uint32_t>(i),
                                            i % 3 == 1 ? 0u : (i % 6 == 0 ? kMax32 : static_cast<uint32_t>(100 - i)),
                                            i % 11 == 0 ? kMax32 : (i % 13 == 0 ? 2u : (i % 4 == 0 ? 3u : 1u))};
            Record& d = s.add(RecordType::kDeallocation);
            d.deallocation = DeallocationRecord{static_cast<uint32_t>(i % 3), address ^ static_cast<uint64_t>(i * 48),
                                                i % 2 == 0 ? 0 : (i % 5 == 0 ? kMax64 : 4096),
                                                static_cast<Allocator>(a), i % 4 == 1 ? kMax32 : 0};
        }
    }
    {
        Record& r = s.add(RecordType::kMemory);
        r.memory = MemoryRecord{0, 0, 0};
        Record& r2 = s.add(RecordType::kMemory);
        r2.memory = MemoryRecord{kMax64, kMax64, kMax64};
    }
    // Objects: made (with and without a native node) and destroyed (no stack), on several threads.
    for (uint64_t address : {uint64_t{0x7f00deadbee0}, uint64_t{0}, kMax64, uint64_t{0x10}}) {
        for (uint32_t native : {0u, kMax32, 7u}) {
            Record& made = s.add(RecordType::kObject);
            made.object = ObjectRecord{native == 7 ? kMax32 : 2, address, true, native == 0 ? kMax32 : 3, native};
        }
        Record& gone = s.add(RecordType::kObject);
        gone.object = ObjectRecord{1, address, false, 0, 0};
    }
    for (bool final : {false, true}) {
        Record& c = s.add(RecordType::kCheckpoint);
        c.checkpoint = CheckpointRecord{final ? kMax64 : 10, final ? kMax64 : 3, 5, kMax64, final ? kMax32 : 2, final};
        for (uint32_t location : {0u, 5u, 2u, kMax32}) {
            Record& l = s.add(RecordType::kLocation);
            l.location = LocationRecord{location, location, static_cast<Allocator>(1 + location % kMaxAllocator),
                                        kMax32, location + 1, 0, 1, 2, 3, 4, 5, kMax64, kMax64};
        }
    }
    {
        Record& m = s.add(RecordType::kMetadata);
        m.metadata.entries = {{"command", "python -c 'x=1'"}, {"", ""}, {"pid", "4242"}, {"ünïcode", "✓"}};
        s.add(RecordType::kMetadata);  // no entries
    }
    return s;
}

// --- files ------------------------------------------------------------------

// An anonymous file; closed by the destructor.
struct TempFile {
    int fd;
    TempFile() : fd(memfd_create("capture", 0)) {}
    ~TempFile() { ::close(fd); }
    std::string contents() const {
        std::string out;
        char buf[65536];
        for (off_t at = 0;;) {
            ssize_t n = ::pread(fd, buf, sizeof buf, at);
            if (n <= 0) break;
            out.append(buf, static_cast<size_t>(n));
            at += n;
        }
        return out;
    }
};

// A file holding `bytes`, positioned at its start.
struct BytesFile {
    int fd;
    explicit BytesFile(std::string_view bytes) : fd(memfd_create("bytes", 0)) {
        EXPECT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
        ::lseek(fd, 0, SEEK_SET);
    }
    ~BytesFile() { ::close(fd); }
};

struct ChunkOut {
    ChunkType type;
    std::string payload;
};

// What a reader makes of a stream.
struct ReadResult {
    bool header_ok = false;
    FileHeader header;
    std::vector<ChunkOut> chunks;
    bool damaged = false;
    std::string error;
    uint64_t offset = 0;
};

ReadResult read_with_reader(std::string_view bytes) {
    BytesFile file(bytes);
    ChunkReader reader(file.fd);
    ReadResult r;
    r.header_ok = reader.read_header(&r.header);
    if (!r.header_ok) {
        r.error = reader.error();
        return r;
    }
    for (;;) {
        ChunkOut c;
        ChunkReader::Status status = reader.next(&c.type, &c.payload);
        if (status == ChunkReader::Status::kChunk) {
            r.chunks.push_back(std::move(c));
            continue;
        }
        r.damaged = status == ChunkReader::Status::kDamaged;
        r.error = reader.error();
        break;
    }
    r.offset = reader.offset();
    return r;
}

// The same through ChunkParser, fed `step` bytes at a time. A stream that
// ends mid-chunk is reported as damage here, as the reader reports it (the
// parser itself cannot know the stream ended).
ReadResult read_with_parser(std::string_view bytes, size_t step) {
    ChunkParser parser;
    ReadResult r;
    size_t fed = 0;
    bool done = false;
    while (!done) {
        ChunkOut c;
        FileHeader header;
        switch (parser.next(&header, &c.type, &c.payload)) {
            case ChunkParser::Status::kHeader:
                EXPECT_FALSE(r.header_ok);
                r.header_ok = true;
                r.header = header;
                break;
            case ChunkParser::Status::kChunk:
                r.chunks.push_back(std::move(c));
                break;
            case ChunkParser::Status::kDamaged:
                if (r.header_ok) r.damaged = true;
                r.error = parser.error();
                done = true;
                break;
            case ChunkParser::Status::kNeedMore:
                if (fed == bytes.size()) {
                    done = true;
                    break;
                }
                size_t n = std::min(step, bytes.size() - fed);
                parser.feed(bytes.substr(fed, n));
                fed += n;
                break;
        }
    }
    r.offset = parser.offset();
    return r;
}

// A small capture: header plus a few chunks of records, some compressed and
// some stored, and an end chunk. `boundaries` gets each chunk's start offset.
std::string small_capture(std::vector<size_t>* boundaries, std::vector<std::string>* payloads, int level = 3) {
    TempFile file;
    ChunkWriter writer(file.fd, level);
    FileHeader header;
    header.format = FileFormat::kAggregatedAllocations;
    header.native_traces = true;
    EXPECT_TRUE(writer.write_header(header));
    std::vector<std::string> pieces;
    RecordEncoder e;
    for (int chunk = 0; chunk < 4; ++chunk) {
        e.reset();
        for (int i = 0; i < 20 * (chunk + 1); ++i) {
            e.allocation(AllocationRecord{static_cast<uint32_t>(chunk), 0x1000 + static_cast<uint64_t>(i) * 32, 32,
                                          Allocator::kPymallocMalloc, 0, static_cast<uint32_t>(i % 3), 0});
        }
        if (chunk == 2) e.metadata(MetadataRecord{{{"random", std::string("\x13\x97\xfe\x01\x88", 5)}}});
        pieces.push_back(e.bytes());
    }
    boundaries->clear();
    for (const std::string& p : pieces) {
        boundaries->push_back(writer.bytes_written());
        EXPECT_TRUE(writer.write_chunk(ChunkType::kRecords, p)) << writer.error();
    }
    boundaries->push_back(writer.bytes_written());
    EXPECT_TRUE(writer.write_chunk(ChunkType::kEnd, {}));
    boundaries->push_back(writer.bytes_written());
    pieces.emplace_back();
    if (payloads) *payloads = pieces;
    return file.contents();
}

}  // namespace

// --- checksum -----------------------------------------------------------------

TEST(Crc32c, KnownVectorsAndHardwareMatchesSoftware) {
    EXPECT_EQ(crc32c("123456789", 9), 0xe3069283u);
    EXPECT_EQ(detail::crc32c_software("123456789", 9, 0), 0xe3069283u);
    EXPECT_EQ(crc32c("", 0), 0u);
    std::string zeros(32, '\0');
    EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8a9136aau);  // RFC 3720 B.4
    std::mt19937_64 rng(7);
    std::string data(5000, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    for (size_t offset = 0; offset < 9; ++offset) {
        for (size_t size : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{63}, size_t{4000}}) {
            EXPECT_EQ(crc32c(data.data() + offset, size), detail::crc32c_software(data.data() + offset, size, 0));
        }
    }
    // Continuing from a previous value is the same as one call.
    EXPECT_EQ(crc32c(data.data() + 100, 900, crc32c(data.data(), 100)), crc32c(data.data(), 1000));
}

// --- records --------------------------------------------------------------------

TEST(Records, EveryRecordTypeRoundTripsWithExtremeValues) {
    Script script = every_record_script();
    RecordEncoder encoder;
    script.encode(&encoder);
    std::string error;
    EXPECT_EQ(decode_all(encoder.view(), &error), script.text());
    EXPECT_EQ(error, "");
}

TEST(Records, ObjectRecordsAreDamageBeforeFormatVersion3) {
    RecordEncoder encoder;
    encoder.object(ObjectRecord{0, 0x7f00deadbee0, true, 5, 0});
    Record r;
    RecordDecoder version3(encoder.view(), true, true);
    ASSERT_TRUE(version3.next(&r));
    EXPECT_EQ(r.type, RecordType::kObject);
    RecordDecoder version2(encoder.view(), true, false);
    EXPECT_FALSE(version2.next(&r));
    EXPECT_NE(version2.error().find("object record in a capture older than format version 3"), std::string::npos);
    // A destruction carries no stack: a native flag on one is damage.
    std::string error;
    EXPECT_TRUE(decode_all(std::string("\x10\x02\x08", 3), &error).empty());
    EXPECT_NE(error.find("a destruction with a stack"), std::string::npos);
    EXPECT_TRUE(decode_all(std::string("\x10\x04\x08", 3), &error).empty());
    EXPECT_NE(error.find("unknown flag bits"), std::string::npos);
}

TEST(Records, LongStringsRoundTrip) {
    RecordEncoder encoder;
    const std::string long_name(3 << 20, 'n');
    encoder.code(CodeRecord{5, long_name, "f.py", 3});
    encoder.metadata(MetadataRecord{{{"k", long_name}}});
    RecordDecoder decoder(encoder.view());
    Record r;
    ASSERT_TRUE(decoder.next(&r));
    EXPECT_EQ(r.code.function, long_name);
    ASSERT_TRUE(decoder.next(&r));
    EXPECT_EQ(r.metadata.entries.at(0).second, long_name);
    EXPECT_FALSE(decoder.next(&r));
    EXPECT_EQ(decoder.error(), "");
}

TEST(Records, ResetRestartsDeltasSoEachPayloadDecodesAlone) {
    Script script = every_record_script();
    RecordEncoder encoder;
    script.encode(&encoder);
    const std::string first = encoder.bytes();
    encoder.reset();
    EXPECT_EQ(encoder.size(), 0u);
    script.encode(&encoder);
    EXPECT_EQ(encoder.bytes(), first);  // same state after reset: same bytes
}

TEST(Records, HotRecordsWriteInPlaceIntoTheReservedBuffer) {
    // The writer reserves its chunk buffers once: encoding events into the
    // reserved room must never reallocate (a hook would allocate), and what
    // was written must decode exactly.
    RecordEncoder encoder;
    encoder.reserve_bytes(1 << 16);
    const char* const data = encoder.view().data();
    Script script;
    uint64_t address = 0x7f0000000000;
    for (uint32_t i = 0; encoder.size() < (1 << 16) - 200; ++i) {
        address += (i % 3) * 48 + (i % 7 == 0 ? 5 : 0);  // steps aligned and not
        const Allocator allocator = i % 5 == 0 ? Allocator::kTrack : Allocator::kPymallocMalloc;
        Record& a = script.add(RecordType::kAllocation);
        a.allocation = AllocationRecord{1 + i % 3,  address, i % 700, allocator, allocator == Allocator::kTrack ? 4u : 0u,
                                        i % 11, i % 4 == 0 ? i : 0};
        encoder.allocation(a.allocation);
        if (i % 2 == 0) {
            Record& d = script.add(RecordType::kDeallocation);
            d.deallocation = DeallocationRecord{1, address, 0, Allocator::kPymallocFree, 0};
            encoder.deallocation(d.deallocation);
        }
    }
    EXPECT_EQ(encoder.view().data(), data) << "the reserved buffer was reallocated";
    EXPECT_EQ(encoder.bytes(), std::string(encoder.view()));
    std::string error;
    EXPECT_EQ(decode_all(encoder.view(), &error), script.text());
    EXPECT_EQ(error, "");
}

TEST(Records, HotRecordsAreSmall) {
    // A loop that allocates and frees one block from one stack, on one thread:
    // token + address step + size + stack step for an allocation, token +
    // address step for a free.
    RecordEncoder e;
    size_t first_pair = 0;
    for (int i = 0; i < 100; ++i) {
        e.allocation(AllocationRecord{1, 0x7f0012345670, 64, Allocator::kPymallocMalloc, 0, 17, 0});
        e.deallocation(DeallocationRecord{1, 0x7f0012345670, 0, Allocator::kPymallocFree, 0});
        if (i == 0) first_pair = e.size();
    }
    // The first pair carries a thread switch (2 bytes) and the whole address
    // (44 bits after dividing by 16: 7 bytes): 2 + 1 + 7 + 1 + 1 for the
    // allocation, 1 for the free (its address is in the cache). Then token,
    // size and stack step for an allocation, the token alone for a free.
    EXPECT_EQ(first_pair, 13u);
    EXPECT_EQ(e.size(), first_pair + 99 * (3 + 1));
    std::string error;
    std::vector<std::string> decoded = decode_all(e.view(), &error);
    ASSERT_EQ(decoded.size(), 200u);
    const std::string address = std::to_string(0x7f0012345670ULL);
    EXPECT_EQ(decoded[198], "type 6: 1 " + address + " 64 12 0 17 0 1");
    EXPECT_EQ(decoded[199], "type 7: 1 " + address + " 0 15 0");
}

TEST(Records, RandomEventStreamsRoundTrip) {
    // Addresses from a small pool (cache hits at every slot) and anywhere
    // (misses, aligned or not), every allocator, threads and native stacks
    // switching: the decoder must track the encoder's state exactly.
    std::mt19937_64 rng(2024);
    for (int trial = 0; trial < 200; ++trial) {
        Script script;
        std::vector<uint64_t> pool;
        for (int i = 0; i < 1 + static_cast<int>(rng() % 30); ++i) pool.push_back(rng() % 3 ? rng() & ~uint64_t{15} : rng());
        for (int i = 0; i < 500; ++i) {
            const uint64_t address = rng() % 4 ? pool[rng() % pool.size()] : rng() >> (rng() % 64);
            const auto allocator = static_cast<Allocator>(1 + rng() % kMaxAllocator);
            const uint32_t thread = rng() % 10 ? 3 : static_cast<uint32_t>(rng() % 5);
            const uint32_t domain = rng() % 10 ? 0 : static_cast<uint32_t>(rng());
            if (rng() % 2) {
                Record& r = script.add(RecordType::kAllocation);
                r.allocation = AllocationRecord{thread, address, rng() % 3 ? rng() % 600 : rng(), allocator, domain,
                                                static_cast<uint32_t>(rng() % 3 ? rng() % 50 : rng()),
                                                static_cast<uint32_t>(rng() % 3 == 0 ? 0 : rng() % 100),
                                                static_cast<uint32_t>(rng() % 5 ? 1 : rng() % 3 ? 1 + rng() % 5000 : (rng() | 1))};
            } else {
                Record& r = script.add(RecordType::kDeallocation);
                r.deallocation = DeallocationRecord{thread, address, rng() % 2 ? 0 : rng() % 100000, allocator, domain};
            }
            if (rng() % 50 == 0) {
                Record& n = script.add(RecordType::kPythonNode);
                n.python_node = PythonNodeRecord{static_cast<uint32_t>(rng()), static_cast<uint32_t>(rng() % 9), 1, 2, true};
            }
        }
        RecordEncoder encoder;
        script.encode(&encoder);
        std::string error;
        ASSERT_EQ(decode_all(encoder.view(), &error), script.text()) << "trial " << trial;
        ASSERT_EQ(error, "");
    }
}

TEST(Records, TruncatedPayloadDecodesWholeRecordsThenReportsTheCut) {
    Script script = every_record_script();
    RecordEncoder encoder;
    std::vector<size_t> ends;  // payload size after each record
    for (const Record& r : script.records) {
        Script one;
        one.records.push_back(r);
        one.encode(&encoder);
        ends.push_back(encoder.size());
    }
    const std::vector<std::string> all = script.text();
    const std::string bytes = encoder.bytes();
    for (size_t cut = 0; cut <= bytes.size(); ++cut) {
        std::string error;
        std::vector<std::string> got = decode_all(std::string_view(bytes).substr(0, cut), &error);
        const size_t whole = static_cast<size_t>(std::upper_bound(ends.begin(), ends.end(), cut) - ends.begin());
        ASSERT_EQ(got.size(), whole) << "cut at " << cut;
        EXPECT_TRUE(std::equal(got.begin(), got.end(), all.begin()));
        const bool at_boundary = cut == 0 || std::binary_search(ends.begin(), ends.end(), cut);
        if (at_boundary) {
            EXPECT_EQ(error, "") << "cut at " << cut;
        } else {
            EXPECT_NE(error.find("malformed record at payload offset " + std::to_string(whole ? ends[whole - 1] : 0)),
                      std::string::npos)
                << "cut at " << cut << ": " << error;
        }
    }
}

TEST(Records, MalformedBytesAreReportedNotTrusted) {
    std::string error;
    EXPECT_TRUE(decode_all(std::string("\x00", 1), &error).empty());
    EXPECT_NE(error.find("unknown record token 0x00"), std::string::npos);
    EXPECT_TRUE(decode_all("\x3f", &error).empty());
    EXPECT_NE(error.find("unknown record token 0x3f"), std::string::npos);
    // General-form allocation naming an allocator that does not exist.
    EXPECT_TRUE(decode_all(std::string("\x06\x00\x63\x00\x00\x00", 6), &error).empty());
    EXPECT_NE(error.find("unknown allocator"), std::string::npos);
    // A varint longer than ten bytes, and one whose tenth byte overflows 64 bits.
    EXPECT_TRUE(decode_all("\x08" + std::string(11, '\xff'), &error).empty());
    EXPECT_NE(error.find("malformed"), std::string::npos);
    EXPECT_TRUE(decode_all("\x08" + std::string(9, '\xff') + "\x02\x00\x00", &error).empty());
    EXPECT_NE(error.find("malformed"), std::string::npos);
    // A 32-bit field above 2^32, and a loaded-objects count far beyond the payload.
    EXPECT_TRUE(decode_all(std::string("\x01\x80\x80\x80\x80\x10\x00\x00", 8), &error).empty());
    EXPECT_NE(error.find("malformed"), std::string::npos);
    EXPECT_TRUE(decode_all(std::string("\x05\x01\xff\xff\xff\xff\x0f", 7), &error).empty());
    EXPECT_NE(error.find("exceeds the payload"), std::string::npos);
    // A string longer than what is left.
    EXPECT_TRUE(decode_all(std::string("\x01\x01\x01\x05" "ab", 6), &error).empty());
    EXPECT_NE(error.find("malformed record at payload offset 0"), std::string::npos);
    // A weight (sampled count) must precede an allocation.
    EXPECT_TRUE(decode_all(std::string("\x0f\x04\x50", 3), &error).empty());
    EXPECT_NE(error.find("weight token before a deallocation"), std::string::npos);
    EXPECT_TRUE(decode_all(std::string("\x0f\x04\x08\x00\x00\x00", 6), &error).empty());
    EXPECT_NE(error.find("weight token before a record that is not an allocation"), std::string::npos);
    EXPECT_TRUE(decode_all(std::string("\x0f", 1), &error).empty());
    EXPECT_NE(error.find("malformed"), std::string::npos);
    EXPECT_TRUE(decode_all(std::string("\x0f\x00\x80\x10\x00", 5), &error).empty());
    EXPECT_NE(error.find("weight 0"), std::string::npos);
    // A version 1 capture never had the token.
    {
        RecordDecoder v1(std::string_view("\x0f\x04\x80\x10\x00", 5), false);
        Record r{};
        EXPECT_FALSE(v1.next(&r));
        EXPECT_NE(v1.error().find("weight token in a format version 1 capture"), std::string::npos);
        RecordDecoder v2(std::string_view("\x0f\x04\x80\x10\x00", 5), true);
        ASSERT_TRUE(v2.next(&r));
        EXPECT_EQ(r.allocation.count, 4u);
    }
    // A python node whose delta takes its id below zero.
    EXPECT_TRUE(decode_all(std::string("\x03\x01\x00\x00\x00", 5), &error).empty());
    EXPECT_NE(error.find("malformed"), std::string::npos);
}

// --- chunks -----------------------------------------------------------------------

TEST(Chunks, RoundTripWithReaderAndParser) {
    for (int level : {0, 1, 3, 19}) {
        std::vector<size_t> boundaries;
        std::vector<std::string> payloads;
        const std::string bytes = small_capture(&boundaries, &payloads, level);
        ReadResult r = read_with_reader(bytes);
        ASSERT_TRUE(r.header_ok) << r.error;
        EXPECT_EQ(r.header.version, kFormatVersion);
        EXPECT_EQ(r.header.format, FileFormat::kAggregatedAllocations);
        EXPECT_TRUE(r.header.native_traces);
        EXPECT_FALSE(r.header.trace_python_allocators);
        EXPECT_FALSE(r.damaged) << r.error;
        ASSERT_EQ(r.chunks.size(), payloads.size());
        for (size_t i = 0; i < payloads.size(); ++i) {
            EXPECT_EQ(r.chunks[i].payload, payloads[i]);
            EXPECT_EQ(r.chunks[i].type, i + 1 == payloads.size() ? ChunkType::kEnd : ChunkType::kRecords);
        }
        EXPECT_EQ(r.offset, bytes.size());
        size_t raw = 0;
        for (const std::string& payload : payloads) raw += payload.size();
        if (level == 0) {
            EXPECT_EQ(bytes.size(), kFileHeaderBytes + payloads.size() * kChunkHeaderBytes + raw);
        } else {
            EXPECT_LT(bytes.size(), kFileHeaderBytes + raw);  // compressed: smaller than the payloads alone
        }
        ReadResult p = read_with_parser(bytes, 1);
        EXPECT_TRUE(p.header_ok);
        ASSERT_EQ(p.chunks.size(), r.chunks.size());
        for (size_t i = 0; i < r.chunks.size(); ++i) EXPECT_EQ(p.chunks[i].payload, r.chunks[i].payload);
    }
}

TEST(Chunks, NothingIsReadAfterTheEndChunk) {
    std::vector<size_t> boundaries;
    std::vector<std::string> payloads;
    std::string bytes = small_capture(&boundaries, &payloads);
    bytes += "trailing garbage that is never looked at";
    ReadResult r = read_with_reader(bytes);
    EXPECT_FALSE(r.damaged);
    EXPECT_EQ(r.chunks.size(), payloads.size());
    ReadResult p = read_with_parser(bytes, 7);
    EXPECT_FALSE(p.damaged);
    EXPECT_EQ(p.chunks.size(), payloads.size());
}

TEST(Chunks, TruncationAtEveryOffsetReadsUpToTheDamageAndSaysWhere) {
    std::vector<size_t> boundaries;
    std::vector<std::string> payloads;
    const std::string bytes = small_capture(&boundaries, &payloads);
    for (size_t cut = 0; cut <= bytes.size(); ++cut) {
        SCOPED_TRACE("cut at " + std::to_string(cut));
        const std::string_view prefix = std::string_view(bytes).substr(0, cut);
        ReadResult r = read_with_reader(prefix);
        if (cut < kFileHeaderBytes) {
            EXPECT_FALSE(r.header_ok);
            EXPECT_EQ(r.error, cut == 0 ? "not a heapscope capture (empty file)"
                                        : "damaged capture: the file header is cut short (" + std::to_string(cut) +
                                              " of 40 bytes)");
            continue;
        }
        ASSERT_TRUE(r.header_ok);
        // Whole chunks before the cut are all returned, intact.
        size_t whole = 0;
        while (whole + 1 < boundaries.size() && boundaries[whole + 1] <= cut) ++whole;
        ASSERT_EQ(r.chunks.size(), whole);
        for (size_t i = 0; i < whole; ++i) EXPECT_EQ(r.chunks[i].payload, payloads[i]);
        const bool at_boundary = std::find(boundaries.begin(), boundaries.end(), cut) != boundaries.end();
        EXPECT_EQ(r.damaged, !at_boundary);
        if (!at_boundary) {
            EXPECT_NE(r.error.find("chunk " + std::to_string(whole) + " at byte offset " +
                                   std::to_string(boundaries[whole]) + ": the file ends inside the chunk"),
                      std::string::npos)
                << r.error;
        }
        // The parser yields the same chunks from the same bytes.
        ReadResult p = read_with_parser(prefix, 5);
        EXPECT_TRUE(p.header_ok);
        EXPECT_EQ(p.chunks.size(), whole);
    }
}

TEST(Chunks, EveryBitFlipIsDetectedAndNothingAlteredIsReturned) {
    std::vector<size_t> boundaries;
    std::vector<std::string> payloads;
    const std::string bytes = small_capture(&boundaries, &payloads);
    int header_rejections = 0, chunk_damage = 0;
    for (size_t at = 0; at < bytes.size(); ++at) {
        for (int bit = 0; bit < 8; ++bit) {
            std::string flipped = bytes;
            flipped[at] = static_cast<char>(flipped[at] ^ (1 << bit));
            ReadResult r = read_with_reader(flipped);
            if (at < kFileHeaderBytes) {
                ASSERT_FALSE(r.header_ok) << "byte " << at << " bit " << bit;
                ++header_rejections;
                continue;
            }
            // The chunk holding the flipped byte is reported, with its number
            // and offset; the ones before it are returned unchanged.
            size_t chunk = 0;
            while (boundaries[chunk + 1] <= at) ++chunk;
            ASSERT_TRUE(r.damaged) << "byte " << at << " bit " << bit;
            ASSERT_EQ(r.chunks.size(), chunk);
            for (size_t i = 0; i < chunk; ++i) ASSERT_EQ(r.chunks[i].payload, payloads[i]);
            EXPECT_NE(r.error.find("chunk " + std::to_string(chunk) + " at byte offset " +
                                   std::to_string(boundaries[chunk])),
                      std::string::npos)
                << r.error;
            ++chunk_damage;
        }
    }
    EXPECT_EQ(header_rejections, 40 * 8);
    EXPECT_EQ(chunk_damage, static_cast<int>((bytes.size() - 40) * 8));
}

TEST(Chunks, ForeignEmptyAndNewerFilesAreRefusedClearly) {
    EXPECT_EQ(read_with_reader("").error, "not a heapscope capture (empty file)");
    EXPECT_EQ(read_with_reader("#!/usr/bin/env python\nprint('hello')\n").error, "not a heapscope capture");
    EXPECT_EQ(read_with_reader(std::string("memray\0\0\0\x0d", 10)).error, "not a heapscope capture");
    EXPECT_EQ(read_with_reader("HEAP").error, "damaged capture: the file header is cut short (4 of 40 bytes)");

    std::vector<size_t> boundaries;
    std::string bytes = small_capture(&boundaries, nullptr);
    std::string newer = bytes;
    newer[24] = 7;  // version 7, header checksum now wrong: the version is named first
    EXPECT_EQ(read_with_reader(newer).error, "capture format version 7 is newer than this heapscope (reads up to 3)");
    newer[24] = 0;
    EXPECT_EQ(read_with_reader(newer).error, "not a heapscope capture (format version 0)");
    // The parser says the same.
    newer[24] = 4;
    ReadResult p = read_with_parser(newer, 3);
    EXPECT_FALSE(p.header_ok);
    EXPECT_EQ(p.error, "capture format version 4 is newer than this heapscope (reads up to 3)");
    EXPECT_EQ(read_with_parser("PK\x03\x04 a zip file", 1).error, "not a heapscope capture");
}

TEST(Chunks, MissingOrRepeatedChunksBreakTheSequence) {
    std::vector<size_t> b;
    std::vector<std::string> payloads;
    const std::string bytes = small_capture(&b, &payloads);
    // Chunk 1 removed.
    std::string missing = bytes.substr(0, b[1]) + bytes.substr(b[2]);
    ReadResult r = read_with_reader(missing);
    EXPECT_EQ(r.chunks.size(), 1u);
    EXPECT_TRUE(r.damaged);
    EXPECT_NE(r.error.find("chunk 1 at byte offset " + std::to_string(b[1]) + ": sequence number 2 where 1"),
              std::string::npos)
        << r.error;
    // Chunk 0 repeated.
    std::string repeated = bytes.substr(0, b[1]) + bytes.substr(b[0], b[1] - b[0]) + bytes.substr(b[1]);
    r = read_with_reader(repeated);
    EXPECT_EQ(r.chunks.size(), 1u);
    EXPECT_NE(r.error.find("sequence number 0 where 1"), std::string::npos) << r.error;
    EXPECT_EQ(read_with_parser(repeated, 64).error, r.error);
}

TEST(Chunks, AbsurdLengthsWithAValidHeaderChecksumAreDamage) {
    std::vector<size_t> b;
    const std::string bytes = small_capture(&b, nullptr, 0);
    std::string bad = bytes;
    const size_t h = b[0];
    uint32_t huge = 0x80000000u;  // raw and stored lengths of 2 GiB
    std::memcpy(&bad[h + 12], &huge, 4);
    std::memcpy(&bad[h + 16], &huge, 4);
    const uint32_t crc = crc32c(bad.data() + h, 24);
    std::memcpy(&bad[h + 24], &crc, 4);
    ReadResult r = read_with_reader(bad);
    EXPECT_TRUE(r.damaged);
    EXPECT_EQ(r.error, "damaged capture: chunk 0 at byte offset 40: absurd chunk length");
    EXPECT_EQ(read_with_parser(bad, 1).error, r.error);
}

TEST(Chunks, ParserFedOneByteAtATimeEqualsTheReaderOnGoodAndDamagedStreams) {
    std::vector<size_t> b;
    std::vector<std::string> payloads;
    const std::string bytes = small_capture(&b, &payloads);
    std::mt19937 rng(3);
    for (int trial = 0; trial < 200; ++trial) {
        std::string damaged = bytes;
        if (trial > 0) {
            const size_t at = kFileHeaderBytes + rng() % (bytes.size() - kFileHeaderBytes);
            damaged[at] = static_cast<char>(damaged[at] ^ (1 << (rng() % 8)));
        }
        ReadResult r = read_with_reader(damaged);
        ReadResult p = read_with_parser(damaged, 1);
        ASSERT_EQ(p.chunks.size(), r.chunks.size());
        for (size_t i = 0; i < r.chunks.size(); ++i) EXPECT_EQ(p.chunks[i].payload, r.chunks[i].payload);
        EXPECT_EQ(p.damaged, r.damaged);
        EXPECT_EQ(p.error, r.error);
    }
}

TEST(Chunks, IncompressiblePayloadsAreStoredAndEmptyOnesAllowed) {
    TempFile file;
    ChunkWriter writer(file.fd, 3);
    ASSERT_TRUE(writer.write_header(FileHeader{}));
    std::mt19937_64 rng(1);
    std::string noise(10000, '\0');
    for (char& c : noise) c = static_cast<char>(rng());
    ASSERT_TRUE(writer.write_chunk(ChunkType::kRecords, noise));
    EXPECT_EQ(writer.bytes_written(), kFileHeaderBytes + kChunkHeaderBytes + noise.size());
    ASSERT_TRUE(writer.write_chunk(ChunkType::kRecords, {}));
    ReadResult r = read_with_reader(file.contents());
    ASSERT_EQ(r.chunks.size(), 2u);
    EXPECT_EQ(r.chunks[0].payload, noise);
    EXPECT_EQ(r.chunks[1].payload, "");
    EXPECT_FALSE(r.damaged);
}

TEST(Chunks, WriteErrorsAreReportedWithoutSignals) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    ::close(fds[0]);  // nobody will ever read: a write raises SIGPIPE unless guarded
    ChunkWriter writer(fds[1], 1);
    EXPECT_FALSE(writer.write_header(FileHeader{}));
    EXPECT_NE(writer.error().find("Broken pipe"), std::string::npos) << writer.error();
    EXPECT_TRUE(writer.failed());
    EXPECT_FALSE(writer.write_chunk(ChunkType::kRecords, "x"));  // stays failed
    ::close(fds[1]);

    const int full = ::open("/dev/full", O_WRONLY);
    if (full >= 0) {
        ChunkWriter to_full(full, 1);
        EXPECT_FALSE(to_full.write_header(FileHeader{}));
        EXPECT_NE(to_full.error().find("No space left"), std::string::npos) << to_full.error();
        ::close(full);
    }
}
