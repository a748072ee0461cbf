// The named result types shared by the binding files: the C++ structs
// themselves, bound once with read-only attributes. Text is decoded with
// text() (replacement characters, never an error); allocators cross as
// memray's public values (model/allocator.h's table).
#include <Python.h>
#include <nanobind/nanobind.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "analysis/analyses.h"
#include "bindings.h"
#include "format/records.h"
#include "model/allocator.h"
#include "model/location.h"

namespace nb = nanobind;

namespace heapscope::bindings {

std::vector<read::NativeFrame> shown_frames(const std::vector<read::PythonFrame>& frames) {
    std::vector<read::NativeFrame> result;
    result.reserve(frames.size());
    for (const read::PythonFrame& f : frames) result.push_back(read::NativeFrame{f.function, f.file, f.line, true});
    return result;
}

nb::dict threads_dict(const std::vector<std::pair<uint32_t, read::ThreadInfo>>& threads) {
    nb::dict result;
    for (const auto& [id, info] : threads) result[nb::int_(id)] = nb::cast(info);
    return result;
}

const char* file_format_name(format::FileFormat format) {
    return format == format::FileFormat::kAggregatedAllocations ? "AGGREGATED_ALLOCATIONS" : "ALL_ALLOCATIONS";
}

nb::dict metadata_dict(const std::vector<std::pair<std::string, std::string>>& entries,
                       const format::FileHeader* header) {
    nb::dict result;
    for (const auto& [key, value] : entries) result[text(key)] = text(value);
    result["has_native_traces"] = header != nullptr && header->native_traces;
    result["file_format"] = header ? nb::object(nb::str(file_format_name(header->format))) : nb::none();
    return result;
}

void bind_results(nb::module_& m) {
    nb::class_<AllocatorInfo>(m, "AllocatorEntry",
                              "One allocator: its value in capture files, its name and its public value\n"
                              "(memray's AllocatorType; heapscope's own after memray's).")
        .def_prop_ro("file_value", [](const AllocatorInfo& a) { return static_cast<int>(a.allocator); })
        .def_prop_ro("name", [](const AllocatorInfo& a) { return nb::str(a.name); })
        .def_ro("public_value", &AllocatorInfo::public_value)
        .def_ro("is_deallocator", &AllocatorInfo::deallocator);
    m.def(
        "allocator_table",
        [] {
            nb::list result;
            for (const AllocatorInfo& entry : allocator_table()) result.append(nb::cast(entry));
            return result;
        },
        "Every allocator, as AllocatorEntry, in file-value order (heapscope.AllocatorType is made from it).");

    nb::class_<LocationTotal> location_row(
        m, "LocationRow",
        "Blocks at one location: thread (0 when threads are merged), allocator (public value),\n"
        "python_node, native_node, domain, count (blocks) and size (bytes).");
    def_location(location_row, &LocationTotal::key)
        .def_ro("count", &LocationTotal::count)
        .def_ro("size", &LocationTotal::bytes);

    nb::class_<read::NativeFrame>(m, "StackFrame",
                                  "One frame of a stack: function, filename, lineno, and is_native (false for\n"
                                  "a Python frame).")
        .def_prop_ro("function", [](const read::NativeFrame& f) { return text(f.function); })
        .def_prop_ro("filename", [](const read::NativeFrame& f) { return text(f.file); })
        .def_ro("lineno", &read::NativeFrame::line)
        .def_prop_ro("is_native", [](const read::NativeFrame& f) { return !f.python; });

    nb::class_<format::MemoryRecord>(m, "MemoryRecord",
                                     "Memory at one moment: time_ms (since the capture started), rss and heap\n"
                                     "(traced bytes outstanding).")
        .def_ro("time_ms", &format::MemoryRecord::time_ms)
        .def_ro("rss", &format::MemoryRecord::rss)
        .def_ro("heap", &format::MemoryRecord::heap);

    nb::class_<analysis::SizeBucket>(m, "SizeBucket",
                                     "Allocations of low <= size <= high bytes: count of them, and their bytes.")
        .def_ro("low", &analysis::SizeBucket::low)
        .def_ro("high", &analysis::SizeBucket::high)
        .def_ro("count", &analysis::SizeBucket::count)
        .def_ro("bytes", &analysis::SizeBucket::bytes);

    nb::class_<analysis::StackTotal>(m, "StackTotal",
                                     "An amount (bytes or blocks) for one stack: python_node, native_node (0 if\n"
                                     "none), value.")
        .def_ro("python_node", &analysis::StackTotal::python_node)
        .def_ro("native_node", &analysis::StackTotal::native_node)
        .def_ro("value", &analysis::StackTotal::value);

    nb::class_<read::ThreadInfo>(m, "ThreadInfo", "A thread of the capture: os_tid and name.")
        .def_ro("os_tid", &read::ThreadInfo::os_tid)
        .def_prop_ro("name", [](const read::ThreadInfo& t) { return text(t.name); });
}

}  // namespace heapscope::bindings
