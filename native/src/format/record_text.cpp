#include "format/record_text.h"

#include <cinttypes>
#include <cstdio>
#include <initializer_list>

#include "model/allocator.h"

namespace heapscope::format {

namespace {

void add(std::string* out, const char* name, uint64_t value) {
    char text[64];
    std::snprintf(text, sizeof text, " %s=%" PRIu64, name, value);
    *out += text;
}

struct Field {
    const char* name;
    uint64_t value;
};

void add(std::string* out, std::initializer_list<Field> fields) {
    for (const Field& field : fields) add(out, field.name, field.value);
}

void add_signed(std::string* out, const char* name, int64_t value) {
    char text[64];
    std::snprintf(text, sizeof text, " %s=%" PRId64, name, value);
    *out += text;
}

void add_hex(std::string* out, const char* name, uint64_t value) {
    char text[64];
    std::snprintf(text, sizeof text, " %s=0x%" PRIx64, name, value);
    *out += text;
}

void add_text(std::string* out, const char* name, const std::string& value) {
    *out += ' ';
    *out += name;
    *out += "=\"";
    for (unsigned char c : value) {
        if (c == '"' || c == '\\') {
            *out += '\\';
            *out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
            char escape[8];
            std::snprintf(escape, sizeof escape, "\\x%02x", c);
            *out += escape;
        } else {
            *out += static_cast<char>(c);
        }
    }
    *out += '"';
}

void add_allocator(std::string* out, Allocator allocator) {
    *out += " allocator=";
    *out += allocator_name(allocator);
}

}  // namespace

std::string header_text(const FileHeader& header) {
    std::string out = "HEADER";
    add(&out, "version", header.version);
    out += header.format == FileFormat::kAggregatedAllocations ? " file_format=AGGREGATED_ALLOCATIONS"
                                                               : " file_format=ALL_ALLOCATIONS";
    add(&out, "native_traces", header.native_traces);
    add(&out, "trace_python_allocators", header.trace_python_allocators);
    return out;
}

std::string record_text(const Record& r) {
    std::string out;
    switch (r.type) {
        case RecordType::kThread:
            out = "THREAD";
            add(&out, {{"thread", r.thread.thread}, {"os_tid", r.thread.os_tid}});
            add_text(&out, "name", r.thread.name);
            break;
        case RecordType::kCode:
            out = "CODE";
            add(&out, "code", r.code.code);
            add_text(&out, "function", r.code.function);
            add_text(&out, "filename", r.code.filename);
            add_signed(&out, "first_lineno", r.code.first_lineno);
            break;
        case RecordType::kPythonNode: {
            const PythonNodeRecord& n = r.python_node;
            out = "PYTHON_NODE";
            add(&out, {{"node", n.node}, {"parent", n.parent}, {"code", n.code}});
            add_signed(&out, "lineno", n.lineno);
            add(&out, "is_entry", n.is_entry);
            break;
        }
        case RecordType::kNativeNode:
            out = "NATIVE_NODE";
            add(&out, {{"node", r.native_node.node}, {"parent", r.native_node.parent}});
            add_hex(&out, "ip", r.native_node.ip);
            break;
        case RecordType::kLoadedObjects:
            out = "LOADED_OBJECTS";
            add(&out, {{"generation", r.loaded_objects.generation}, {"count", r.loaded_objects.objects.size()}});
            for (const LoadedObject& object : r.loaded_objects.objects) {
                out += "\n  OBJECT";
                add_text(&out, "path", object.path);
                add_hex(&out, "load_bias", object.load_bias);
                for (const LoadedSegment& segment : object.segments) {
                    add_hex(&out, "vaddr", segment.vaddr);
                    add_hex(&out, "memsz", segment.memsz);
                }
            }
            break;
        case RecordType::kAllocation: {
            const AllocationRecord& a = r.allocation;
            out = "ALLOCATION";
            add(&out, "thread", a.thread);
            add_hex(&out, "address", a.address);
            add(&out, "size", a.size);
            add_allocator(&out, a.allocator);
            add(&out, {{"domain", a.domain}, {"python_node", a.python_node}, {"native_node", a.native_node}});
            if (a.count != 1) add(&out, "count", a.count);
            break;
        }
        case RecordType::kDeallocation: {
            const DeallocationRecord& d = r.deallocation;
            out = "DEALLOCATION";
            add(&out, "thread", d.thread);
            add_hex(&out, "address", d.address);
            add(&out, "size", d.size);
            add_allocator(&out, d.allocator);
            add(&out, "domain", d.domain);
            break;
        }
        case RecordType::kMemory:
            out = "MEMORY";
            add(&out, {{"time_ms", r.memory.time_ms}, {"rss", r.memory.rss}, {"heap", r.memory.heap}});
            break;
        case RecordType::kCheckpoint: {
            const CheckpointRecord& c = r.checkpoint;
            out = "CHECKPOINT";
            add(&out, {{"time_ms", c.time_ms}, {"peak_epoch", c.peak_epoch}, {"heap", c.heap},
                       {"peak_heap", c.peak_heap}, {"locations", c.locations}, {"final", c.final}});
            break;
        }
        case RecordType::kLocation: {
            const LocationRecord& l = r.location;
            out = "LOCATION";
            add(&out, {{"location", l.location}, {"thread", l.thread}});
            add_allocator(&out, l.allocator);
            add(&out, {{"domain", l.domain}, {"python_node", l.python_node}, {"native_node", l.native_node},
                       {"current_count", l.current_count}, {"current_bytes", l.current_bytes},
                       {"at_peak_count", l.at_peak_count}, {"at_peak_bytes", l.at_peak_bytes}, {"epoch", l.epoch},
                       {"total_count", l.total_count}, {"total_bytes", l.total_bytes}});
            break;
        }
        case RecordType::kObject: {
            const ObjectRecord& o = r.object;
            out = o.created ? "OBJECT_CREATED" : "OBJECT_DESTROYED";
            add(&out, "thread", o.thread);
            add_hex(&out, "address", o.address);
            if (o.created) add(&out, {{"python_node", o.python_node}, {"native_node", o.native_node}});
            break;
        }
        case RecordType::kMetadata:
            out = "METADATA";
            for (const auto& [key, value] : r.metadata.entries) {
                out += "\n ";
                add_text(&out, key.c_str(), value);
            }
            break;
    }
    return out;
}

}  // namespace heapscope::format
