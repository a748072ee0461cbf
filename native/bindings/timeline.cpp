// _heapscope.capture_timeline and _heapscope.capture_size_histogram: the
// passes heapscope.heapprof makes over a capture (its digest, and the size
// distribution of gatherStats), with the GIL released during the pass and
// the same progress and Ctrl-C handling as the capture reader's passes.
// Results are dicts of the named rows (TimelineSnapshot here, StackTotal,
// StackFrame and SizeBucket from results.cpp).
#include <Python.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "analysis/analyses.h"
#include "read/capture_reader.h"
#include "analysis/timeline.h"
#include "bindings.h"

namespace nb = nanobind;

namespace heapscope::bindings {

namespace {

using read::CaptureReader;

// Opens `path` for a pass over every event. Needs the GIL; raises OSError,
// or ValueError for a file that is not an all-allocations capture.
std::unique_ptr<CaptureReader> open_for_events(const std::string& path) {
    CaptureReader::OpenFailure failure;
    std::unique_ptr<CaptureReader> reader;
    {
        nb::gil_scoped_release release;
        reader = CaptureReader::open(path, &failure);
    }
    if (!reader) raise_open_failure(failure, path);
    if (reader->aggregated()) {
        throw nb::value_error((path + ": an aggregated capture holds no events over time; "
                                      "only ALL_ALLOCATIONS captures can be read this way")
                                  .c_str());
    }
    return reader;
}

std::string fs_path(const nb::object& path) {
    return nb::cast<std::string>(nb::module_::import_("os").attr("fsdecode")(path));
}

// A snapshot's kept stacks as StackTotal rows (a Python stack: no native node).
std::vector<analysis::StackTotal> kept_stacks(const analysis::TimelineSnapshot& snapshot) {
    std::vector<analysis::StackTotal> result;
    result.reserve(snapshot.stacks.size());
    for (const auto& [node, bytes] : snapshot.stacks) result.push_back(analysis::StackTotal{node, 0, bytes});
    return result;
}

nb::dict capture_timeline(nb::object path_object, uint64_t interval_ms, double precision, nb::object progress,
                          size_t max_stacks) {
    if (interval_ms == 0) throw nb::value_error("interval_ms must be at least 1");
    if (!(precision >= 0.0 && precision < 1.0)) throw nb::value_error("precision must be in [0, 1)");
    const std::string path = fs_path(path_object);
    std::unique_ptr<CaptureReader> reader = open_for_events(path);
    PythonProgress p(std::move(progress));
    analysis::Timeline timeline;
    // Node -> its frames, innermost first, for every stack kept in a snapshot.
    std::map<uint32_t, std::vector<read::PythonFrame>> stacks;
    std::vector<std::pair<std::string, std::string>> metadata;
    {
        nb::gil_scoped_release release;
        timeline =
            analysis::timeline(*reader, analysis::TimelineOptions{interval_ms, precision, max_stacks}, p.callback());
        if (timeline.end.ok()) {
            for (const analysis::TimelineSnapshot& s : timeline.snapshots) {
                for (const auto& [node, bytes] : s.stacks) {
                    auto [it, inserted] = stacks.try_emplace(node);
                    if (inserted) reader->definitions().python_stack(node, SIZE_MAX, &it->second);
                }
            }
            metadata = reader->definitions().metadata();
        }
    }
    if (!timeline.end.ok()) raise_for(p, timeline.end);

    nb::dict frames;
    for (const auto& [node, stack] : stacks) frames[nb::int_(node)] = nb::cast(shown_frames(stack));
    nb::dict result;
    result["snapshots"] = nb::cast(std::move(timeline.snapshots));
    result["stacks"] = frames;
    result["metadata"] = metadata_dict(metadata, &reader->header());
    result["records"] = timeline.records;
    result["last_record_ms"] = timeline.last_record_ms;
    result["complete"] = timeline.end.complete;
    result["damage"] = damage_or_none(timeline.end.damage);
    return result;
}

nb::dict capture_size_histogram(nb::object path_object, nb::object progress) {
    const std::string path = fs_path(path_object);
    std::unique_ptr<CaptureReader> reader = open_for_events(path);
    PythonProgress p(std::move(progress));
    analysis::CaptureSummary summary;
    std::vector<analysis::SizeBucket> buckets;
    {
        nb::gil_scoped_release release;
        summary = analysis::summarize(*reader, p.callback());
        if (summary.end.ok()) buckets = analysis::size_histogram(summary);
    }
    if (!summary.end.ok()) raise_for(p, summary.end);
    nb::dict result;
    result["histogram"] = nb::cast(std::move(buckets));
    result["total_allocations"] = summary.total_allocations;
    result["total_bytes"] = summary.total_bytes;
    result["complete"] = summary.end.complete;
    result["damage"] = damage_or_none(summary.end.damage);
    return result;
}

}  // namespace

void bind_timeline(nb::module_& m) {
    nb::class_<analysis::TimelineSnapshot>(m, "TimelineSnapshot",
                                           "The live heap at one moment: moment_ms, record_ms (the memory record it was\n"
                                           "taken at), stacks ([StackTotal]: python_node and bytes, largest first),\n"
                                           "other (bytes of the small stacks merged) and total (every live byte).")
        .def_ro("moment_ms", &analysis::TimelineSnapshot::moment_ms)
        .def_ro("record_ms", &analysis::TimelineSnapshot::record_ms)
        .def_prop_ro("stacks", &kept_stacks)
        .def_ro("other", &analysis::TimelineSnapshot::other)
        .def_ro("total", &analysis::TimelineSnapshot::total);
    m.def("capture_timeline", &capture_timeline, nb::arg("path"), nb::arg("interval_ms"), nb::arg("precision"),
          nb::arg("progress") = nb::none(), nb::arg("max_stacks") = 0,
          "The live heap by Python stack every interval_ms (heapscope.heapprof's digest), in one pass\n"
          "(at most max_stacks stacks a moment when > 0, the rest merged into `other`):\n"
          "{snapshots: [TimelineSnapshot], stacks: {python_node: [StackFrame] innermost first},\n"
          "metadata, records, last_record_ms, complete, damage}.");
    m.def("capture_size_histogram", &capture_size_histogram, nb::arg("path"), nb::arg("progress") = nb::none(),
          "Allocations by size (log2 buckets), every allocation counted: {histogram: [SizeBucket],\n"
          "total_allocations, total_bytes, complete, damage}.");
}

}  // namespace heapscope::bindings
