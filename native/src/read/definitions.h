// Definitions: what a capture's definition records say, kept for reports.
//
// Threads, code objects, Python and native stack nodes, loaded-object
// generations and metadata. Ids are small and dense (the writer numbers
// threads and code from 1, stack nodes are the engine's trie ids), so each
// kind is a vector indexed by id. Every pass over a capture applies the
// records again; a definition already known is skipped, so a second pass
// costs no allocation here.
//
// Stacks come out innermost first. Never calls Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "read/symbolizer.h"
#include "format/records.h"

namespace heapscope::read {

struct ThreadInfo {
    uint64_t os_tid = 0;
    std::string name;
};

class Definitions {
  public:
    // Applies a definition or metadata record; returns false for any other
    // type (an event), which the caller handles. `*generation` is the
    // reader's own: the loaded-objects generation of the stream so far (0 at
    // its start), which native nodes defined next resolve against.
    bool apply(const format::Record& record, uint32_t* generation);

    bool has_python_node(uint32_t node) const {
        return node < python_nodes_.size() && python_nodes_[node].defined;
    }
    bool has_native_node(uint32_t node) const {
        return node < native_nodes_.size() && native_nodes_[node].defined;
    }
    size_t python_node_count() const { return python_node_count_; }
    size_t native_node_count() const { return native_node_count_; }

    // The Python frames of `node`, innermost first, at most `max_frames`;
    // a frame of code 0 is ("<unknown>", "<unknown>", lineno). Node 0 (no
    // Python frame) gives an empty stack. False if `node` was never defined.
    // A stack that reaches the capture's stack root (metadata
    // `stack_root_node`: the callers of the frame that entered the Tracker)
    // ends before it, keeping the label frames above it (the root of a
    // stack allocated under labels); `*cut` (if given) says whether it did.
    bool python_stack(uint32_t node, size_t max_frames, std::vector<PythonFrame>* out, bool* cut = nullptr) const;
    // The native frames of `node`, innermost first (inlined frames expanded),
    // at most `max_frames`. False if `node` was never defined. Reads debug
    // information through `symbolizer`, which caches what it resolved.
    bool native_stack(uint32_t node, size_t max_frames, Symbolizer* symbolizer, std::vector<NativeFrame>* out);
    // Native frames with each interpreter-loop frame replaced by the Python
    // frames it ran (read::hybrid_stack), at most `max_frames`. A Python
    // stack cut at the stack root ends the hybrid stack at its outermost
    // Python frame, as memray's does: the native frames outside it ran the
    // callers of the frame that entered the Tracker.
    bool hybrid_stack(uint32_t python_node, uint32_t native_node, size_t max_frames, Symbolizer* symbolizer,
                      std::vector<NativeFrame>* out);

    // Threads by the writer's small id.
    std::vector<std::pair<uint32_t, ThreadInfo>> threads() const;
    // Metadata entries in the order first written; a key written again keeps
    // its first place and takes the new value.
    const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }

  private:
    struct PythonNode {
        uint32_t parent = 0;
        uint32_t code = 0;
        int32_t lineno = 0;
        bool is_entry = false;
        bool defined = false;
    };
    struct NativeNode {
        uint64_t ip = 0;
        uint32_t parent = 0;
        uint32_t generation = 0;
        bool defined = false;
    };
    struct Code {
        std::string function;
        std::string filename;
        bool defined = false;
        bool label = false;  // a label's frame (the writer's "<label>" file)
    };
    struct Thread {
        ThreadInfo info;
        bool defined = false;
    };

    // The entry for `id`, made if need be; null for an id far past any a
    // writer gives (they are dense: each about the count of definitions
    // before it), which only a damaged file has: memory stays proportional
    // to the definitions read, whatever ids a file names.
    template <typename T>
    T* slot(std::vector<T>* items, uint32_t id) {
        ++definitions_read_;
        if (id >= items->size()) {
            if (id > 2 * definitions_read_ + 65536) return nullptr;
            items->resize(static_cast<size_t>(id) + 1);
        }
        return &(*items)[id];
    }
    void add_metadata(const std::string& key, const std::string& value);
    // Whether the stack at `node` passes through the stack root here: the
    // root's node itself, or (under labels, whose frames the engine puts
    // above every other) a node with the root's frames under label frames.
    bool at_stack_root(uint32_t node) const;
    bool is_label_node(uint32_t node) const;

    std::vector<Thread> threads_;
    std::vector<Code> codes_;
    std::vector<PythonNode> python_nodes_;
    std::vector<NativeNode> native_nodes_;
    size_t python_node_count_ = 0;
    size_t native_node_count_ = 0;
    uint64_t definitions_read_ = 0;
    std::unordered_map<uint32_t, std::vector<LoadedObject>> loaded_objects_;  // by generation
    std::unordered_set<uint32_t> given_to_symbolizer_;
    std::vector<std::pair<std::string, std::string>> metadata_;
    std::unordered_map<std::string, size_t> metadata_index_;
    uint32_t stack_root_ = 0;  // metadata stack_root_node; 0: stacks are whole
    bool has_labels_ = false;  // a label's code was defined
};

}  // namespace heapscope::read
