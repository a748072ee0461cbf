// The logical records of a capture file, and the two sides of their codec.
//
// A capture is a file header followed by checksummed chunks (chunk_io.h).
// Each chunk's payload is a sequence of records encoded by RecordEncoder and
// read back by RecordDecoder. Deltas and other encoder state restart at every
// chunk, so each chunk decodes on its own; definitions (threads, code, stack
// nodes, loaded objects) accumulate across chunks and always come before the
// first record that uses them. docs/capture-format.md specifies the bytes.
//
// Python-free and allocator-hook-free: used by the writer inside the traced
// process and by the reader offline.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/loaded_object.h"
#include "format/varint.h"
#include "model/allocator.h"

namespace heapscope::format {

enum class RecordType : uint8_t {
    kThread = 1,        // ThreadRecord
    kCode = 2,          // CodeRecord
    kPythonNode = 3,    // PythonNodeRecord
    kNativeNode = 4,    // NativeNodeRecord
    kLoadedObjects = 5, // LoadedObjectsRecord
    kAllocation = 6,    // AllocationRecord
    kDeallocation = 7,  // DeallocationRecord
    kMemory = 8,        // MemoryRecord
    kCheckpoint = 9,    // CheckpointRecord (aggregated format)
    kLocation = 10,     // LocationRecord (aggregated format, follows its checkpoint)
    kMetadata = 11,     // MetadataRecord (key/value pairs: start of capture, and end)
    kObject = 16,       // ObjectRecord (format version 3: track_object_lifetimes)
};

struct ThreadRecord {
    uint32_t thread;  // small id, as in AllocationEvent
    uint64_t os_tid;
    std::string name;
};
struct CodeRecord {
    uint32_t code;  // small id given by the writer, dense from 1
    std::string function;
    std::string filename;
    int32_t first_lineno;
};
struct PythonNodeRecord {
    uint32_t node;    // engine node id
    uint32_t parent;  // 0: outermost frame
    uint32_t code;    // CodeRecord id; 0 for an unknown frame
    int32_t lineno;
    bool is_entry;
};
struct NativeNodeRecord {
    uint32_t node;
    uint32_t parent;
    uint64_t ip;  // return address as captured
};
struct LoadedObjectsRecord {
    uint32_t generation;  // increases at each change; native nodes written after it resolve against it
    std::vector<LoadedObject> objects;
};
struct AllocationRecord {
    uint32_t thread;
    uint64_t address;
    uint64_t size;
    Allocator allocator;
    uint32_t domain;
    uint32_t python_node;
    uint32_t native_node;
    // Blocks this record stands for: 1, or while sampling the weight that
    // makes estimates unbiased (then `size` is the estimated bytes). Carried
    // by a Weight state token (0x0F) before the record when not 1.
    uint32_t count = 1;
};
struct DeallocationRecord {
    uint32_t thread;
    uint64_t address;
    uint64_t size;  // 0 except for munmap (length unmapped)
    Allocator allocator;
    uint32_t domain;
};
// A Python object made or destroyed while a capture tracked object
// lifetimes (memray's ObjectRecord). A creation carries the stacks that made
// it; a destruction none. In the aggregated format: the objects still alive
// at a clean stop, after the final checkpoint, each as a creation.
struct ObjectRecord {
    uint32_t thread;
    uint64_t address;  // the PyObject*
    bool created;
    uint32_t python_node = 0;  // creations only
    uint32_t native_node = 0;
};
struct MemoryRecord {
    uint64_t time_ms;  // since the capture started
    uint64_t rss;      // resident set size, bytes
    uint64_t heap;     // traced bytes outstanding
};
// The aggregated format's state at one moment. Every LocationRecord that
// follows it (up to the next checkpoint) updates one location; a location not
// repeated keeps its last written state. A location's bytes at the high-water
// mark are `current` if its `epoch` < the checkpoint's `peak_epoch`, else `at_peak`
// (see model/high_water_mark.h for why).
struct CheckpointRecord {
    uint64_t time_ms;
    uint64_t peak_epoch;   // times the heap reached its maximum (again)
    uint64_t heap;         // bytes outstanding
    uint64_t peak_heap;    // high-water mark so far
    uint32_t locations;    // LocationRecords that follow
    bool final;            // written by a clean stop: leaks are final
};
struct LocationRecord {
    uint32_t location;  // id given by the writer
    uint32_t thread;
    Allocator allocator;
    uint32_t domain;
    uint32_t python_node;
    uint32_t native_node;
    uint64_t current_count, current_bytes;  // outstanding now
    uint64_t at_peak_count, at_peak_bytes;  // outstanding at the last high-water mark seen while it changed
    uint64_t epoch;                         // peak_epoch when it last changed
    uint64_t total_count, total_bytes;      // ever allocated here
};
struct MetadataRecord {
    std::vector<std::pair<std::string, std::string>> entries;
};

namespace detail {
// What the encoder remembers within a chunk, and the decoder mirrors: the
// base of every delta (docs/capture-format.md, "Codec state").
struct CodecState {
    // Recently used block addresses, most recent first: an allocation or a
    // free at one of them names its slot instead of the address. (A ring
    // buffer, to insert without shifting, measured no faster at -O3: the
    // shifts are a few vector moves.)
    static constexpr int kAddressSlots = 14;
    uint64_t recent_addresses[kAddressSlots] = {};
    uint32_t thread = 0;              // of the allocations and deallocations that follow
    bool native = false;              // compact allocations carry a native node
    uint32_t last_python_node = 0;    // allocations
    uint32_t last_native_node = 0;    // allocations
    uint64_t last_ip = 0;             // native nodes
    uint32_t last_node_id = 0;        // python nodes
    uint32_t last_native_node_id = 0; // native nodes
    uint32_t last_location = 0;       // location records

