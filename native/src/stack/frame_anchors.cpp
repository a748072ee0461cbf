#include "stack/frame_anchors.h"

namespace heapscope::frame_anchors {

namespace detail {
std::atomic<uint16_t> filter[kFilterBuckets];
std::atomic<bool> enabled{false};
}  // namespace detail

namespace {
std::atomic<bool> g_taken[kSlots];
std::atomic<uintptr_t> g_blocks[kSlots];  // the anchor's frame object block, 0: none standing

// Clears slot `index` if it holds `block` (the caller's own, or a freed one).
void clear(uint32_t index, uintptr_t block) {
    if (block == 0) return;
    uintptr_t expected = block;
    if (g_blocks[index].compare_exchange_strong(expected, 0, std::memory_order_relaxed)) {
        detail::filter[detail::bucket(block)].fetch_sub(1, std::memory_order_relaxed);
    }
}
}  // namespace

void detail::forget_block(uintptr_t block) {
    for (uint32_t i = 0; i < kSlots; ++i) {
        if (g_blocks[i].load(std::memory_order_relaxed) == block) clear(i, block);
    }
}

void enable(bool on) {
    detail::enabled.store(on, std::memory_order_relaxed);
    if (on) return;
    for (uint32_t i = 0; i < kSlots; ++i) clear(i, g_blocks[i].load(std::memory_order_relaxed));
}

bool hold(uint32_t* slot, uintptr_t block) {
    if (*slot == 0) {
        if (block == 0) return true;
        for (uint32_t i = 0; i < kSlots && *slot == 0; ++i) {
            if (!g_taken[i].exchange(true, std::memory_order_relaxed)) *slot = i + 1;
        }
        if (*slot == 0) return false;
    }
    const uint32_t index = *slot - 1;
    clear(index, g_blocks[index].load(std::memory_order_relaxed));
    if (block != 0 && enabled()) {
        detail::filter[detail::bucket(block)].fetch_add(1, std::memory_order_relaxed);
        g_blocks[index].store(block, std::memory_order_relaxed);
    }
    return true;
}

bool stands(uint32_t slot, uintptr_t block) {
    return slot != 0 && block != 0 && g_blocks[slot - 1].load(std::memory_order_relaxed) == block;
}

void release(uint32_t* slot) {
    if (*slot == 0) return;
    const uint32_t index = *slot - 1;
    clear(index, g_blocks[index].load(std::memory_order_relaxed));
    g_taken[index].store(false, std::memory_order_relaxed);
    *slot = 0;
}

}  // namespace heapscope::frame_anchors
