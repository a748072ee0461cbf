// LEB128 varints and zigzag deltas, the building blocks of record payloads.
//
// For native/src/format only (records.h includes it for its inline hot-path
// encoders; nothing else should use it). Unsigned arithmetic throughout: a
// delta between two 64-bit values wraps, and zigzag keeps small steps in
// either direction small, so a decoder that wraps the same way gets the
// exact value back for any input (extremes included).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace heapscope::format::detail {

inline constexpr size_t kMaxVarintBytes = 10;  // 64 bits / 7 per byte, rounded up

inline uint64_t zigzag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
inline int64_t unzigzag(uint64_t v) { return static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1)); }

// The wrapping difference to - from, zigzagged: small either way when close.
inline uint64_t delta64(uint64_t to, uint64_t from) { return zigzag(static_cast<int64_t>(to - from)); }
inline uint64_t undelta64(uint64_t from, uint64_t encoded) {
    return from + static_cast<uint64_t>(unzigzag(encoded));
}
// 32-bit ids: the exact difference (at most 33 bits), zigzagged.
inline uint64_t delta32(uint32_t to, uint32_t from) {
    return zigzag(static_cast<int64_t>(to) - static_cast<int64_t>(from));
}

// Writes `v` at `p` as LEB128 (7 bits a byte, low first; the high bit says
// "more"); `p` needs kMaxVarintBytes free. Returns the end.
inline char* put_varint(char* p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = static_cast<char>(static_cast<uint8_t>(v) | 0x80);
        v >>= 7;
    }
    *p++ = static_cast<char>(v);
    return p;
}

// Reads from `in` at `*pos`. Each getter returns false (leaving the value
// unspecified) on truncation or on a malformed or out-of-range encoding; the
// caller turns that into an error naming the offset.
inline bool get_varint(std::string_view in, size_t* pos, uint64_t* v) {
    uint64_t result = 0;
    size_t p = *pos;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (p >= in.size()) return false;
        const uint8_t byte = static_cast<uint8_t>(in[p++]);
        const uint64_t bits = byte & 0x7f;
        // The tenth byte carries bit 63 only: anything above it is malformed.
        if (shift == 63 && bits > 1) return false;
        result |= bits << shift;
        if ((byte & 0x80) == 0) {
            *v = result;
            *pos = p;
            return true;
        }
    }
    return false;  // more than ten bytes
}

inline bool get_u32(std::string_view in, size_t* pos, uint32_t* v) {
    uint64_t wide;
    if (!get_varint(in, pos, &wide) || wide > UINT32_MAX) return false;
    *v = static_cast<uint32_t>(wide);
    return true;
}

inline bool get_i32(std::string_view in, size_t* pos, int32_t* v) {
    uint64_t wide;
    if (!get_varint(in, pos, &wide)) return false;
    const int64_t value = unzigzag(wide);
    if (value < INT32_MIN || value > INT32_MAX) return false;
    *v = static_cast<int32_t>(value);
    return true;
}

// A 32-bit id stored as delta32 from `from`.
inline bool get_delta32(std::string_view in, size_t* pos, uint32_t from, uint32_t* v) {
    uint64_t wide;
    // A true delta32 is below 2^33; checking first keeps the sum from overflowing.
    if (!get_varint(in, pos, &wide) || wide >= (uint64_t{1} << 33)) return false;
    const int64_t value = static_cast<int64_t>(from) + unzigzag(wide);
    if (value < 0 || value > static_cast<int64_t>(UINT32_MAX)) return false;
    *v = static_cast<uint32_t>(value);
    return true;
}

inline bool get_string(std::string_view in, size_t* pos, std::string* s) {
    uint64_t length;
    if (!get_varint(in, pos, &length) || length > in.size() - *pos) return false;
    s->assign(in.data() + *pos, static_cast<size_t>(length));
    *pos += static_cast<size_t>(length);
    return true;
}

}  // namespace heapscope::format::detail
