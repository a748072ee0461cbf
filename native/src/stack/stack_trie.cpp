#include "stack/stack_trie.h"

#include <cstdlib>

namespace heapscope {

namespace {
constexpr size_t kInitialNodes = 256;
constexpr size_t kInitialIndex = 512;
}  // namespace

StackTrie::StackTrie() { clear(); }

StackTrie::~StackTrie() {
    std::free(nodes_);
    std::free(index_);
}

size_t StackTrie::hash(uint32_t parent, FrameKey frame) {
    uint64_t h = (static_cast<uint64_t>(frame.code) >> 4) * 0x9E3779B97F4A7C15ull;
    h ^= (static_cast<uint64_t>(frame.instr) + (static_cast<uint64_t>(parent) << 32)) * 0xC2B2AE3D27D4EB4Full;
    return static_cast<size_t>(h ^ (h >> 31));
}

void StackTrie::clear() {
    std::free(nodes_);
    std::free(index_);
    nodes_ = static_cast<Node*>(std::malloc(kInitialNodes * sizeof(Node)));
    index_ = static_cast<uint32_t*>(std::calloc(kInitialIndex, sizeof(uint32_t)));
    node_capacity_ = nodes_ ? kInitialNodes : 0;
    index_capacity_ = index_ ? kInitialIndex : 0;
    node_count_ = 0;
    if (nodes_) {
        nodes_[0] = Node{FrameKey{}, kRoot, 0};
        node_count_ = 1;
    }
}

uint32_t StackTrie::find(uint32_t parent, FrameKey frame) const {
    if (index_capacity_ == 0) return kNoNode;
    size_t mask = index_capacity_ - 1;
    for (size_t i = hash(parent, frame) & mask; index_[i] != 0; i = (i + 1) & mask) {
        const Node& n = nodes_[index_[i]];
        if (n.parent == parent && n.frame == frame) return index_[i];
    }
    return kNoNode;
}

bool StackTrie::grow_index() {
    size_t new_capacity = index_capacity_ * 2;
    auto* fresh = static_cast<uint32_t*>(std::calloc(new_capacity, sizeof(uint32_t)));
    if (!fresh) return false;
    size_t mask = new_capacity - 1;
    for (size_t id = 1; id < node_count_; ++id) {
        size_t i = hash(nodes_[id].parent, nodes_[id].frame) & mask;
        while (fresh[i] != 0) i = (i + 1) & mask;
        fresh[i] = static_cast<uint32_t>(id);
    }
    std::free(index_);
    index_ = fresh;
    index_capacity_ = new_capacity;
    return true;
}

uint32_t StackTrie::intern(uint32_t parent, FrameKey frame, bool* created) {
    *created = false;
    if (index_capacity_ == 0 || node_capacity_ == 0) return kNoNode;
    // Keep the index at most half full so probe runs stay short; if it cannot
    // grow, refuse new nodes well before it fills (a full index never ends a probe).
    if (node_count_ * 2 >= index_capacity_ && !grow_index() && node_count_ * 4 >= index_capacity_ * 3) {
        return find(parent, frame);
    }
    size_t mask = index_capacity_ - 1;
    size_t i = hash(parent, frame) & mask;
    for (; index_[i] != 0; i = (i + 1) & mask) {
        const Node& n = nodes_[index_[i]];
        if (n.parent == parent && n.frame == frame) return index_[i];
    }
    if (node_count_ >= UINT32_MAX - 1) return kNoNode;
    if (node_count_ == node_capacity_) {
        auto* bigger = static_cast<Node*>(std::realloc(nodes_, node_capacity_ * 2 * sizeof(Node)));
        if (!bigger) return kNoNode;
        nodes_ = bigger;
        node_capacity_ *= 2;
    }
    auto id = static_cast<uint32_t>(node_count_++);
    nodes_[id] = Node{frame, parent, nodes_[parent].depth + 1};
    index_[i] = id;
    *created = true;
    return id;
}

}  // namespace heapscope
