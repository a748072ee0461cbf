// heapscope._heapscope: the extension module. It translates between Python
// and the engine; the front doors (heapscope.tracemalloc, ...) are Python.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bindings.h"
#include "engine/engine.h"
#include "engine/thread_state.h"
#include "hooks/custom_domains.h"
#include "hooks/pymem_hooks.h"
#include "hooks/session.h"
#include "cpython/python_allocators.h"
#include "cpython/python_frames.h"

namespace nb = nanobind;
using namespace heapscope;

void bind_capture_reader(nanobind::module_& m);  // capture_reader.cpp
void bind_pools(nanobind::module_& m);           // pools.cpp

void heapscope::bindings::release_pins(const std::vector<FrameKey>& unpin) {
    for (const FrameKey& frame : unpin) pymem::unpin_frame_code(frame.code);
}

namespace {


struct FrameKeyHash {
    size_t operator()(const FrameKey& k) const noexcept {
        return std::hash<uintptr_t>()(k.code) * 31 + std::hash<uintptr_t>()(k.instr);
    }
};

using bindings::release_pins;

// Turns stack nodes into the stdlib's raw traceback form: a tuple of
// (filename, lineno) tuples, most recent first, or (filename, lineno,
// function) with `with_functions`. Identical stacks share one tuple, and
// identical frames one frame tuple. Calls Python: needs the GIL.
//
// All frames are copied out of the engine, and their code objects referenced,
// before the first Python object is built: building may run a collection,
// and finalizers may call clear_traces(), which drops the stacks and the
// engine's own references to the code.
class TracebackBuilder {
  public:
    TracebackBuilder(const std::vector<uint32_t>& nodes, bool with_functions) : with_functions_(with_functions) {
        std::vector<std::vector<FrameKey>> frames;
        engine().frames_of_many(nodes, &frames);
        for (size_t i = 0; i < nodes.size(); ++i) {
            for (const FrameKey& key : frames[i]) {
                PyCodeObject* code = python::frame_code(key);
                if (code && held_.insert(code).second) Py_INCREF(code);
            }
            frames_by_node_.emplace(nodes[i], std::move(frames[i]));
        }
    }
    ~TracebackBuilder() {
        for (PyCodeObject* code : held_) Py_DECREF(code);
    }
    TracebackBuilder(const TracebackBuilder&) = delete;
    TracebackBuilder& operator=(const TracebackBuilder&) = delete;

    nb::object frames_of(uint32_t node) {
        auto found = by_node_.find(node);
        if (found != by_node_.end()) return found->second;
        std::vector<FrameKey>& keys = frames_by_node_[node];
        // No Python frame at all (a thread starting or ending): the stdlib
        // reports one "<unknown>" frame, never an empty traceback.
        if (keys.empty()) keys.push_back(kUnknownFrame);
        nb::object result = nb::steal(PyTuple_New(static_cast<Py_ssize_t>(keys.size())));
        if (!result.is_valid()) throw nb::python_error();
        for (size_t i = 0; i < keys.size(); ++i) {
            nb::object frame = frame_tuple(keys[i]);
            PyTuple_SET_ITEM(result.ptr(), static_cast<Py_ssize_t>(i), frame.release().ptr());
        }
        by_node_.emplace(node, result);
        return result;
    }

  private:
    nb::object frame_tuple(FrameKey key) {
        auto found = by_frame_.find(key);
        if (found != by_frame_.end()) return found->second;
        PyCodeObject* code = python::frame_code(key);
        nb::object filename;
        if (code && PyUnicode_Check(code->co_filename)) {
            filename = nb::borrow(code->co_filename);
        } else {
            filename = nb::str("<unknown>");
        }
        nb::object frame;
        if (with_functions_) {
            PyObject* name = code ? function_name(code) : nullptr;
            frame = nb::make_tuple(filename, python::frame_lineno(key),
                                   name ? nb::borrow(name) : nb::object(nb::str("<unknown>")));
        } else {
            frame = nb::make_tuple(filename, python::frame_lineno(key));
        }
        by_frame_.emplace(key, frame);
        return frame;
    }

    static PyObject* function_name(PyCodeObject* code) {
#if PY_VERSION_HEX >= 0x030B0000
        PyObject* name = code->co_qualname;
#else
        PyObject* name = code->co_name;
#endif
        return name && PyUnicode_Check(name) ? name : nullptr;
    }