    // The address in slot `slot` (0: the most recent).
    uint64_t recent(int slot) const { return recent_addresses[slot]; }
    // The slot holding `address`, or -1.
    int find(uint64_t address) const {
        for (int i = 0; i < kAddressSlots; ++i) {
            if (recent_addresses[i] == address) return i;
        }
        return -1;
    }
    // Moves slot `slot` to the front.
    void promote(int slot) {
        const uint64_t address = recent_addresses[slot];
        for (int i = slot; i > 0; --i) recent_addresses[i] = recent_addresses[i - 1];
        recent_addresses[0] = address;
    }
    // Puts `address` at the front, dropping the least recent.
    void insert(uint64_t address) {
        for (int i = kAddressSlots - 1; i > 0; --i) recent_addresses[i] = recent_addresses[i - 1];
        recent_addresses[0] = address;
    }
};

// Record tokens and the compact forms' tables (docs/capture-format.md,
// "Records"; records.cpp has the layout). Here, not in records.cpp, because
// the hot-path encoders below are inline: the writer's hooks compile them in
// place instead of calling across translation units.

// The allocators of the compact forms. Stored in files: never reorder.
inline constexpr Allocator kCompactAllocators[8] = {
    Allocator::kPymallocMalloc, Allocator::kPymallocRealloc, Allocator::kPymallocCalloc, Allocator::kMalloc,
    Allocator::kRealloc,        Allocator::kCalloc,          Allocator::kMmap,           Allocator::kPosixMemalign,
};
inline constexpr Allocator kCompactDeallocators[4] = {
    Allocator::kPymallocFree,
    Allocator::kFree,
    Allocator::kUntrack,
    Allocator::kMunmap,  // the only compact deallocation that carries a size
};

inline constexpr uint8_t kThreadSwitch = 0x0c;
// State token (format version 2): the next record, an allocation, stands for
// this many blocks (sampling weight), not 1.
inline constexpr uint8_t kWeight = 0x0f;
inline constexpr uint8_t kNativeOn = 0x0d;
inline constexpr uint8_t kNativeOff = 0x0e;
inline constexpr uint8_t kMissAligned = 14;
inline constexpr uint8_t kMissUnaligned = 15;
// General-form flags
inline constexpr uint8_t kHasDomain = 0x01;
inline constexpr uint8_t kHasNativeOrSize = 0x02;  // allocations: a native node; deallocations: a size

// Index in kCompactAllocators (a lookup table indexed by the enum value), or
// -1 for the allocators that take the general form.
constexpr int8_t compact_index(Allocator a, const Allocator* table, int n) {
    for (int i = 0; i < n; ++i) {
        if (table[i] == a) return static_cast<int8_t>(i);
    }
    return -1;
}
struct CompactTables {
    int8_t allocation[256];
    int8_t deallocation[256];
};
constexpr CompactTables make_compact_tables() {
    CompactTables t{};
    for (int v = 0; v < 256; ++v) {
        t.allocation[v] = compact_index(static_cast<Allocator>(v), kCompactAllocators, 8);
        t.deallocation[v] = compact_index(static_cast<Allocator>(v), kCompactDeallocators, 4);
    }
    return t;
}
inline constexpr CompactTables kCompact = make_compact_tables();

// Chooses how `address` is written: its cache slot, or a miss code with the
// step (in `*step`) from the most recent address. Updates the cache.
inline uint8_t address_code(CodecState* state, uint64_t address, uint64_t* step) {
    const int slot = state->find(address);
    if (slot >= 0) {
        state->promote(slot);
        return static_cast<uint8_t>(slot);
    }
    const int64_t delta = static_cast<int64_t>(address - state->recent(0));
    state->insert(address);
    if ((delta & 15) == 0) {
        *step = zigzag(delta >> 4);  // arithmetic shift: exact for multiples of 16
        return kMissAligned;
    }
    *step = zigzag(delta);
    return kMissUnaligned;
}

// The thread switch that must precede an event of `thread`, if any.
inline char* put_thread(CodecState* state, char* p, uint32_t thread) {
    if (thread != state->thread) {
        *p++ = static_cast<char>(kThreadSwitch);
        p = put_varint(p, thread);
        state->thread = thread;
    }
    return p;
}

// The longest record each hot-path encoder can write, for room().
inline constexpr size_t kMaxAllocationBytes = 2 + kMaxVarintBytes  // thread switch
                                              + 1                    // native on/off
                                              + 1 + kMaxVarintBytes  // weight
                                              + 4 + 5 * kMaxVarintBytes;
inline constexpr size_t kMaxDeallocationBytes = 2 + kMaxVarintBytes + 4 + 3 * kMaxVarintBytes;

}  // namespace detail

// Appends records to a chunk payload. Not thread-safe; never calls Python.
//
// Hot path: allocation() and deallocation() write straight into a byte
// buffer that always has room for the longest event record: no intermediate
// copy, no std::string bookkeeping. The buffer only grows (out of line) when
// a record would not fit; the writer reserves enough up front that it
// rarely does.
class RecordEncoder {
  public:
    RecordEncoder();
    void thread(const ThreadRecord& r);
    void code(const CodeRecord& r);
    void python_node(const PythonNodeRecord& r);
    void native_node(const NativeNodeRecord& r);
    void loaded_objects(const LoadedObjectsRecord& r);
    void allocation(const AllocationRecord& r);
    void deallocation(const DeallocationRecord& r);
    void memory(const MemoryRecord& r);
    void checkpoint(const CheckpointRecord& r);
    void location(const LocationRecord& r);
    void metadata(const MetadataRecord& r);
    void object(const ObjectRecord& r);

