// StackTrie: every distinct stack stored once, as a path in a trie.
//
// A node is one frame plus a link to the frame that called it; the root (id 0)
// is the empty stack. A stack is named by the id of its innermost frame's node,
// so all blocks allocated from the same stack share one 32-bit id and stacks
// with a common caller chain share its nodes. Frames are opaque pairs of words
// (for Python: code object and instruction pointer); meaning is given to them
// only when a report is made.
//
// Not thread-safe: the engine serialises access. Never calls into Python.
#pragma once

#include <cstddef>
#include <cstdint>

#include "model/frame.h"

namespace heapscope {

class StackTrie {
  public:
    static constexpr uint32_t kRoot = 0;
    static constexpr uint32_t kNoNode = UINT32_MAX;

    struct Node {
        FrameKey frame;
        uint32_t parent;  // the caller's node, kRoot for the outermost frame
        uint32_t depth;   // frames from this node to the root, this one included
    };

    StackTrie();
    ~StackTrie();
    StackTrie(const StackTrie&) = delete;
    StackTrie& operator=(const StackTrie&) = delete;

    // The node for `frame` called from `parent`, created if missing.
    // `*created` tells whether it is new. Returns kNoNode if memory ran out.
    uint32_t intern(uint32_t parent, FrameKey frame, bool* created);
    // The node for `frame` called from `parent`, or kNoNode.
    uint32_t find(uint32_t parent, FrameKey frame) const;

    const Node& node(uint32_t id) const { return nodes_[id]; }
    size_t node_count() const { return node_count_; }
    size_t memory_bytes() const { return node_capacity_ * sizeof(Node) + index_capacity_ * sizeof(uint32_t); }
    // Drops every stack but the root.
    void clear();

  private:
    static size_t hash(uint32_t parent, FrameKey frame);
    bool grow_index();

    Node* nodes_ = nullptr;
    size_t node_count_ = 0;
    size_t node_capacity_ = 0;
    uint32_t* index_ = nullptr;  // node ids; 0 (the root, never a child) marks empty
    size_t index_capacity_ = 0;  // a power of two
};

}  // namespace heapscope