    bool with_functions_;
    std::unordered_set<PyCodeObject*> held_;
    std::unordered_map<uint32_t, std::vector<FrameKey>> frames_by_node_;
    std::unordered_map<uint32_t, nb::object> by_node_;
    std::unordered_map<FrameKey, nb::object, FrameKeyHash> by_frame_;
};

std::vector<uint32_t> distinct_stacks(const std::vector<TraceRecord>& records) {
    std::unordered_set<uint32_t> seen;
    std::vector<uint32_t> nodes;
    for (const TraceRecord& record : records) {
        if (seen.insert(record.info.stack).second) nodes.push_back(record.info.stack);
    }
    return nodes;
}

// Whether the tracemalloc door is tracing: the engine may be running a
// capture (a Tracker) instead, which the door must neither report nor stop.
bool door_tracing() { return session::running() == session::Door::kTracemalloc; }

void start(uint32_t nframe, const std::string& sampling_text) {
    SamplingConfig sampling = bindings::sampling_from_text(sampling_text);
    if (nframe < 1 || nframe > 65535) throw nb::value_error("the number of frames must be in range [1; 65535]");
    bindings::raise_if_refused(session::Door::kTracemalloc);
    session::Options options;
    options.traceback_limit = nframe;
    options.sampling = sampling;
    session::begin(session::Door::kTracemalloc, options);  // false if already tracing: the stdlib ignores that
}

void stop() {
    if (!door_tracing()) return;
    std::vector<FrameKey> unpin;
    session::end(&unpin);
    release_pins(unpin);
}

void clear_traces() {
    if (!door_tracing()) return;
    std::vector<FrameKey> unpin;
    engine().clear(&unpin);
    release_pins(unpin);
}

nb::list get_traces(bool with_functions) {
    nb::list result;
    if (!door_tracing()) return result;
    if (!pymem::hooks_in_chain()) {
        if (PyErr_WarnEx(PyExc_RuntimeWarning,
                         "heapscope's allocator hooks were replaced by another tool (the standard library's "
                         "tracemalloc.stop() restores the allocators it found): allocations and frees made since "
                         "are missing from this snapshot. Call heapscope's stop() and start() again.",
                         1) < 0) {
            throw nb::python_error();
        }
    }
    SuppressTracing suppress;  // the snapshot's own objects are not traces
    std::vector<TraceRecord> records;
    engine().collect(&records);
    TracebackBuilder builder(distinct_stacks(records), with_functions);
    // While sampling, each trace is an estimate: its bytes and, fifth, the
    // number of blocks it stands for (sample/sampler.h).
    const bool sampled = engine().sampling_active();
    for (const TraceRecord& record : records) {
        uint32_t depth = block_depth(record.info);
        uint32_t total = depth < kMaxTotalDepth ? depth : kMaxTotalDepth;
        if (total == 0) total = 1;  // the "<unknown>" frame, as the stdlib counts it
        nb::object frames = builder.frames_of(record.info.stack);
        if (sampled) {
            Estimate weight = engine().estimate(record.address, record.info);
            result.append(nb::make_tuple(record.domain, weight.bytes, frames, total, weight.count));
        } else {
            result.append(nb::make_tuple(record.domain, record.info.size, frames, total));
        }
    }
    return result;
}

nb::object block_traceback(uint32_t domain, uintptr_t address) {
    if (!door_tracing()) return nb::none();
    BlockInfo info;
    if (!engine().find(domain, address, &info)) return nb::none();
    SuppressTracing suppress;
    TracebackBuilder builder({info.stack}, false);
    return builder.frames_of(info.stack);
}

nb::object get_object_traceback(nb::handle obj) {
    return block_traceback(Engine::kDefaultDomain, python::object_block_address(obj.ptr()));
}

// What extensions calling _PyTraceMalloc_GetTraceback get (custom_domains.h).
PyObject* traceback_for_extensions(unsigned int domain, uintptr_t address) {
    try {
        return block_traceback(domain, address).release().ptr();
    } catch (nb::python_error& error) {
        error.restore();
    } catch (const std::exception& error) {
        PyErr_SetString(PyExc_RuntimeError, error.what());
    }
    return nullptr;
}

// An unsigned integer argument with the errors a Python user expects:
// TypeError for a non-integer, ValueError naming the range otherwise.
uint64_t unsigned_argument(nb::handle value, const char* name, unsigned bits) {
    if (!PyIndex_Check(value.ptr())) {
        throw nb::type_error((std::string(name) + " must be an int, not " +
                              Py_TYPE(value.ptr())->tp_name).c_str());
    }
    nb::object number = nb::steal(PyNumber_Index(value.ptr()));
    if (!number.is_valid()) throw nb::python_error();
    unsigned long long result = PyLong_AsUnsignedLongLong(number.ptr());
    bool negative_or_huge = result == static_cast<unsigned long long>(-1) && PyErr_Occurred();
    if (negative_or_huge) PyErr_Clear();
    if (negative_or_huge || (bits < 64 && result >> bits)) {
        std::string max = std::to_string(bits < 64 ? (1ull << bits) - 1 : ~0ull);
        throw nb::value_error((std::string(name) + " must be in range [0; " + max + "]").c_str());
    }
    return result;
}

int track(nb::handle domain, nb::handle address, nb::handle size) {
    return domains::track(static_cast<unsigned int>(unsigned_argument(domain, "domain", 32)),
                          static_cast<uintptr_t>(unsigned_argument(address, "address", 64)),
                          static_cast<size_t>(unsigned_argument(size, "size", 64)));
}

int untrack(nb::handle domain, nb::handle address) {
    return domains::untrack(static_cast<unsigned int>(unsigned_argument(domain, "domain", 32)),
                            static_cast<uintptr_t>(unsigned_argument(address, "address", 64)));
}

struct TracedMemory {
    uint64_t current = 0, peak = 0;
};

TracedMemory get_traced_memory() {
    TracedMemory result;
    if (door_tracing()) engine().traced_memory(&result.current, &result.peak);
    return result;
}

}  // namespace

