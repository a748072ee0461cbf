// Walking a linked list of interpreter frames, innermost first, in time that
// is not bound by the latency of each `previous` load.
//
// A stack walk is a pointer chase: each frame's address is known only once
// the frame above it has been read, so a 150-frame walk waits ~150 times for
// one load (about 5 cycles each from L1) whatever else it does. Between two
// allocations of a deep program, though, the outer frames are nearly always
// where they were: the walk keeps the addresses it met (FrameChain) and, once
// it meets one of them again, takes the next address from that list instead
// of waiting for the load, and checks afterwards that the load agrees. The
// checks of consecutive frames then overlap; the result is exactly what a
// plain walk gives, because a frame is read only after the frame above it
// was seen to link to it: a stale address (a frame that returned, its memory
// reused) is never read, it just ends the prediction.
//
// Generic over the frame layout (Traits), so that every CPython version
// family shares it and tests can drive it with frames of their own. Never
// allocates, takes no lock, never calls Python.
#pragma once

#include <cstdint>

#include "model/frame.h"

namespace heapscope {

// The addresses of the last walk's frames, innermost first: per thread,
// owned by whoever owns the thread's stack buffers (ThreadStackCache).
struct FrameChain {
    uintptr_t* addresses = nullptr;  // `count` addresses of the last walk
    uintptr_t* scratch = nullptr;    // where the walk in progress writes its own
    uint32_t count = 0;
    uint32_t capacity = 0;  // of each array
    uint32_t wanted = 0;    // frames the last walk met: above `capacity`, grow
};

// Makes both arrays hold at least `capacity` addresses (the last walk is
// forgotten); false if memory ran out. Calls malloc.
bool reserve_frame_chain(FrameChain* chain, uint32_t capacity);
void release_frame_chain(FrameChain* chain);

// What a frame of the list is to a stack.
enum class FrameRole : uint8_t {
    kKept,     // a frame of the stack: stored and counted
    kSkipped,  // not shown: neither stored nor counted (an incomplete frame), and it
               // separates the kept frame above it from a kEntry marker below
    kIgnored,  // not a frame of the stack at all (no code object): invisible
    kEntry,    // a marker that the kept frame above it was entered from C (3.12+ shim frames)
};

// How far from the top the walk looks for a frame it met last time: the
// calls made or returned between two allocations.
inline constexpr uint32_t kChainSearch = 8;
// Room each chain array has past its capacity: the frames met above the
// junction, and the null address that ends the list.
inline constexpr uint32_t kChainSlack = kChainSearch + 2;

// Traits: `using Frame = ...;` and
//   static const Frame* previous(const Frame*)
//   static FrameRole read(const Frame*, bool skip_incomplete, FrameKey* key)   (key set for kKept)
// Stores up to `limit` kept frames in `out`, innermost first, sets
// `*total_depth` to the number of kept frames of the whole list and returns
// the number stored. `chain` (may be null) is used and updated.
template <class Traits>
uint32_t walk_frames(const typename Traits::Frame* frame, FrameKey* out, uint32_t limit, uint32_t* total_depth,
                     bool skip_incomplete, FrameChain* chain) {
    using Frame = typename Traits::Frame;
    uint32_t stored = 0;
    uint32_t depth = 0;
    bool last_stored = false;  // whether the last kept frame met is in `out`
    const uintptr_t* known = chain ? chain->addresses : nullptr;
    const uint32_t known_count = known ? chain->count : 0;
    uintptr_t* met = chain ? chain->scratch : nullptr;
    const uint32_t met_capacity = met ? chain->capacity : 0;
    uint32_t met_count = 0;
    uint32_t walked = 0;

    // Stores or counts one frame of the list.
    auto take = [&](const Frame* f) __attribute__((always_inline)) {
        FrameKey key;
        switch (Traits::read(f, skip_incomplete, &key)) {
            case FrameRole::kKept:
                last_stored = stored < limit;
                if (last_stored) out[stored++] = key;
                ++depth;
                break;
            case FrameRole::kEntry:
                if (last_stored) out[stored - 1].instr |= 1;
                last_stored = false;
                break;
            case FrameRole::kSkipped:
                last_stored = false;
                break;
            case FrameRole::kIgnored:
                break;
        }
    };
    auto visit = [&](const Frame* f) __attribute__((always_inline)) {
        if (walked++ < met_capacity) met[met_count++] = reinterpret_cast<uintptr_t>(f);
        take(f);
    };

    // The frames above the first one met last time: called since, or
    // changed in place. Looked for among the first kChainSearch known ones.
    uint32_t junction = known_count;
    for (uint32_t step = 0; frame != nullptr && step <= kChainSearch; ++step) {
        const uint32_t reach = known_count < kChainSearch + 1 ? known_count : kChainSearch + 1;
        for (uint32_t i = 0; i < reach; ++i) {
            if (known[i] == reinterpret_cast<uintptr_t>(frame)) {
                junction = i;
                break;
            }
        }
        if (junction != known_count) break;
        visit(frame);
        frame = Traits::previous(frame);
    }
    // From the junction down, the next frame is predicted from the list and
    // read only once the frame above links to it. `known` ends with a null
    // address, and `met` has room past `capacity` for the frames met above
    // the junction (kChainSlack), so this loop checks neither.
    if (junction < known_count) {
        for (uint32_t i = junction;; ++i) {
            met[met_count++] = reinterpret_cast<uintptr_t>(frame);
            ++walked;
            take(frame);
            const Frame* next = Traits::previous(frame);
            const Frame* predicted = reinterpret_cast<const Frame*>(known[i + 1]);
            if (next != predicted || predicted == nullptr) {
                frame = next;  // the list ends or the stack changed here: walk on without it
                break;
            }
            // Hide the equality from the compiler, which could otherwise use
            // `next` for `predicted` and bring the wait for the load back.
            asm("" : "+r"(predicted));
            frame = predicted;
        }
        if (met_count > met_capacity) met_count = met_capacity;
    }
    for (; frame != nullptr; frame = Traits::previous(frame)) visit(frame);

    if (chain) {
        if (met) met[met_count] = 0;  // the end of the list
        chain->scratch = chain->addresses;
        chain->addresses = met;
        chain->count = met_count;
        chain->wanted = walked;
    }
    *total_depth = depth;
    return stored;
}

}  // namespace heapscope
