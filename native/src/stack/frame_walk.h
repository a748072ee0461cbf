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
#include <cstring>

#include "model/frame.h"
#include "stack/frame_anchors.h"

namespace heapscope {

// The addresses of the last walk's frames, innermost first: per thread,
// owned by whoever owns the thread's stack buffers (ThreadStackCache).
struct FrameChain {
    uintptr_t* addresses = nullptr;  // `count` addresses of the last walk
    uintptr_t* scratch = nullptr;    // where the walk in progress writes its own
    uint32_t count = 0;
    uint32_t capacity = 0;  // of each array
    uint32_t wanted = 0;    // frames the last walk met: above `capacity`, grow

    // An anchored walk (3.11+: python_frames_py311.cpp, _py312.cpp). The
    // anchor is a frame a few frames below the top, together with the frame
    // object that identifies its call (frame_anchors.h says when that
    // identity falls). While the frame at the anchor's address still points
    // to that object, the call has not returned, so nothing below it has
    // changed (those frames wait in calls for it): a walk that meets the
    // address reads the anchor and takes the frames below from `tail`.
    uintptr_t anchor = 0;           // its address; 0: none
    uintptr_t anchor_identity = 0;  // its frame object's block (Traits::anchor_identity)
    uint32_t anchor_slot = 0;       // the thread's slot in frame_anchors (index + 1), 0: none yet
    FrameKey* tail = nullptr;    // the kept frames below the anchor that the arming walk stored (`capacity`)
    uint32_t tail_count = 0;     // of them in `tail`
    uint32_t tail_depth = 0;     // kept frames below the anchor in all
    bool anchor_entry = false;   // the anchor's own key carries the entry flag
    bool anchor_skip = false;    // skip_incomplete of the walk that armed it
    bool anchored = false;       // whether the last walk met the anchor
    bool anchor_far = false;     // and met it more than kAnchorNear kept frames down
    uint32_t rearm_wait = 0;     // anchored walks before the next try to move a far anchor up
};

// How many frames from the top an anchor is looked for (kAnchorOffset kept
// frames at least, so that the calls and returns near the top do not
// disarm it), and how deep a stack must be for anchoring to pay.
inline constexpr uint32_t kAnchorOffset = 4;
inline constexpr uint32_t kAnchorCandidates = 12;
inline constexpr uint32_t kAnchorMinDepth = 24;
// How far from the top an anchored walk looks for its anchor.
inline constexpr uint32_t kAnchorReach = 64;
// An anchor more kept frames down than this is moved up when it can be,
// trying again after kRearmWait anchored walks if it cannot.
inline constexpr uint32_t kAnchorNear = kAnchorOffset + 2;
inline constexpr uint32_t kRearmWait = 64;

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

// Calls `visit(frame, index)` for each anchor candidate below `top`, nearest
// first, until it returns true: the kept frames at least kAnchorOffset kept
// frames down, among the first kAnchorOffset + kAnchorCandidates frames.
// `index` is the frame's index among the kept frames (in a walk's `out`).
template <class Traits, class Visit>
void for_each_anchor_candidate(const typename Traits::Frame* top, bool skip_incomplete, Visit&& visit) {
    uint32_t kept = 0;
    const typename Traits::Frame* f = top;
    for (uint32_t step = 0; f != nullptr && step < kAnchorOffset + kAnchorCandidates; ++step, f = Traits::previous(f)) {
        FrameKey key;
        if (Traits::read(f, skip_incomplete, &key) != FrameRole::kKept) continue;
        const uint32_t index = kept++;
        if (index >= kAnchorOffset && visit(f, index)) return;
    }
}

// Arms `chain`'s anchor: the nearest anchor candidate below `top` whose call
// has an identity, from a whole walk's `stored` frames in `out` and `depth`
// kept frames in all. False (the anchor unchanged) if none is found. A
// function of its own, not a lambda of the walk: capturing the walk's
// counters would keep them out of registers.
template <class Traits>
bool arm_anchor(FrameChain* chain, const typename Traits::Frame* top, const FrameKey* out, uint32_t stored,
                uint32_t depth, bool skip_incomplete) {
    using Frame = typename Traits::Frame;
    if (!chain->tail) return false;
    bool armed = false;
    for_each_anchor_candidate<Traits>(top, skip_incomplete, [&](const Frame* f, uint32_t index) {
        const uintptr_t identity = Traits::anchor_identity(f);
        if (!identity) return false;
        const uint32_t tail_count = stored > index + 1 ? stored - index - 1 : 0;
        if (tail_count > chain->capacity || !frame_anchors::hold(&chain->anchor_slot, identity)) return true;
        std::memcpy(chain->tail, out + index + 1, tail_count * sizeof(FrameKey));
        chain->tail_count = tail_count;
        chain->tail_depth = depth - index - 1;
        // Whether an entry marker sits right below it (ignored frames aside):
        // read from the frames, not from the key's bit 0.
        FrameKey key;
        FrameRole below = FrameRole::kIgnored;
        for (const Frame* b = Traits::previous(f); b != nullptr && below == FrameRole::kIgnored; b = Traits::previous(b)) {
            below = Traits::read(b, skip_incomplete, &key);
        }
        chain->anchor_entry = below == FrameRole::kEntry;
        chain->anchor_skip = skip_incomplete;
        chain->anchor = reinterpret_cast<uintptr_t>(f);
        chain->anchor_identity = identity;
        armed = true;
        return true;
    });
    return armed;
}

// Traits: `using Frame = ...;` and
//   static const Frame* previous(const Frame*)
//   static FrameRole read(const Frame*, bool skip_incomplete, FrameKey* key)   (key set for kKept)
// and, for anchored walks, static uintptr_t anchor_identity(const Frame*):
// what identifies the frame's call while it lives (its frame object's block,
// which frame_anchors watches), or 0 if the frame cannot be an anchor.
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