NB_MODULE(_heapscope, m) {
    m.doc() = "heapscope's C++ engine (internal: use heapscope.tracemalloc and the other front doors)";
    bindings::bind_results(m);  // first: the other files' results are made of these types
    engine().set_frame_pinner([](FrameKey frame) { pymem::pin_frame_code(frame.code); });
    domains::export_c_api();
    domains::set_traceback_lookup(&traceback_for_extensions);

    m.def("start", &start, nb::arg("nframe"), nb::arg("sampling") = "exact");
    m.def("get_sampling", [] { return door_tracing() ? engine().sampling().describe() : std::string("exact"); },
          "The tracing session's sampling, in its text form (\"exact\" when not tracing).");
    m.attr("DEFAULT_SAMPLING_INTERVAL") = kDefaultSamplingInterval;
    m.def("stop", &stop);
    m.def("is_tracing", &door_tracing);
    m.def("clear_traces", &clear_traces);
    m.def("get_traceback_limit", [] { return engine().traceback_limit(); });
    nb::class_<TracedMemory>(m, "TracedMemory", "current and peak traced bytes (0, 0 when not tracing).")
        .def_ro("current", &TracedMemory::current)
        .def_ro("peak", &TracedMemory::peak);
    m.def("get_traced_memory", &get_traced_memory);
    m.def("reset_peak", [] {
        if (door_tracing()) engine().reset_peak();
    });
    m.def("get_tracemalloc_memory", [] { return engine().own_memory(); });
    m.def("get_traces", &get_traces, nb::arg("functions") = false,
          "Every live block as (domain, size, frames, total_nframe[, count when sampling]), frames most\n"
          "recent first: (filename, lineno) tuples, or (filename, lineno, function) with functions=True.\n"
          "Tuples by contract: the standard library's raw trace form (tracemalloc._get_traces),\n"
          "which heapscope.tracemalloc.Snapshot takes as it is.");
    m.def("get_object_traceback", &get_object_traceback, nb::arg("obj"));
    m.def("track", &track, nb::arg("domain"), nb::arg("address"), nb::arg("size"),
          "Record a block of `size` bytes at `address` in the numbered `domain`, with the calling\n"
          "Python stack. Returns 0, or -2 if heapscope is not tracing (as PyTraceMalloc_Track).");
    m.def("untrack", &untrack, nb::arg("domain"), nb::arg("address"),
          "Forget the block at `address` in `domain`. Returns 0, or -2 if not tracing.");
    // Labels (engine/labels.h): heapscope.label pushes and pops them.
    m.def("label_push", [](const std::string& name) {
        if (name.empty() || name.size() > kMaxLabelName) {
            throw nb::value_error("a label's name must be 1 to 4096 bytes of UTF-8");
        }
        if (!push_label(name.data(), name.size())) throw std::bad_alloc();
    }, nb::arg("name"));
    m.def("label_pop", [] {
        if (!pop_label()) throw nb::value_error("no label is pushed on this thread");
    });
    m.def("label_depth", [] { return label_depth(); });
    m.def("_stack_node_count", [] { return engine().stack_node_count(); });
    m.def("_trace_count", [] { return engine().trace_count(); });
    m.def("_anchored_walks", [] { return python::anchored_walks(); });
    m.def("current_allocator_name", []() -> std::optional<std::string> {
        const char* name = python::current_allocator_name();
        if (name == nullptr) return std::nullopt;
        return std::string(name);
    }, "CPython's name for its allocators (\"pymalloc\", \"malloc_debug\"...), or None once a domain is hooked.");
    m.def("_frees_unhooked", [](int domain) {
        if (domain < PYMEM_DOMAIN_RAW || domain > PYMEM_DOMAIN_OBJ) throw nb::value_error("domain: 0 (raw), 1 (mem) or 2 (object)");
        return pymem::frees_unhooked(static_cast<PyMemAllocatorDomain>(domain));
    }, nb::arg("domain"));
    bindings::bind_capture_control(m);
    bind_capture_reader(m);
    bindings::bind_timeline(m);
    bind_pools(m);
}