    // The payload so far; valid until the next call that appends or resets.
    std::string_view view() const { return {data_, size_}; }
    // A copy of the payload, for callers that keep it past the next append.
    std::string bytes() const { return std::string(view()); }
    size_t size() const { return size_; }
    // Starts a new chunk payload: clears the bytes and the delta state.
    void reset();
    // Reserves room so that appending up to `bytes` in all does not allocate.
    void reserve_bytes(size_t bytes);
    // Starts a new chunk payload in memory the caller owns (`capacity`
    // bytes, e.g. a file window shared with the kernel): records are written
    // there until a record does not fit, when the encoder moves what it has
    // to a buffer of its own and goes on there (spilled() turns true).
    void attach(char* data, size_t capacity);
    // The records no longer live in the attached memory (see attach).
    bool spilled() const { return spilled_; }
    size_t capacity() const { return capacity_; }

  private:
    // Room for `n` more bytes at the end; grows the buffer if needed.
    char* room(size_t n) {
        if (capacity_ - size_ < n) grow(n);
        return data_ + size_;
    }
    void grow(size_t n);
    void append_varint(uint64_t v);
    void append_string(std::string_view s);

    char* data_ = nullptr;          // capacity_ bytes, the first size_ written: owned_, or attached memory
    std::unique_ptr<char[]> owned_;
    size_t owned_capacity_ = 0;     // owned_'s size
    bool attached_ = false;         // data_ is the caller's
    bool spilled_ = false;          // a record did not fit the attached memory
    size_t size_ = 0;
    size_t capacity_ = 0;
    detail::CodecState state_;  // restarted by reset()
};

// The head of an Allocation or Deallocation record: one compact byte (kind
// bit, allocator slot, address code) when the allocator has a compact slot
// in domain 0, else the long form (type, flags, allocator, address code, domain).
inline char* put_event_token(char* p, uint8_t kind_bit, int8_t compact, RecordType type, uint8_t flags,
                             Allocator allocator, uint8_t where, uint32_t domain) {
    if (compact >= 0) {
        *p++ = static_cast<char>(kind_bit | (compact << 4) | where);
        return p;
    }
    *p++ = static_cast<char>(type);
    *p++ = static_cast<char>(flags);
    *p++ = static_cast<char>(allocator);
    *p++ = static_cast<char>(where);
    if (domain) p = detail::put_varint(p, domain);
    return p;
}

inline void RecordEncoder::allocation(const AllocationRecord& r) {
    using namespace detail;
    char* const start = room(kMaxAllocationBytes);
    char* p = put_thread(&state_, start, r.thread);
    if (r.count != 1) {
        *p++ = static_cast<char>(kWeight);
        p = put_varint(p, r.count);
    }
    const bool has_native = r.native_node != 0;
    const int8_t compact = r.domain == 0 ? kCompact.allocation[static_cast<uint8_t>(r.allocator)] : -1;
    if (compact >= 0 && has_native != state_.native) {
        *p++ = static_cast<char>(has_native ? kNativeOn : kNativeOff);
        state_.native = has_native;
    }
    uint64_t step = 0;
    const uint8_t where = address_code(&state_, r.address, &step);
    p = put_event_token(p, 0x80, compact, RecordType::kAllocation,
                        (r.domain ? kHasDomain : 0) | (has_native ? kHasNativeOrSize : 0), r.allocator, where, r.domain);
    if (where >= kMissAligned) p = put_varint(p, step);
    p = put_varint(p, r.size);
    p = put_varint(p, delta32(r.python_node, state_.last_python_node));
    state_.last_python_node = r.python_node;
    if (has_native) {
        p = put_varint(p, delta32(r.native_node, state_.last_native_node));
        state_.last_native_node = r.native_node;
    }
    size_ += static_cast<size_t>(p - start);
}

inline void RecordEncoder::deallocation(const DeallocationRecord& r) {
    using namespace detail;
    char* const start = room(kMaxDeallocationBytes);
    char* p = put_thread(&state_, start, r.thread);
    int8_t compact = r.domain == 0 ? kCompact.deallocation[static_cast<uint8_t>(r.allocator)] : -1;
    const bool sized = r.allocator == Allocator::kMunmap;
    if (r.size != 0 && !sized) compact = -1;  // only munmap's compact form has a size
    uint64_t step = 0;
    const uint8_t where = address_code(&state_, r.address, &step);
    p = put_event_token(p, 0x40, compact, RecordType::kDeallocation,
                        (r.domain ? kHasDomain : 0) | (r.size ? kHasNativeOrSize : 0), r.allocator, where, r.domain);
    if (where >= kMissAligned) p = put_varint(p, step);
    if (compact >= 0 ? sized : r.size != 0) p = put_varint(p, r.size);
    size_ += static_cast<size_t>(p - start);
}


// One decoded record; `type` says which member is meaningful.
struct Record {
    RecordType type;
    ThreadRecord thread;
    CodeRecord code;
    PythonNodeRecord python_node;
    NativeNodeRecord native_node;
    LoadedObjectsRecord loaded_objects;
    AllocationRecord allocation;
    DeallocationRecord deallocation;
    MemoryRecord memory;
    CheckpointRecord checkpoint;
    LocationRecord location;
    MetadataRecord metadata;
    ObjectRecord object;
};

// Reads the records of one chunk payload.
class RecordDecoder {
  public:
    // `weights_allowed`: the capture is format version 2 or later; in a
    // version 1 capture a Weight token is damage. `objects_allowed`: version
    // 3 or later; before it an Object record is damage.
    explicit RecordDecoder(std::string_view payload, bool weights_allowed = true, bool objects_allowed = true);
    // The next record: true, or false at the end of the payload or on
    // malformed bytes (then error() says what and where).
    bool next(Record* out);
    const std::string& error() const { return error_; }

  private:
    std::string_view in_;
    size_t pos_ = 0;
    bool weights_allowed_ = true;
    bool objects_allowed_ = true;
    std::string error_;
    detail::CodecState state_;  // the encoder's, mirrored
    bool fail(size_t record_start, const char* what);
};

}  // namespace heapscope::format
