// Record encoding. docs/capture-format.md ("Records") is the specification;
// the token layout is repeated here; the tokens, the compact tables and the
// hot-path encoders (Allocation, Deallocation) are inline in records.h.
//
//   0b1aaahhhh   Allocation, compact: aaa indexes kCompactAllocators
//   0b01aahhhh   Deallocation, compact: aa indexes kCompactDeallocators
//   0x01-0x0b    every other record: the token is its RecordType; 0x06 and
//                0x07 are the general forms of Allocation and Deallocation
//                (any allocator, a domain, explicit presence flags)
//   0x0c         thread switch: the events that follow are this thread's
//   0x0d / 0x0e  compact allocations carry a native node / do not
//   0x10         Object (version 3): thread switch state as for events
//
//   hhhh: 0-13 the block's address is in that slot of the recent-address
//   cache (CodecState); 14 a miss whose step from the most recent address is
//   a multiple of 16, stored divided by 16; 15 a miss, step stored as is.
//
// Why a cache: pymalloc hands back the block just freed, and a temporary is
// freed soon after it is made, so half the allocations and two thirds of the
// frees of a Python loop hit one of the last few addresses (measured on a
// JSON workload: 49% and 65% with 14 slots). A hit costs no address bytes,
// and the repeated bytes of a loop's iterations are what zstd compresses best.
// Why move-to-front: cheaper caches that keep an address in a fixed slot
// (direct-mapped 16 or 32 slots, or round-robin 14) cost 2-3 ns less per
// event in a replay, but made bench/workloads/alloc_heavy.py's capture 1.7x
// (round-robin) to 2.5x (direct-mapped) larger after zstd: a hit's slot
// number then varies with the address instead of being "the one used last".
//
// Hot-path cost: Allocation and Deallocation are written in place into the
// chunk buffer (room() checks for the longest possible record once), inlined
// into the writer's hooks; no allocation unless the buffer grows.
#include "format/records.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "format/varint.h"

