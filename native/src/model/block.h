// BlockInfo: what the engine keeps for each live block.
#pragma once

#include <cstdint>

namespace heapscope {

// The largest total depth reported: the stdlib's total_nframe is 16 bits,
// and PoolIndex keeps the depth in 16 bits too.
inline constexpr uint32_t kMaxTotalDepth = 65535;

// The value of BlockInfo::sink_state that no sink gives a block.
inline constexpr uint32_t kNoSinkState = UINT32_MAX;

struct BlockInfo {
    uint64_t size = 0;
    // One 32-bit word, read as one of two things depending on the session
    // (engine/session.h makes sure no door reads the other one meanwhile):
    union {
        // The StackTrie node of the innermost stored frame: what the
        // tracemalloc door and exact captures file the block under.
        uint32_t stack = 0;
        // While the capture sink keeps per-block state
        // (CaptureSink::keeps_block_state, the aggregated format), what its
        // on_alloc returned for the block; kNoSinkState if it kept none.
        uint32_t sink_state;
    };
    uint32_t total_depth = 0;  // Python frames at the time, past the limit too
};

// What a munmap did to one piece of a mapping (store/mapping_index.h). Each
// piece counts as a block, as memray counts them.
enum class Unmapped : uint8_t {
    kWhole,  // all of it: a block less
    kPart,   // its start or its end: the block stays, smaller
    kHole,   // its middle: the block became two
};

}  // namespace heapscope
