// Which frame anchors (frame_walk.h) still stand.
//
// An anchor is a frame some way below the top of a deep stack whose frame
// object identifies its call (CPython 3.11+): while the frame at the
// anchor's address still points to that object, the call is the same one,
// and nothing below it can have changed. An object is a call's only while it
// lives: once freed, its memory can become the frame object of a later call
// at the same address. So the object allocator's free hook reports every
// freed block here, and an anchor whose object is freed falls.
//
// One slot per thread that holds an anchor (kSlots at most; a thread that
// finds none walks without). Slots and the filter are read and written under
// the GIL only (object-domain frees and anchored walks both hold it); the
// atomics keep the accesses defined for the sanitizers. Never allocates,
// never calls Python: safe in an allocator hook.
#pragma once

#include <atomic>
#include <cstdint>

namespace heapscope::frame_anchors {

inline constexpr uint32_t kSlots = 256;
inline constexpr uint32_t kFilterBuckets = 1024;  // a power of two

namespace detail {
// How many standing anchors' blocks hash to each bucket: a free whose
// bucket is empty cannot be an anchor's.
extern std::atomic<uint16_t> filter[kFilterBuckets];
extern std::atomic<bool> enabled;
inline uint32_t bucket(uintptr_t block) { return static_cast<uint32_t>((block >> 4) * 0x9E3779B97F4A7C15ull >> 54); }
void forget_block(uintptr_t block);
}  // namespace detail

// Turns anchors on (walks may arm them) or off (every anchor falls). Call
// with the GIL, at a session's start and end.
void enable(bool on);
inline bool enabled() { return detail::enabled.load(std::memory_order_relaxed); }

// Makes `block` (0: none) the anchor of the thread owning `*slot` (index + 1;
// 0 until the thread first holds one). False if no slot is free.
bool hold(uint32_t* slot, uintptr_t block);
// Whether the anchor `block` held in `slot` still stands.
bool stands(uint32_t slot, uintptr_t block);
// Gives the slot back (the thread's stack cache goes).
void release(uint32_t* slot);

// From the object allocator's free hook, before the block is freed: an
// anchor whose frame object this is falls. One load when it is none.
inline void block_freed(uintptr_t block) {
    if (detail::filter[detail::bucket(block)].load(std::memory_order_relaxed) != 0) detail::forget_block(block);
}

}  // namespace heapscope::frame_anchors
