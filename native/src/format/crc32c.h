// CRC32C (Castagnoli), the checksum of capture chunks.
//
// Why CRC32C: it detects every burst error up to 32 bits and every odd number
// of flipped bits, which a general hash does not promise, and x86-64 computes
// it in hardware (SSE4.2 crc32: 9.3 GB/s here); elsewhere a slicing-by-8
// table does 2.7 GB/s. A chunk is checksummed once on write and once on read,
// after compression (a few bytes per thousand events), so the cost is
// negligible beside zstd either way. Never calls Python, never allocates.
#pragma once

#include <cstddef>
#include <cstdint>

namespace heapscope::format {

// The CRC32C of `size` bytes, continuing from `crc` (0 to start).
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

namespace detail {
// The portable version, exposed so tests can compare it with the hardware one.
uint32_t crc32c_software(const void* data, size_t size, uint32_t crc);
}  // namespace detail

}  // namespace heapscope::format
