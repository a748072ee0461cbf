#include "read/definitions.h"

#include <cstdint>
#include <cstdlib>

namespace heapscope::read {

namespace {
constexpr const char* kUnknown = "<unknown>";
}  // namespace

bool Definitions::apply(const format::Record& record, uint32_t* generation) {
    using format::RecordType;
    switch (record.type) {
        case RecordType::kThread: {
            // Always taken: a thread may be written again once it has a name.
            Thread* thread = slot(&threads_, record.thread.thread);
            if (!thread) return true;
            thread->info.os_tid = record.thread.os_tid;
            thread->info.name = record.thread.name;
            thread->defined = true;
            return true;
        }
        case RecordType::kCode: {
            Code* code = slot(&codes_, record.code.code);
            if (code && !code->defined) {
                code->function = record.code.function;
                code->filename = record.code.filename;
                code->defined = true;
                // The writer's label frames (engine/labels.h): "[label] <name>" in "<label>".
                code->label = code->filename == "<label>" && code->function.rfind("[label] ", 0) == 0;
                has_labels_ = has_labels_ || code->label;
            }
            return true;
        }
        case RecordType::kPythonNode: {
            const format::PythonNodeRecord& r = record.python_node;
            PythonNode* node = slot(&python_nodes_, r.node);
            if (node && !node->defined) {
                *node = PythonNode{r.parent, r.code, r.lineno, r.is_entry, true};
                ++python_node_count_;
            }
            return true;
        }
        case RecordType::kNativeNode: {
            const format::NativeNodeRecord& r = record.native_node;
            NativeNode* node = slot(&native_nodes_, r.node);
            if (node && !node->defined) {
                *node = NativeNode{r.ip, r.parent, *generation, true};
                ++native_node_count_;
            }
            return true;
        }
        case RecordType::kLoadedObjects:
            *generation = record.loaded_objects.generation;
            loaded_objects_.try_emplace(record.loaded_objects.generation, record.loaded_objects.objects);
            return true;
        case RecordType::kMetadata:
            for (const auto& [key, value] : record.metadata.entries) add_metadata(key, value);
            return true;
        default:
            return false;
    }
}

void Definitions::add_metadata(const std::string& key, const std::string& value) {
    if (key == "stack_root_node") {
        char* end = nullptr;
        const unsigned long long node = std::strtoull(value.c_str(), &end, 10);
        stack_root_ = end != value.c_str() && *end == '\0' && node <= UINT32_MAX ? static_cast<uint32_t>(node) : 0;
    }
    auto [found, inserted] = metadata_index_.try_emplace(key, metadata_.size());
    if (inserted) {
        metadata_.emplace_back(key, value);
    } else {
        metadata_[found->second].second = value;
    }
}

bool Definitions::is_label_node(uint32_t node) const {
    if (!has_python_node(node)) return false;
    const uint32_t code = python_nodes_[node].code;
    return code != 0 && code < codes_.size() && codes_[code].label;
}

bool Definitions::at_stack_root(uint32_t node) const {
    if (node == stack_root_) return true;
    if (!has_labels_) return false;
    // Compare the frames of both chains up to the root's end, where the
    // other must meet its labels. Nearly every node differs at once.
    uint32_t other = stack_root_;
    size_t steps = python_node_count_;  // as in python_stack: ids may loop
    while (other != 0 && steps-- > 0) {
        if (!has_python_node(node) || !has_python_node(other)) return false;
        const PythonNode& a = python_nodes_[node];
        const PythonNode& b = python_nodes_[other];
        if (a.code != b.code || a.lineno != b.lineno || a.is_entry != b.is_entry) return false;
        node = a.parent;
        other = b.parent;
    }
    return other == 0 && is_label_node(node);
}

bool Definitions::python_stack(uint32_t node, size_t max_frames, std::vector<PythonFrame>* out, bool* cut) const {
    out->clear();
    if (cut) *cut = false;
    if (node == 0) return true;
    if (!has_python_node(node)) return false;
    // A chain visits each defined node at most once, unless a damaged file's
    // ids loop: bounded by the count of defined nodes, not by the highest id
    // (a made-up file can name id 4 billion, and every stack would then walk
    // that far around its loop).
    size_t steps = python_node_count_;
    while (node != 0 && out->size() < max_frames && steps-- > 0) {
        if (stack_root_ != 0 && at_stack_root(node)) {
            if (cut) *cut = true;
            // The labels above the cut frames are still the stack's root.
            for (; has_labels_ && node != 0 && out->size() < max_frames && steps-- > 0;
                 node = python_nodes_[node].parent) {
                if (!has_python_node(node)) break;
                if (!is_label_node(node)) continue;
                const PythonNode& n = python_nodes_[node];
                out->push_back(PythonFrame{codes_[n.code].function, codes_[n.code].filename, 0, false});
            }
            break;
        }
        if (!has_python_node(node)) break;
        const PythonNode& n = python_nodes_[node];
        PythonFrame frame;
        if (n.code != 0 && n.code < codes_.size() && codes_[n.code].defined) {
            frame.function = codes_[n.code].function;
            frame.file = codes_[n.code].filename;
        } else {
            frame.function = kUnknown;
            frame.file = kUnknown;
        }
        frame.line = n.lineno;
        frame.is_entry = n.is_entry;
        out->push_back(std::move(frame));
        node = n.parent;
    }
    return true;
}

bool Definitions::native_stack(uint32_t node, size_t max_frames, Symbolizer* symbolizer,
                               std::vector<NativeFrame>* out) {
    out->clear();
    if (node == 0) return true;
    if (!has_native_node(node)) return false;
    size_t steps = native_node_count_;  // as in python_stack: ids may loop
    while (node != 0 && out->size() < max_frames && steps-- > 0) {
        if (!has_native_node(node)) break;
        const NativeNode& n = native_nodes_[node];
        if (given_to_symbolizer_.insert(n.generation).second) {
            auto objects = loaded_objects_.find(n.generation);
            symbolizer->set_objects(n.generation,
                                    objects != loaded_objects_.end() ? objects->second : std::vector<LoadedObject>{});
        }
        for (NativeFrame& frame : symbolizer->symbolize(n.ip, n.generation)) {
            if (out->size() >= max_frames) break;
            out->push_back(std::move(frame));
        }
        node = n.parent;
    }
    return true;
}

bool Definitions::hybrid_stack(uint32_t python_node, uint32_t native_node, size_t max_frames,
                               Symbolizer* symbolizer, std::vector<NativeFrame>* out) {
    std::vector<PythonFrame> python;
    std::vector<NativeFrame> native;
    bool cut = false;
    if (!python_stack(python_node, SIZE_MAX, &python, &cut)) return false;
    if (!native_stack(native_node, SIZE_MAX, symbolizer, &native)) return false;
    *out = read::hybrid_stack(python, native, cut);
    if (out->size() > max_frames) out->resize(max_frames);
    return true;
}

std::vector<std::pair<uint32_t, ThreadInfo>> Definitions::threads() const {
    std::vector<std::pair<uint32_t, ThreadInfo>> result;
    for (size_t id = 0; id < threads_.size(); ++id) {
        if (threads_[id].defined) result.emplace_back(static_cast<uint32_t>(id), threads_[id].info);
    }
    return result;
}

}  // namespace heapscope::read
