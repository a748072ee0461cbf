// The capture side of heapscope.Tracker: start and stop a capture into a file
// descriptor, and hand a forked child its own capture (follow_fork).
#include <nanobind/nanobind.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/vector.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings.h"
#include "engine/engine.h"
#include "engine/labels.h"
#include "engine/thread_state.h"
#include "hooks/record.h"
#include "hooks/ref_tracer.h"
#include "hooks/session.h"
#include "format/chunk_io.h"
#include "format/records.h"
#include "sink/capture_writer.h"
#include "cpython/python_frames.h"

namespace nb = nanobind;

// heapscope attach's thread in the target (native/attach/agent.cpp finds
// this by name when heapscope is loaded there, heapscope/_attach_payload.py
// calls it once it imported heapscope): what that thread allocates (the
// payload, waiting for heapscope detach, answering it) is heapscope's, not
// the program's. Its frees still reach the capture. Allocates nothing.
extern "C" __attribute__((visibility("default"))) void heapscope_untrace_this_thread() {
    heapscope::t_guard_state.suppressed = true;
}

namespace heapscope::bindings {

// Names each resource pool's domain in `writer`'s capture (Metadata
// `pool.<domain>`), now and as pools are made; null stops it (pools.cpp).
void announce_pools(CaptureWriter* writer);

namespace {

using Metadata = std::vector<std::pair<std::string, std::string>>;

// Python frames kept per allocation in a capture: memray keeps them all; this
// bounds the per-thread stack cache (2 x 1024 x 20 bytes) instead.
constexpr uint32_t kCaptureDepth = 1024;

// The active capture's writer. Guarded by the GIL: only these bindings touch it.
std::unique_ptr<CaptureWriter> g_writer;

FrameDescriber python_describer() {
    FrameDescriber describer;
    describer.lineno = &python::frame_lineno;
    describer.describe_code = &python::describe_code;
    describer.is_entry = &python::frame_is_entry;
    describer.label_name = &heapscope::label_name;
    return describer;
}

[[noreturn]] void raise_runtime_error(const std::string& message) {
    throw nb::builtin_exception(nb::exception_type::runtime_error, message.c_str());
}

[[noreturn]] void raise_os_error(const std::string& message) {
    PyErr_SetString(PyExc_OSError, message.c_str());
    throw nb::python_error();
}

// OSError(error_number, message) as Python makes it: the subclass its errno
// names (a viewer that left: BrokenPipeError, ConnectionResetError). The
// instance is made here and raised with its own type: 3.9 and 3.10 keep the
// type given to PyErr_SetObject for `except` to match, whatever the instance.
[[noreturn]] void raise_os_error(int error_number, const std::string& message) {
    nb::object error = nb::borrow(PyExc_OSError)(error_number, message);
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
    throw nb::python_error();
}

}  // namespace

SamplingConfig sampling_from_text(const std::string& text) {
    SamplingConfig config;
    std::string error;
    if (!SamplingConfig::parse(text, &config, &error)) throw nb::value_error(error.c_str());
    const char* seed = std::getenv("HEAPSCOPE_SAMPLING_SEED");
    if (seed && *seed) config.seed = std::strtoull(seed, nullptr, 0);
    return config;
}

namespace {

// Where the stacks of the thread that starts a capture begin, as memray
// has it: at the frame that entered the Tracker; the frames above it (its
// callers) are not the tracked code's. They are suspended at the same
// calls for as long as that frame runs, so every stack of the thread made
// meanwhile passes through one node of the trie: the node of those frames,
// interned here and named in the capture's metadata (`stack_root_node`),
// where readers cut every stack that reaches it. `entry_depth` counts the
// frames from capture_start's Python caller to the entering frame (1: the
// caller of Tracker.__enter__). Stacks that do not pass through the node (a
// Tracker entered in a function that returns before the capture ends) are
// kept whole. GIL held, tracing suppressed.
void announce_stack_root(CaptureWriter* writer, uint32_t entry_depth) {
    PyThreadState* tstate = PyThreadState_Get();
    std::vector<FrameKey> frames(kCaptureDepth);
    uint32_t depth = 0;
    const uint32_t count = python::capture_stack(tstate, frames.data(), kCaptureDepth, &depth);
    // Every frame is needed: a stack deeper than kCaptureDepth loses its
    // outer frames, and would never pass through the node.
    if (count != depth || count <= entry_depth + 1) return;  // also: no caller above the entering frame
    const uint32_t node = engine().intern_stack(frames.data() + entry_depth + 1, count - entry_depth - 1);
    if (node != StackTrie::kRoot) writer->add_metadata({{"stack_root_node", std::to_string(node)}});
}

void capture_start(int fd, bool aggregated, bool native_traces, bool trace_python_allocators,
                   uint32_t memory_interval_ms, uint32_t checkpoint_interval_ms, bool compress, Metadata metadata,
                   const std::string& sampling_text, const std::string& door_name, int listener_fd,
                   std::optional<uint32_t> entry_depth, std::vector<std::pair<uint64_t, std::string>> thread_names,
                   bool track_object_lifetimes) {
    // Owns `listener_fd` as it owns `fd`: closed on every failure.
    struct ListenerOwner {
        int fd;
        ~ListenerOwner() {
            if (fd >= 0) ::close(fd);
        }
    } listener{listener_fd};
    if (fd < 0) throw nb::value_error("capture_start: the file descriptor must be >= 0");
    SamplingConfig sampling;
    try {
        sampling = sampling_from_text(sampling_text);
    } catch (...) {
        close(fd);
        throw;
    }
    session::Door door;
    if (!session::door_from_name(door_name, &door) || door == session::Door::kTracemalloc) {
        close(fd);
        throw nb::value_error("capture_start: door must be 'tracker' or 'heapprof'");
    }
    const std::string refused = session::refusal(door);
    if (!refused.empty()) {
        close(fd);
        raise_runtime_error(refused);
    }
    if (track_object_lifetimes && !reftrace::available()) {
        close(fd);
        raise_runtime_error("track_object_lifetimes needs Python 3.13 or later (PyRefTracer_SetTracer)");
    }
    if (native_traces && !hooks::prepare_native_stacks()) {
        close(fd);
        raise_runtime_error("native traces need libunwind (Debian: libunwind8), which could not be loaded");
    }
    CaptureOptions options;
    options.fd = fd;
    options.format = aggregated ? format::FileFormat::kAggregatedAllocations : format::FileFormat::kAllAllocations;
    options.native_traces = native_traces;
    options.trace_python_allocators = trace_python_allocators;
    options.track_object_lifetimes = track_object_lifetimes;
    options.compression_level = compress ? 3 : 0;
    options.memory_interval_ms = memory_interval_ms;
    if (checkpoint_interval_ms == 0) checkpoint_interval_ms = 1;
    options.checkpoint_interval_ms = checkpoint_interval_ms;
    options.metadata = std::move(metadata);
    // Readers need to know sizes and counts are estimates.
    options.sampling = sampling.describe();
    options.describer = python_describer();
    options.hook_lock = engine().sink_lock();  // one lock per event, not two
    // HEAPSCOPE_JOURNAL=0: no journal (chunks written as they fill and every
    // 250 ms, as before it): for a file system that cannot map files shared.
    const char* journal = std::getenv("HEAPSCOPE_JOURNAL");
    options.journal = !(journal && std::string(journal) == "0");
    options.listener_fd = listener.fd;
    listener.fd = -1;  // the writer's from here; closed below if the writer cannot start
    std::string error;
    const int listener_given = options.listener_fd;
    int error_number = 0;
    std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(std::move(options), &error, &error_number);
    if (!writer) {
        if (listener_given >= 0) ::close(listener_given);
        // With its errno: a live viewer that left is a ConnectionError.
        if (error_number != 0) raise_os_error(error_number, "cannot start the capture: " + error);
        raise_os_error("cannot start the capture: " + error);
    }
    // What heapscope allocates to set itself up is not the program's.
    SuppressTracing untraced;
    session::Options session_options;
    session_options.traceback_limit = kCaptureDepth;
    session_options.sink = writer.get();
    session_options.native_traces = native_traces;
    session_options.python_allocators = trace_python_allocators;
    session_options.object_lifetimes = track_object_lifetimes;
    session_options.sampling = sampling;
    if (!session::begin(door, session_options)) raise_runtime_error(session::refusal(door));
    g_writer = std::move(writer);
    if (entry_depth) announce_stack_root(g_writer.get(), *entry_depth);
    for (const auto& [ident, name] : thread_names) engine().name_thread(ident, name);
    announce_pools(g_writer.get());
}

// Stops the engine and removes every hook; the writer gets no more events.
void stop_engine() {
    announce_pools(nullptr);
    std::vector<FrameKey> unpin;
    session::end(&unpin);
    release_pins(unpin);
}

// The wall-clock time now, as Python's repr(time.time()) reads back.
std::string unix_time_text() {
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    char text[64];
    std::snprintf(text, sizeof text, "%lld.%06ld", static_cast<long long>(now.tv_sec), now.tv_nsec / 1000);
    return text;
}

// Stops the capture of process `owner_pid`; None in any other (a forked
// child whose part of the capture already ended). Called from
// Tracker.__exit__ before anything else: its argument is an int the Tracker
// already holds, so nothing is allocated before the engine stops (a
// converted argument would be a block of heapscope's in the capture).
// `end_metadata` is converted only once the engine has stopped, for the same reason.
std::optional<nb::dict> capture_stop(long long owner_pid, nb::handle end_metadata) {
    if (static_cast<long long>(getpid()) != owner_pid) return std::nullopt;
    if (!g_writer) raise_runtime_error("no capture is active");
    // track_object_lifetimes: the objects still alive, taken (with a
    // reference each) while the tracer is in place, so none is destroyed
    // unseen in between; owned here until they are handed to Python.
    struct Survivors {
        std::vector<PyObject*> objects;
        ~Survivors() {
            for (PyObject* op : objects) Py_DECREF(op);
        }
    } survivors;
    {
        SuppressTracing untraced;  // unpatching allocates; frees still reach the capture
        reftrace::take_surviving(&survivors.objects);
        stop_engine();
    }
    Metadata end{{"end_time", unix_time_text()}};
    for (auto& entry : nb::cast<Metadata>(end_metadata)) end.push_back(std::move(entry));
    std::unique_ptr<CaptureWriter> writer = std::move(g_writer);
    std::string error;
    bool ok;
    {
        nb::gil_scoped_release release;  // joins the writer's thread, which never takes the GIL
        ok = writer->finish(end, &error);
    }
    CaptureTotals totals = writer->totals();
    if (!ok) {
        const std::string message = "the capture could not be written completely: " + error;
        if (writer->error_number() != 0) raise_os_error(writer->error_number(), message);
        raise_os_error(message);
    }
    nb::dict result;
    result["allocations"] = totals.allocations;
    result["deallocations"] = totals.deallocations;
    result["peak_memory"] = totals.peak_heap;
    result["bytes_written"] = totals.bytes_written;
    nb::list surviving;  // Python objects made only now: the engine has stopped
    for (PyObject* op : survivors.objects) surviving.append(nb::handle(op));
    result["surviving_objects"] = surviving;
    return result;
}

// In a forked child. The engine has already detached the parent's writer
// (Engine::after_fork_in_child); that writer's thread and lock did not
// survive the fork, so it is abandoned, never finished or destroyed.
void capture_fork_child(std::optional<int> fd, Metadata metadata) {
    if (!g_writer) return;
    CaptureWriter* parent_writer = g_writer.release();
    if (!fd) {
        stop_engine();
        return;
    }
    std::string error;
    std::unique_ptr<CaptureWriter> child = parent_writer->clone_in_child(*fd, std::move(metadata), &error);
    if (!child) {
        stop_engine();
        raise_os_error("follow_fork: cannot start the child's capture: " + error);
    }
    engine().replace_sink(child.get());
    g_writer = std::move(child);
    announce_pools(g_writer.get());
}

// threading.Thread's name for the capture (heapscope.tracker's interceptor
// of Thread._name and _ident). The name is converted here, untraced: a block
// made for it would be heapscope's own in the capture.
void capture_thread_name(uint64_t ident, nb::handle name) {
    if (!g_writer) return;
    SuppressTracing untraced;
    HookGuard inside;
    Py_ssize_t length = 0;
    const char* text = PyUnicode_Check(name.ptr()) ? PyUnicode_AsUTF8AndSize(name.ptr(), &length) : nullptr;
    if (!text) {
        PyErr_Clear();
        return;
    }
    engine().name_thread(ident, std::string(text, static_cast<size_t>(length)));
}

// heapscope run's supervisor, after the program died without ending its
// capture: appends a Metadata record (how it ended) where a reader finds it:
// one more journal slot past the last, or one more chunk after the last.
// "appended", or why not: "complete" (the capture was ended), "damaged".
std::string capture_append_metadata(const std::string& path, Metadata entries) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) raise_os_error(path + ": " + std::strerror(errno));
    std::string outcome;
    {
        nb::gil_scoped_release release;
        format::ChunkReader reader(fd);
        format::FileHeader header;
        format::ChunkReader::Status status = format::ChunkReader::Status::kDamaged;
        bool ended = false;
        if (reader.read_header(&header)) {
            format::ChunkType type;
            std::string payload;
            while ((status = reader.next(&type, &payload)) == format::ChunkReader::Status::kChunk) {
                if (type == format::ChunkType::kEnd) ended = true;
            }
        }
        format::MetadataRecord record;
        record.entries = std::move(entries);
        format::RecordEncoder encoder;
        encoder.metadata(record);
        const std::string_view bytes = encoder.view();
        struct stat st {};
        if (ended) {
            outcome = "complete";
        } else if (status == format::ChunkReader::Status::kDamaged || ::fstat(fd, &st) != 0) {
            outcome = "damaged";
        } else if (reader.read_journal()) {
            const uint64_t at = (static_cast<uint64_t>(st.st_size) + format::kJournalAlign - 1) /
                                format::kJournalAlign * format::kJournalAlign;
            std::string slot(format::kJournalHeaderBytes + bytes.size(), '\0');
            alignas(8) char head[format::kJournalHeaderBytes];
            format::init_journal_slot(head, reader.next_sequence(), static_cast<uint32_t>(bytes.size()));
            format::publish_journal(reinterpret_cast<uint64_t*>(head + format::kJournalCommittedOffset), bytes.size());
            std::memcpy(slot.data(), head, sizeof head);
            std::memcpy(slot.data() + sizeof head, bytes.data(), bytes.size());
            const ssize_t n = ::pwrite(fd, slot.data(), slot.size(), static_cast<off_t>(at));
            outcome = n == static_cast<ssize_t>(slot.size()) ? "appended" : std::string("write failed: ") + std::strerror(errno);
        } else {
            format::ChunkWriter writer(fd, 0);
            writer.set_positional(reader.offset());
            writer.set_next_sequence(reader.next_sequence());
            outcome = writer.write_chunk(format::ChunkType::kRecords, bytes) ? "appended" : writer.error();
        }
    }
    ::close(fd);
    return outcome;
}

}  // namespace