    constexpr bool kAnchors = requires(const Frame* f) { Traits::anchor_identity(f); };
    const Frame* const top = frame;
    if constexpr (kAnchors) {
        if (chain && chain->anchor && chain->anchor_skip == skip_incomplete &&
            frame_anchors::stands(chain->anchor_slot, chain->anchor_identity)) {
            const Frame* f = frame;
            for (uint32_t step = 0; f != nullptr && step < kAnchorReach; ++step, f = Traits::previous(f)) {
                if (reinterpret_cast<uintptr_t>(f) != chain->anchor) {
                    take(f);
                    continue;
                }
                const uint32_t kept_above = depth;
                take(f);  // the anchor itself may have moved on since (its callee returned)
                if (Traits::anchor_identity(f) != chain->anchor_identity) break;  // a later call at its address
                if (chain->anchor_entry && last_stored) out[stored - 1].instr |= 1;
                const uint32_t room = limit - stored;
                const uint32_t need = chain->tail_depth < room ? chain->tail_depth : room;
                if (need > chain->tail_count) break;  // the arming walk stored fewer: walk it all
                std::memcpy(out + stored, chain->tail, need * sizeof(FrameKey));
                chain->anchored = true;
                *total_depth = depth + chain->tail_depth;
                // Met farther down than need be (armed when the stack was
                // lower, or when the frames above had no identity): move it
                // up if a frame nearer the top has one; after a failed try,
                // wait a while before the next.
                chain->anchor_far = kept_above > kAnchorNear;
                if (chain->anchor_far) {
                    if (chain->rearm_wait > 0) {
                        --chain->rearm_wait;
                    } else if (arm_anchor<Traits>(chain, top, out, stored + need, *total_depth, skip_incomplete)) {
                        chain->anchor_far = false;
                    } else {
                        chain->rearm_wait = kRearmWait;
                    }
                }
                return stored + need;
            }
            stored = depth = 0;  // not met: a full walk
            last_stored = false;
        }
    }

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

    if constexpr (kAnchors) {
        const uintptr_t had = chain ? chain->anchor_identity : 0;
        if (chain) chain->anchor = chain->anchor_identity = 0;
        if (chain) chain->anchored = false;
        if (chain && depth >= kAnchorMinDepth) arm_anchor<Traits>(chain, top, out, stored, depth, skip_incomplete);
        if (had && !chain->anchor_identity) frame_anchors::hold(&chain->anchor_slot, 0);
    }
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