namespace heapscope::format {

using namespace detail;  // varints, tokens and tables (varint.h, records.h)

namespace {

bool valid_allocator(uint8_t value) { return value >= 1 && value <= kMaxAllocator; }

}  // namespace

RecordEncoder::RecordEncoder() = default;

void RecordEncoder::reset() {
    if (attached_ || spilled_) {  // back to a buffer of its own
        attached_ = spilled_ = false;
        data_ = owned_.get();
        capacity_ = owned_capacity_;
    }
    size_ = 0;
    state_ = detail::CodecState{};
}

void RecordEncoder::attach(char* data, size_t capacity) {
    data_ = data;
    capacity_ = capacity;
    attached_ = true;
    spilled_ = false;
    size_ = 0;
    state_ = detail::CodecState{};
}

void RecordEncoder::reserve_bytes(size_t bytes) {
    if (bytes > capacity_) grow(bytes - size_);
}

void RecordEncoder::grow(size_t n) {
    const size_t capacity = std::max(size_ + n, capacity_ * 2);
    std::unique_ptr<char[]> data(new char[capacity]);  // uninitialised: only written bytes are read
    if (size_) std::memcpy(data.get(), data_, size_);
    owned_ = std::move(data);
    data_ = owned_.get();
    capacity_ = capacity;
    owned_capacity_ = capacity;
    if (attached_) {
        attached_ = false;
        spilled_ = true;
    }
}

void RecordEncoder::append_varint(uint64_t v) {
    char* p = room(detail::kMaxVarintBytes);
    size_ = static_cast<size_t>(detail::put_varint(p, v) - data_);
}

void RecordEncoder::append_string(std::string_view s) {
    append_varint(s.size());
    std::memcpy(room(s.size()), s.data(), s.size());
    size_ += s.size();
}

void RecordEncoder::thread(const ThreadRecord& r) {
    *room(1) = static_cast<char>(RecordType::kThread);
    ++size_;
    append_varint(r.thread);
    append_varint(r.os_tid);
    append_string(r.name);
}

void RecordEncoder::code(const CodeRecord& r) {
    *room(1) = static_cast<char>(RecordType::kCode);
    ++size_;
    append_varint(r.code);
    append_string(r.function);
    append_string(r.filename);
    append_varint(zigzag(r.first_lineno));
}

void RecordEncoder::python_node(const PythonNodeRecord& r) {
    char* const start = room(1 + 4 * detail::kMaxVarintBytes);
    char* p = start;
    *p++ = static_cast<char>(RecordType::kPythonNode);
    p = put_varint(p, delta32(r.node, state_.last_node_id));
    p = put_varint(p, delta32(r.parent, r.node));
    p = put_varint(p, r.code);
    p = put_varint(p, (zigzag(r.lineno) << 1) | (r.is_entry ? 1 : 0));
    size_ += static_cast<size_t>(p - start);
    state_.last_node_id = r.node;
}

void RecordEncoder::native_node(const NativeNodeRecord& r) {
    char* const start = room(1 + 3 * detail::kMaxVarintBytes);
    char* p = start;
    *p++ = static_cast<char>(RecordType::kNativeNode);
    p = put_varint(p, delta32(r.node, state_.last_native_node_id));
    p = put_varint(p, delta32(r.parent, r.node));
    p = put_varint(p, delta64(r.ip, state_.last_ip));
    size_ += static_cast<size_t>(p - start);
    state_.last_native_node_id = r.node;
    state_.last_ip = r.ip;
}

void RecordEncoder::loaded_objects(const LoadedObjectsRecord& r) {
    *room(1) = static_cast<char>(RecordType::kLoadedObjects);
    ++size_;
    append_varint(r.generation);
    append_varint(r.objects.size());
    for (const LoadedObject& object : r.objects) {
        append_string(object.path);
        append_varint(object.load_bias);
        append_varint(object.segments.size());
        for (const LoadedSegment& segment : object.segments) {
            append_varint(segment.vaddr);
            append_varint(segment.memsz);
        }
    }
}

void RecordEncoder::memory(const MemoryRecord& r) {
    char* const start = room(1 + 3 * detail::kMaxVarintBytes);
    char* p = start;
    *p++ = static_cast<char>(RecordType::kMemory);
    p = put_varint(p, r.time_ms);
    p = put_varint(p, r.rss);
    p = put_varint(p, r.heap);
    size_ += static_cast<size_t>(p - start);
}

void RecordEncoder::checkpoint(const CheckpointRecord& r) {
    char* const start = room(2 + 5 * detail::kMaxVarintBytes);
    char* p = start;
    *p++ = static_cast<char>(RecordType::kCheckpoint);
    *p++ = static_cast<char>(r.final ? 1 : 0);
    p = put_varint(p, r.time_ms);
    p = put_varint(p, r.peak_epoch);
    p = put_varint(p, r.heap);
    p = put_varint(p, r.peak_heap);
    p = put_varint(p, r.locations);
    size_ += static_cast<size_t>(p - start);
}

void RecordEncoder::location(const LocationRecord& r) {
    char* const start = room(2 + 12 * detail::kMaxVarintBytes);
    char* p = start;
    *p++ = static_cast<char>(RecordType::kLocation);
    p = put_varint(p, delta32(r.location, state_.last_location));
    p = put_varint(p, r.thread);
    *p++ = static_cast<char>(r.allocator);
    p = put_varint(p, r.domain);
    p = put_varint(p, r.python_node);
    p = put_varint(p, r.native_node);
    p = put_varint(p, r.current_count);
    p = put_varint(p, r.current_bytes);
    p = put_varint(p, r.at_peak_count);
    p = put_varint(p, r.at_peak_bytes);
    p = put_varint(p, r.epoch);
    p = put_varint(p, r.total_count);
    p = put_varint(p, r.total_bytes);
    size_ += static_cast<size_t>(p - start);
    state_.last_location = r.location;
}

void RecordEncoder::metadata(const MetadataRecord& r) {
    *room(1) = static_cast<char>(RecordType::kMetadata);
    ++size_;
    append_varint(r.entries.size());
    for (const auto& [key, value] : r.entries) {
        append_string(key);
        append_string(value);
    }
}

namespace {
constexpr uint8_t kObjectCreated = 0x01;
constexpr uint8_t kObjectHasNative = 0x02;
}  // namespace

void RecordEncoder::object(const ObjectRecord& r) {
    char* const start = room(2 + kMaxVarintBytes + 2 + 3 * kMaxVarintBytes);
    char* p = put_thread(&state_, start, r.thread);
    *p++ = static_cast<char>(RecordType::kObject);
    const bool has_native = r.created && r.native_node != 0;
    *p++ = static_cast<char>((r.created ? kObjectCreated : 0) | (has_native ? kObjectHasNative : 0));
    p = put_varint(p, r.address);
    if (r.created) p = put_varint(p, r.python_node);
    if (has_native) p = put_varint(p, r.native_node);
    size_ += static_cast<size_t>(p - start);
}

// ---------------------------------------------------------------------------

RecordDecoder::RecordDecoder(std::string_view payload, bool weights_allowed, bool objects_allowed)
    : in_(payload), weights_allowed_(weights_allowed), objects_allowed_(objects_allowed) {}

bool RecordDecoder::fail(size_t record_start, const char* what) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "malformed record at payload offset %zu: %s", record_start, what);
    error_ = buf;
    pos_ = in_.size();  // nothing more is decoded from this payload
    return false;
}

