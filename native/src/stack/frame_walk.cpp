#include "stack/frame_walk.h"

#include <cstdlib>

namespace heapscope {

bool reserve_frame_chain(FrameChain* chain, uint32_t capacity) {
    if (chain->capacity >= capacity) return true;
    const size_t slots = size_t{capacity} + kChainSlack;
    auto* arrays = static_cast<uintptr_t*>(std::calloc(2 * slots, sizeof(uintptr_t)));
    auto* tail = static_cast<FrameKey*>(std::calloc(slots, sizeof(FrameKey)));
    if (!arrays || !tail) {
        std::free(arrays);
        std::free(tail);
        return false;
    }
    release_frame_chain(chain);
    chain->tail = tail;
    chain->addresses = arrays;  // one block: `scratch` is its second half
    chain->scratch = arrays + slots;
    chain->capacity = capacity;
    return true;
}

void release_frame_chain(FrameChain* chain) {
    // The two halves swap at every walk: the block starts at the lower one.
    uintptr_t* block = chain->addresses < chain->scratch ? chain->addresses : chain->scratch;
    std::free(block);
    std::free(chain->tail);
    frame_anchors::release(&chain->anchor_slot);
    *chain = FrameChain{};
}

}  // namespace heapscope
