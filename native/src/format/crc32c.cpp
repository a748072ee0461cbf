#include "format/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace heapscope::format {

namespace {

constexpr uint32_t kPolynomial = 0x82f63b78;  // Castagnoli, reflected

// Slicing-by-8 tables: table[k][b] is the CRC of byte b followed by k zero bytes.
constexpr std::array<std::array<uint32_t, 256>, 8> make_tables() {
    std::array<std::array<uint32_t, 256>, 8> t{};
    for (uint32_t b = 0; b < 256; ++b) {
        uint32_t crc = b;
        for (int i = 0; i < 8; ++i) crc = (crc >> 1) ^ ((crc & 1) ? kPolynomial : 0);
        t[0][b] = crc;
    }
    for (uint32_t b = 0; b < 256; ++b) {
        for (size_t k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xff];
    }
    return t;
}
constexpr auto kTables = make_tables();

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32c_hardware(const uint8_t* p, size_t size, uint32_t crc) {
    uint64_t c = ~crc;
    while (size >= 8) {
        uint64_t word;
        std::memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
        p += 8;
        size -= 8;
    }
    uint32_t c32 = static_cast<uint32_t>(c);
    while (size-- > 0) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}

bool have_sse42() {
    static const bool supported = __builtin_cpu_supports("sse4.2");
    return supported;
}
#endif

}  // namespace

namespace detail {
uint32_t crc32c_software(const void* data, size_t size, uint32_t crc) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    uint32_t c = ~crc;
    while (size >= 8) {
        // Little-endian load, as the table layout assumes.
        const uint32_t low = c ^ (uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24);
        c = kTables[7][low & 0xff] ^ kTables[6][(low >> 8) & 0xff] ^ kTables[5][(low >> 16) & 0xff] ^
            kTables[4][low >> 24] ^ kTables[3][p[4]] ^ kTables[2][p[5]] ^ kTables[1][p[6]] ^ kTables[0][p[7]];
        p += 8;
        size -= 8;
    }
    while (size-- > 0) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xff];
    return ~c;
}
}  // namespace detail

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
#if defined(__x86_64__)
    if (have_sse42()) return crc32c_hardware(static_cast<const uint8_t*>(data), size, crc);
#endif
    return detail::crc32c_software(data, size, crc);
}

}  // namespace heapscope::format
