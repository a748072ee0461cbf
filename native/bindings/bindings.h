// What the binding files share. Each file binds one front door's needs.
#pragma once

#include <Python.h>
#include <nanobind/nanobind.h>

#include <cerrno>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "analysis/analyses.h"
#include "hooks/session.h"
#include "model/allocator.h"
#include "model/location.h"
#include "read/capture_reader.h"
#include "sample/sampler.h"
#include "stack/stack_trie.h"

namespace heapscope::bindings {

// Drops the references the engine took on code objects. Needs the GIL; may
// run Python (a code object's deallocation).
void release_pins(const std::vector<FrameKey>& unpin);

// The engine's sampling from its text form (heapscope/_sampling.py makes it
// from the user's argument); ValueError if it is not valid. The seed comes
// from HEAPSCOPE_SAMPLING_SEED when set (reproducible runs and tests), else
// fresh per session.
SamplingConfig sampling_from_text(const std::string& text);

// RuntimeError with the session owner's message if `door` may not start now
// (hooks/session.h).
inline void raise_if_refused(session::Door door) {
    const std::string refused = session::refusal(door);
    if (!refused.empty()) throw nanobind::builtin_exception(nanobind::exception_type::runtime_error, refused.c_str());
}

// capture_start, capture_stop, capture_active, check_can_start, capture_fork_child.
void bind_capture_control(nanobind::module_& m);

// results.cpp: the named types the results of several files are made of
// (LocationRow, StackFrame, MemoryRecord, SizeBucket, StackTotal,
// ThreadInfo, AllocatorEntry) and allocator_table(). Results cross as these,
// never as positional tuples.
void bind_results(nanobind::module_& m);

// capture_timeline, capture_size_histogram: heapscope.heapprof's passes.
void bind_timeline(nanobind::module_& m);

// Shared by the passes over capture files (capture_reader.cpp, timeline.cpp).

// Text from a capture, or a name a C caller gave (pool names, kinds), as
// str. Stored as UTF-8; anything else (a command line in another encoding,
// a Latin-1 pool name from C) is shown with replacement characters rather
// than refused. Calls Python.
inline nanobind::str text(const std::string& s) {
    PyObject* str = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
    if (str == nullptr) throw nanobind::python_error();
    return nanobind::steal<nanobind::str>(str);
}

// Binds a row's location as attributes of `cls`: thread, allocator (its
// public value), python_node, native_node and domain, for the row types that
// hold a LocationKey at `key` (LocationRow, EventRow, LiveBlock).
template <typename Row>
nanobind::class_<Row>& def_location(nanobind::class_<Row>& cls, LocationKey Row::*key) {
    return cls.def_prop_ro("thread", [key](const Row& row) { return (row.*key).thread; })
        .def_prop_ro("allocator", [key](const Row& row) { return public_allocator_value((row.*key).allocator); })
        .def_prop_ro("python_node", [key](const Row& row) { return (row.*key).python_node; })
        .def_prop_ro("native_node", [key](const Row& row) { return (row.*key).native_node; })
        .def_prop_ro("domain", [key](const Row& row) { return (row.*key).domain; });
}

// A damage report as Python sees it: None when there is none.
inline nanobind::object damage_or_none(const std::string& damage) {
    return damage.empty() ? nanobind::none() : nanobind::object(text(damage));
}

// A Python stack as StackFrame rows (frames marked as Python's).
std::vector<read::NativeFrame> shown_frames(const std::vector<read::PythonFrame>& frames);

// {thread id: ThreadInfo}. Calls Python.
nanobind::dict threads_dict(const std::vector<std::pair<uint32_t, read::ThreadInfo>>& threads);

// "ALL_ALLOCATIONS" or "AGGREGATED_ALLOCATIONS" (heapscope.FileFormat's names).
const char* file_format_name(format::FileFormat format);

// A capture's metadata, the one place the dict is made: its metadata
// entries in the order first written, then what the header says
// (has_native_traces; file_format, None while `header` is null: a stream
// whose header has not arrived). Calls Python.
nanobind::dict metadata_dict(const std::vector<std::pair<std::string, std::string>>& entries,
                             const format::FileHeader* header);

// The progress callback of one pass, as the core wants it: called without
// the GIL, it takes the GIL, checks for signals (Ctrl-C stops a long pass)
// and calls the user's callable. A Python exception stops the pass and is
// raised again once the pass has ended. Calls Python.
class PythonProgress {
  public:
    explicit PythonProgress(nanobind::object callable) : callable_(std::move(callable)) {}
    ~PythonProgress() = default;  // destroyed with the GIL held (it may own an exception)
    PythonProgress(const PythonProgress&) = delete;
    PythonProgress& operator=(const PythonProgress&) = delete;

    read::Progress callback() {
        return [this](uint64_t done, uint64_t total) -> bool {
            nanobind::gil_scoped_acquire acquire;
            if (PyErr_CheckSignals() != 0) {
                error_.emplace();
                return false;
            }
            if (callable_.is_valid() && !callable_.is_none()) {  // cleared by GC: no callback
                try {
                    callable_(done, total);
                } catch (nanobind::python_error& e) {
                    error_.emplace(std::move(e));
                    return false;
                }
            }
            return true;
        };
    }
    // For the garbage collector: a progress callable may refer back to the
    // object that holds it (a lambda's globals), a cycle only GC can break.
    nanobind::handle callable() const { return callable_; }
    void clear() { callable_.reset(); }
    // Raises what stopped the pass, if Python did. Needs the GIL.
    void raise_if_failed() {
        if (error_) {
            nanobind::python_error e = std::move(*error_);
            error_.reset();
            throw e;
        }
    }

  private:
    nanobind::object callable_;
    std::optional<nanobind::python_error> error_;
};

// Turns a pass that did not finish into an exception. Needs the GIL.
inline void raise_for(PythonProgress& progress, const analysis::PassEnd& end) {
    progress.raise_if_failed();
    if (end.cancelled) throw nanobind::python_error();  // a signal handler's exception, already set
    if (!end.error.empty()) {
        PyErr_SetString(PyExc_OSError, end.error.c_str());
        throw nanobind::python_error();
    }
}

// Raises what opening a capture met: OSError (with errno and the path) for
// a system error, ValueError for a file that is not a capture. Needs the GIL.
[[noreturn]] inline void raise_open_failure(const read::CaptureReader::OpenFailure& failure,
                                            const std::string& path) {
    if (failure.kind == read::CaptureReader::OpenError::kSystem) {
        errno = failure.error_number;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, path.c_str());
        throw nanobind::python_error();
    }
    throw nanobind::value_error(failure.message.c_str());
}

}  // namespace heapscope::bindings
