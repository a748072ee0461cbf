// FrameKey: one Python frame as the engine stores it, an opaque pair of
// words (code object, instruction pointer) given meaning only when a report
// is made. Stacks of them are interned by stack/StackTrie.
#pragma once

#include <cstdint>

namespace heapscope {

struct FrameKey {
    uintptr_t code = 0;
    uintptr_t instr = 0;
    bool operator==(const FrameKey& other) const { return code == other.code && instr == other.instr; }
    bool operator!=(const FrameKey& other) const { return !(*this == other); }
};

// A frame that could not be pinned (a thread without the GIL met a code
// object no stack had referenced yet): reported as <unknown>:0.
inline constexpr FrameKey kUnknownFrame{0, 0};

// A label's frame (engine/labels.h): {kLabelCode, label id}. kLabelCode is
// odd, so no code object's address is ever equal to it.
inline constexpr uintptr_t kLabelCode = 1;
inline bool is_label_frame(FrameKey frame) { return frame.code == kLabelCode; }

}  // namespace heapscope