bool RecordDecoder::next(Record* out) {
    using detail::get_delta32;
    using detail::get_i32;
    using detail::get_string;
    using detail::get_u32;
    using detail::get_varint;
    if (pos_ >= in_.size()) return false;
    const size_t start = pos_;
    const std::string_view in = in_;
    size_t* pos = &pos_;
    constexpr const char* kTruncated = "truncated or out-of-range field";

    // State tokens belong to the record they precede.
    uint8_t token = static_cast<uint8_t>(in[pos_++]);
    uint32_t weight = 1;
    bool weighted = false;
    while (token == kThreadSwitch || token == kNativeOn || token == kNativeOff || token == kWeight) {
        if (token == kThreadSwitch) {
            if (!get_u32(in, pos, &state_.thread)) return fail(start, kTruncated);
        } else if (token == kWeight) {
            if (!weights_allowed_) return fail(start, "weight token in a format version 1 capture");
            if (!get_u32(in, pos, &weight)) return fail(start, kTruncated);
            if (weight == 0) return fail(start, "weight 0");
            weighted = true;
        } else {
            state_.native = token == kNativeOn;
        }
        if (pos_ >= in.size()) return fail(start, "state token without a record");
        token = static_cast<uint8_t>(in[pos_++]);
    }

    // Allocation and Deallocation, compact or general.
    const bool general_allocation = token == static_cast<uint8_t>(RecordType::kAllocation);
    const bool general_deallocation = token == static_cast<uint8_t>(RecordType::kDeallocation);
    if ((token & 0xc0) != 0 || general_allocation || general_deallocation) {
        const bool is_allocation = (token & 0x80) || general_allocation;
        if (weighted && !is_allocation) return fail(start, "weight token before a deallocation");
        Allocator allocator;
        uint8_t where;
        uint32_t domain = 0;
        bool has_native = state_.native;
        bool has_size = false;
        if (token & 0x80) {
            allocator = kCompactAllocators[(token >> 4) & 7];
            where = token & 15;
        } else if (token & 0x40) {
            allocator = kCompactDeallocators[(token >> 4) & 3];
            where = token & 15;
            has_size = allocator == Allocator::kMunmap;
        } else {
            if (in.size() - pos_ < 3) return fail(start, kTruncated);
            const uint8_t flags = static_cast<uint8_t>(in[pos_++]);
            const uint8_t value = static_cast<uint8_t>(in[pos_++]);
            where = static_cast<uint8_t>(in[pos_++]);
            if (flags & ~(kHasDomain | kHasNativeOrSize)) return fail(start, "unknown flag bits");
            if (!valid_allocator(value)) return fail(start, "unknown allocator");
            if (where > kMissUnaligned) return fail(start, "bad address code");
            allocator = static_cast<Allocator>(value);
            if ((flags & kHasDomain) && !get_u32(in, pos, &domain)) return fail(start, kTruncated);
            has_native = flags & kHasNativeOrSize;
            has_size = flags & kHasNativeOrSize;
        }
        uint64_t address;
        if (where < kMissAligned) {
            address = state_.recent(where);
            state_.promote(where);
        } else {
            uint64_t step;
            if (!get_varint(in, pos, &step)) return fail(start, kTruncated);
            int64_t delta = detail::unzigzag(step);
            if (where == kMissAligned) delta = static_cast<int64_t>(static_cast<uint64_t>(delta) << 4);
            address = state_.recent(0) + static_cast<uint64_t>(delta);
            state_.insert(address);
        }
        if (is_allocation) {
            AllocationRecord& r = out->allocation;
            out->type = RecordType::kAllocation;
            r.thread = state_.thread;
            r.domain = domain;
            r.address = address;
            r.allocator = allocator;
            r.count = weight;
            if (!get_varint(in, pos, &r.size)) return fail(start, kTruncated);
            if (!get_delta32(in, pos, state_.last_python_node, &r.python_node)) return fail(start, kTruncated);
            state_.last_python_node = r.python_node;
            r.native_node = 0;
            if (has_native) {
                if (!get_delta32(in, pos, state_.last_native_node, &r.native_node)) return fail(start, kTruncated);
                state_.last_native_node = r.native_node;
            }
        } else {
            DeallocationRecord& r = out->deallocation;
            out->type = RecordType::kDeallocation;
            r.thread = state_.thread;
            r.domain = domain;
            r.address = address;
            r.allocator = allocator;
            r.size = 0;
            if (has_size && !get_varint(in, pos, &r.size)) return fail(start, kTruncated);
        }
        return true;
    }

    if (weighted) return fail(start, "weight token before a record that is not an allocation");
    switch (static_cast<RecordType>(token)) {
        case RecordType::kThread: {
            ThreadRecord& r = out->thread;
            if (!get_u32(in, pos, &r.thread) || !get_varint(in, pos, &r.os_tid) || !get_string(in, pos, &r.name)) {
                return fail(start, kTruncated);
            }
            break;
        }
        case RecordType::kCode: {
            CodeRecord& r = out->code;
            if (!get_u32(in, pos, &r.code) || !get_string(in, pos, &r.function) ||
                !get_string(in, pos, &r.filename) || !get_i32(in, pos, &r.first_lineno)) {
                return fail(start, kTruncated);
            }
            break;
        }
        case RecordType::kPythonNode: {
            PythonNodeRecord& r = out->python_node;
            uint64_t line_and_entry;
            if (!get_delta32(in, pos, state_.last_node_id, &r.node) || !get_delta32(in, pos, r.node, &r.parent) ||
                !get_u32(in, pos, &r.code) || !get_varint(in, pos, &line_and_entry)) {
                return fail(start, kTruncated);
            }
            const int64_t lineno = detail::unzigzag(line_and_entry >> 1);
            if (lineno < INT32_MIN || lineno > INT32_MAX) return fail(start, "line number out of range");
            r.lineno = static_cast<int32_t>(lineno);
            r.is_entry = line_and_entry & 1;
            state_.last_node_id = r.node;
            break;
        }
        case RecordType::kNativeNode: {
            NativeNodeRecord& r = out->native_node;
            uint64_t ip_step;
            if (!get_delta32(in, pos, state_.last_native_node_id, &r.node) || !get_delta32(in, pos, r.node, &r.parent) ||
                !get_varint(in, pos, &ip_step)) {
                return fail(start, kTruncated);
            }
            r.ip = detail::undelta64(state_.last_ip, ip_step);
            state_.last_native_node_id = r.node;
            state_.last_ip = r.ip;
            break;
        }
        case RecordType::kLoadedObjects: {
            LoadedObjectsRecord& r = out->loaded_objects;
            uint64_t count;
            if (!get_u32(in, pos, &r.generation) || !get_varint(in, pos, &count)) return fail(start, kTruncated);
            // Every object takes at least three bytes: a count beyond that is damage, not a reason to reserve.
            if (count > (in.size() - pos_) / 3) return fail(start, "object count exceeds the payload");
            r.objects.resize(static_cast<size_t>(count));
            for (LoadedObject& object : r.objects) {
                uint64_t segments;
                if (!get_string(in, pos, &object.path) || !get_varint(in, pos, &object.load_bias) ||
                    !get_varint(in, pos, &segments)) {
                    return fail(start, kTruncated);
                }
                if (segments > (in.size() - pos_) / 2) return fail(start, "segment count exceeds the payload");
                object.segments.resize(static_cast<size_t>(segments));
                for (LoadedSegment& segment : object.segments) {
                    if (!get_varint(in, pos, &segment.vaddr) || !get_varint(in, pos, &segment.memsz)) {
                        return fail(start, kTruncated);
                    }
                }
            }
            break;
        }
        case RecordType::kMemory: {
            MemoryRecord& r = out->memory;
            if (!get_varint(in, pos, &r.time_ms) || !get_varint(in, pos, &r.rss) || !get_varint(in, pos, &r.heap)) {
                return fail(start, kTruncated);
            }
            break;
        }
        case RecordType::kCheckpoint: {
            CheckpointRecord& r = out->checkpoint;
            if (pos_ >= in.size()) return fail(start, kTruncated);
            const uint8_t checkpoint_flags = static_cast<uint8_t>(in[pos_++]);
            if (checkpoint_flags > 1) return fail(start, "unknown flag bits");
            r.final = checkpoint_flags & 1;
            if (!get_varint(in, pos, &r.time_ms) || !get_varint(in, pos, &r.peak_epoch) ||
                !get_varint(in, pos, &r.heap) || !get_varint(in, pos, &r.peak_heap) ||
                !get_u32(in, pos, &r.locations)) {
                return fail(start, kTruncated);
            }
            break;
        }
        case RecordType::kLocation: {
            LocationRecord& r = out->location;
            if (!get_delta32(in, pos, state_.last_location, &r.location) || !get_u32(in, pos, &r.thread)) {
                return fail(start, kTruncated);
            }
            if (pos_ >= in.size()) return fail(start, kTruncated);
            const uint8_t value = static_cast<uint8_t>(in[pos_++]);
            if (!valid_allocator(value)) return fail(start, "unknown allocator");
            r.allocator = static_cast<Allocator>(value);
            if (!get_u32(in, pos, &r.domain) || !get_u32(in, pos, &r.python_node) ||
                !get_u32(in, pos, &r.native_node) || !get_varint(in, pos, &r.current_count) ||
                !get_varint(in, pos, &r.current_bytes) || !get_varint(in, pos, &r.at_peak_count) ||
                !get_varint(in, pos, &r.at_peak_bytes) || !get_varint(in, pos, &r.epoch) ||
                !get_varint(in, pos, &r.total_count) || !get_varint(in, pos, &r.total_bytes)) {
                return fail(start, kTruncated);
            }
            state_.last_location = r.location;
            break;
        }
        case RecordType::kMetadata: {
            MetadataRecord& r = out->metadata;
            uint64_t count;
            if (!get_varint(in, pos, &count)) return fail(start, kTruncated);
            if (count > (in.size() - pos_) / 2) return fail(start, "entry count exceeds the payload");
            r.entries.resize(static_cast<size_t>(count));
            for (auto& [key, value] : r.entries) {
                if (!get_string(in, pos, &key) || !get_string(in, pos, &value)) return fail(start, kTruncated);
            }
            break;
        }
        case RecordType::kObject: {
            if (!objects_allowed_) return fail(start, "object record in a capture older than format version 3");
            ObjectRecord& r = out->object;
            if (pos_ >= in.size()) return fail(start, kTruncated);
            const uint8_t flags = static_cast<uint8_t>(in[pos_++]);
            if (flags & ~(kObjectCreated | kObjectHasNative)) return fail(start, "unknown flag bits");
            r.thread = state_.thread;
            r.created = flags & kObjectCreated;
            if ((flags & kObjectHasNative) && !r.created) return fail(start, "a destruction with a stack");
            r.python_node = r.native_node = 0;
            if (!get_varint(in, pos, &r.address)) return fail(start, kTruncated);
            if (r.created && !get_u32(in, pos, &r.python_node)) return fail(start, kTruncated);
            if ((flags & kObjectHasNative) && !get_u32(in, pos, &r.native_node)) return fail(start, kTruncated);
            break;
        }
        default: {
            char what[48];
            std::snprintf(what, sizeof what, "unknown record token 0x%02x", token);
            return fail(start, what);
        }
    }
    out->type = static_cast<RecordType>(token);
    return true;
}

}  // namespace heapscope::format