void bind_capture_control(nb::module_& m) {
    m.def("capture_append_metadata", &capture_append_metadata, nb::arg("path"), nb::arg("entries"),
          "After the program died without ending its capture: append a Metadata record. Returns 'appended',\n"
          "'complete' (nothing to do) or why not.");
    m.def("capture_start", &capture_start, nb::arg("fd"), nb::kw_only(), nb::arg("aggregated"),
          nb::arg("native_traces"), nb::arg("trace_python_allocators"), nb::arg("memory_interval_ms"),
          nb::arg("checkpoint_interval_ms") = 1000, nb::arg("compress"), nb::arg("metadata"), nb::arg("sampling") = "exact",
          nb::arg("door") = "tracker", nb::arg("listener_fd") = -1, nb::arg("entry_depth") = nb::none(),
          nb::arg("thread_names") = std::vector<std::pair<uint64_t, std::string>>{},
          nb::arg("track_object_lifetimes") = false,
          "Start capturing every allocation into `fd` (a file or a connected socket; the capture owns it).\n"
          "listener_fd: a listening socket the writer serves (refuses a second viewer on).\n"
          "entry_depth: the frames from the caller to the frame that entered the Tracker (1: the caller's\n"
          "caller); the stacks of this thread start there. None: stacks are kept whole.\n"
          "thread_names: (ident, name) of threads that exist already: their names in the capture.\n"
          "track_object_lifetimes: record every Python object made and destroyed (3.13+); capture_stop\n"
          "then returns the ones still alive in 'surviving_objects'.");
    m.def("capture_stop", &capture_stop, nb::arg("owner_pid"), nb::arg("end_metadata"),
          "Stop the capture of process `owner_pid`, write its end (end_time stamped now, then\n"
          "`end_metadata`, a list of (key, value) str pairs) and close it. Returns totals (and\n"
          "'surviving_objects': with track_object_lifetimes, the objects made and still alive; else []);\n"
          "None in another process.");
    m.def("capture_active", [] { return static_cast<bool>(g_writer); });
    m.def("capture_thread_name", &capture_thread_name, nb::arg("ident"), nb::arg("name"),
          "While capturing: the thread with this ident (threading.get_ident()) is called `name` (a str).");
    m.def("untrace_this_thread", &heapscope_untrace_this_thread,
          "From now on, what the calling thread allocates is not recorded (its frees are).");
    m.def("check_can_start", [](const std::string& door_name) {
        session::Door door;
        if (!session::door_from_name(door_name, &door)) throw nb::value_error("unknown door");
        raise_if_refused(door);
    }, nb::arg("door"), "RuntimeError if the door ('tracemalloc', 'tracker', 'heapprof') may not start now.");
    m.def("capture_fork_child", &capture_fork_child, nb::arg("fd").none(), nb::arg("metadata"),
          "In a forked child: continue the capture into `fd`, or end the child's part if None.");
}

}  // namespace heapscope::bindings
