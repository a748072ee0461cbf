// _heapscope.CaptureFile, _heapscope.CaptureStream and allocator_name: the
// capture reader and its analyses (native/src/analysis) for the Python front
// doors (heapscope.FileReader, heapscope.tracemalloc's snapshot_at, the
// command line). Results are plain tuples, lists and dicts; the front doors
// give them names.
//
// Long passes run with the GIL released; the progress callback (and a check
// for Ctrl-C) runs with it held, between chunks. One lock per file
// serialises passes; every path releases the GIL before taking it, so a
// pass that needs the GIL for its callback never waits on a thread that
// holds the GIL and waits for the lock.
#include <Python.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include "analysis/capture_file.h"
#include "bindings.h"
#include "analysis/capture_stream.h"
#include "model/location.h"
#include "sink/capture_sink.h"

namespace nb = nanobind;
using namespace heapscope;
using namespace heapscope::analysis;
using namespace heapscope::read;
using heapscope::bindings::PythonProgress;
using heapscope::bindings::raise_for;
using heapscope::bindings::text;

namespace {

constexpr size_t kRecordBatch = 4096;  // events decoded per GIL release while iterating records

const char* file_format_name(format::FileFormat f) {
    return f == format::FileFormat::kAggregatedAllocations ? "AGGREGATED_ALLOCATIONS" : "ALL_ALLOCATIONS";
}

size_t frame_limit(const nb::object& max_frames) {
    if (max_frames.is_none()) return SIZE_MAX;
    const long long n = nb::cast<long long>(max_frames);
    if (n < 0) throw nb::value_error("max_frames must be >= 0 or None");
    return static_cast<size_t>(n);
}

nb::tuple location_tuple(const LocationTotal& row) {
    return nb::make_tuple(row.key.thread, static_cast<int>(row.key.allocator), row.key.python_node,
                          row.key.native_node, row.key.domain, row.count, row.bytes);
}

nb::list location_list(std::vector<LocationTotal> rows, bool merge_threads) {
    nb::list result;
    for (const LocationTotal& row : finish_rows(std::move(rows), merge_threads)) result.append(location_tuple(row));
    return result;
}

template <typename Frame>
nb::list frame_list(const std::vector<Frame>& frames) {
    nb::list result;
    for (const Frame& f : frames) result.append(nb::make_tuple(text(f.function), text(f.file), f.line));
    return result;
}

nb::dict threads_dict(const std::vector<std::pair<uint32_t, ThreadInfo>>& threads) {
    nb::dict result;
    for (const auto& [id, info] : threads) result[nb::int_(id)] = nb::make_tuple(info.os_tid, text(info.name));
    return result;
}

// The file and the lock its passes share with the record iterators made
// from it (which may outlive the CaptureFile object).
struct SharedFile {
    std::mutex mutex;
    std::unique_ptr<CaptureFile> file;
};

// One event as records() yields it.
struct EventRow {
    uint64_t address, size;
    uint32_t thread, python_node, native_node, domain;
    uint8_t allocator;
    uint32_t count;  // blocks the event stands for (1 unless sampled)
};

// The lazy iterator of records(): decodes a batch of events with the GIL
// released, then hands them out one tuple at a time.
class RecordIterator {
  public:
    RecordIterator(std::shared_ptr<SharedFile> shared, nb::object progress)
        : shared_(std::move(shared)), progress_(std::move(progress)) {}

    void start() {
        std::string error;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(shared_->mutex);
            cursor_ = shared_->file->reader().start_pass(progress_.callback(), true, &error);
        }
        if (!cursor_) {
            PyErr_SetString(PyExc_OSError, error.c_str());
            throw nb::python_error();
        }
    }

    nb::tuple next() {
        if (position_ == batch_.size()) {
            batch_.clear();
            position_ = 0;
            if (cursor_) {
                {
                    nb::gil_scoped_release release;
                    std::lock_guard<std::mutex> lock(shared_->mutex);
                    fill();
                }
                if (batch_.empty()) {
                    PassEnd end;
                    end.complete = cursor_->end_chunk_seen();
                    end.damage = cursor_->damage();
                    end.cancelled = cursor_->cancelled();
                    cursor_.reset();
                    {
                        nb::gil_scoped_release release;
                        std::lock_guard<std::mutex> lock(shared_->mutex);
                        shared_->file->note_full_pass(end);
                    }
                    raise_for(progress_, end);
                }
            }
            if (batch_.empty()) throw nb::stop_iteration();
        }
        const EventRow& e = batch_[position_++];
        return nb::make_tuple(e.thread, e.address, e.size, static_cast<int>(e.allocator), e.python_node,
                              e.native_node, e.domain, e.count);
    }

    PythonProgress& progress() { return progress_; }

  private:
    void fill() {
        while (batch_.size() < kRecordBatch) {
            const format::Record* r = cursor_->next();
            if (r == nullptr) return;
            if (r->type == format::RecordType::kAllocation) {
                const format::AllocationRecord& a = r->allocation;
                batch_.push_back(EventRow{a.address, a.size, a.thread, a.python_node, a.native_node, a.domain,
                                          static_cast<uint8_t>(a.allocator), a.count});
            } else if (r->type == format::RecordType::kDeallocation) {
                const format::DeallocationRecord& d = r->deallocation;
                batch_.push_back(
                    EventRow{d.address, d.size, d.thread, 0, 0, d.domain, static_cast<uint8_t>(d.allocator), 1});
            }
        }
    }

    std::shared_ptr<SharedFile> shared_;
    PythonProgress progress_;
    std::unique_ptr<CaptureReader::Cursor> cursor_;
    std::vector<EventRow> batch_;
    size_t position_ = 0;
};

class PyCaptureFile {
  public:
    PyCaptureFile(nb::object path, nb::object progress) : progress_(std::move(progress)) {
        path_ = nb::cast<std::string>(nb::module_::import_("os").attr("fsdecode")(path));
        CaptureReader::OpenFailure failure;
        std::unique_ptr<CaptureFile> file;
        {
            nb::gil_scoped_release release;
            file = CaptureFile::open(path_, &failure);
        }
        if (!file) heapscope::bindings::raise_open_failure(failure, path_);
        shared_ = std::make_shared<SharedFile>();
        shared_->file = std::move(file);
    }

    const char* file_format() const { return file_format_name(file().header().format); }
    bool native_traces() const { return file().header().native_traces; }
    bool trace_python_allocators() const { return file().header().trace_python_allocators; }

    nb::dict metadata() {
        const CaptureSummary& s = summary(nb::none());
        nb::dict result;
        std::vector<std::pair<std::string, std::string>> entries;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(shared_->mutex);
            entries = file().definitions().metadata();
        }
        for (const auto& [key, value] : entries) result[text(key)] = text(value);
        result["total_allocations"] = s.total_allocations;
        result["total_frames"] = python_node_count();
        result["peak_memory"] = s.peak_heap;
        result["end_heap"] = s.end_heap;
        result["complete"] = s.end.complete;
        result["damage"] = s.end.damage.empty() ? nb::none() : nb::object(text(s.end.damage));
        result["has_native_traces"] = file().header().native_traces;
        result["file_format"] = file_format();
        return result;
    }

    nb::object damage() {
        std::optional<PassEnd> known;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(shared_->mutex);
            known = file().full_pass_end();
        }
        const std::string& damage = known ? known->damage : summary(nb::none()).end.damage;
        return damage.empty() ? nb::none() : nb::object(text(damage));
    }

    nb::list high_watermark(bool merge_threads, nb::object progress) {
        return location_list(summary(progress).peak, merge_threads);
    }
    nb::list leaks(bool merge_threads, nb::object progress) {
        return location_list(summary(progress).leaks, merge_threads);
    }

    nb::list temporary(uint64_t threshold, bool merge_threads, nb::object progress) {
        require_all_allocations("temporary allocations");
        PythonProgress p(choose(progress));
        TemporaryResult result;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(shared_->mutex);
            result = shared_->file->temporary(threshold, p.callback());
        }
        if (!result.end.ok()) raise_for(p, result.end);
        return location_list(std::move(result.rows), merge_threads);
    }

    RecordIterator* records(nb::object progress) {
        require_all_allocations("the allocation records");
        auto* iterator = new RecordIterator(shared_, choose(progress));
        try {
            iterator->start();
        } catch (...) {
            delete iterator;
            throw;
        }
        return iterator;
    }

    nb::list memory_snapshots() {
        const CaptureSummary& s = summary(nb::none());
        nb::list result;
        for (const format::MemoryRecord& m : s.memory) result.append(nb::make_tuple(m.time_ms, m.rss, m.heap));
        return result;
    }

    // Replays the capture to `time_ms` without the GIL and hands the heap as it
    // stood to `use` (still without the GIL: it must not touch Python).
    // Returns the time of the memory record used; raises what the pass raised.
    template <typename Use>
    uint64_t with_heap_at(uint64_t time_ms, Use&& use) {
        PythonProgress p(progress_);
        uint64_t used;
        PassEnd end;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(shared_->mutex);
            CaptureFile::Moment moment = shared_->file->heap_at_time(time_ms, p.callback());
            end = moment.end;
            used = moment.time_ms;
            if (end.ok()) use(moment);
        }
        if (!end.ok()) raise_for(p, end);
        return used;
    }

    nb::tuple snapshot_at(uint64_t time_ms, bool merge_threads) {
        std::vector<LocationTotal> rows;
        uint64_t used = with_heap_at(time_ms, [&](const CaptureFile::Moment& moment) {
            rows = shared_->file->aggregated() ? moment.state.aggregated.current_rows()
                                               : moment.state.heap->current_rows();
        });
        return nb::make_tuple(location_list(std::move(rows), merge_threads), used);
    }

    nb::tuple blocks_at(uint64_t time_ms) {
        require_all_allocations("live blocks");
        struct Block {
            uint64_t size;
            uint32_t domain;
            LocationKey key;
            uint32_t count;  // blocks it stands for (1 unless sampled)
        };
        std::vector<Block> blocks;
        uint64_t used = with_heap_at(time_ms, [&](const CaptureFile::Moment& moment) {
            const HeapReplay& heap = *moment.state.heap;
            blocks.reserve(heap.live_blocks());
            heap.for_each_block([&](uint32_t domain, uint64_t, uint64_t size, uint32_t location, uint32_t count) {
                blocks.push_back(Block{size, domain, heap.locations().key(location), count});
            });
        });
        nb::list result;
        for (const Block& b : blocks) {
            result.append(nb::make_tuple(b.domain, b.size, b.key.python_node, b.key.native_node, b.key.thread,
                                         static_cast<int>(b.key.allocator), b.count));
        }
        return nb::make_tuple(result, used);
    }

    nb::dict stats(size_t top, nb::object progress) {
        require_all_allocations("statistics");
        const CaptureSummary& s = summary(progress);
        std::vector<SizeBucket> buckets;
        std::vector<StackTotal> by_bytes, by_count;
        {
            nb::gil_scoped_release release;
            buckets = size_histogram(s);
            by_bytes = top_stacks(s.totals, top, true);
            by_count = top_stacks(s.totals, top, false);
        }
        nb::dict result;
        result["total_allocations"] = s.total_allocations;
        result["total_bytes"] = s.total_bytes;
        result["peak_memory"] = s.peak_heap;
        nb::list histogram;
        for (const SizeBucket& b : buckets) histogram.append(nb::make_tuple(b.low, b.high, b.count));
        result["histogram"] = histogram;
        nb::dict allocators;
        for (uint8_t a = 1; a <= kMaxAllocator; ++a) {
            if (s.allocations_by_allocator[a] > 0) {
                allocators[allocator_name(static_cast<Allocator>(a))] = s.allocations_by_allocator[a];
            }
        }
        result["allocators"] = allocators;
        auto stacks = [](const std::vector<StackTotal>& rows) {
            nb::list list;
            for (const StackTotal& t : rows) list.append(nb::make_tuple(t.python_node, t.native_node, t.value));
            return list;
        };
        result["top_by_bytes"] = stacks(by_bytes);
        result["top_by_count"] = stacks(by_count);
        return result;
    }

    nb::list python_stack(uint32_t node, nb::object max_frames) {
        std::vector<PythonFrame> frames;
        stack_query("python node " + std::to_string(node), [&](const Progress& progress, PassEnd* end) {
            return shared_->file->python_stack(node, frame_limit(max_frames), progress, &frames, end);
        });
        return frame_list(frames);
    }

    nb::list native_stack(uint32_t node, nb::object max_frames) {
        std::vector<NativeFrame> frames;
        stack_query("native node " + std::to_string(node), [&](const Progress& progress, PassEnd* end) {
            return shared_->file->native_stack(node, frame_limit(max_frames), progress, &frames, end);
        });
        return frame_list(frames);
    }

    nb::list hybrid_stack(uint32_t python_node, uint32_t native_node, nb::object max_frames) {
        std::vector<NativeFrame> frames;
        stack_query("python node " + std::to_string(python_node) + " or native node " + std::to_string(native_node),
                    [&](const Progress& progress, PassEnd* end) {
                        return shared_->file->hybrid_stack(python_node, native_node, frame_limit(max_frames),
                                                           progress, &frames, end);
                    });
        return frame_list(frames);
    }

    nb::dict threads() {
        summary(nb::none());  // threads are announced all along the capture
        std::vector<std::pair<uint32_t, ThreadInfo>> threads;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(shared_->mutex);
            threads = file().definitions().threads();
        }
        return threads_dict(threads);
    }

    nb::handle progress() const { return progress_; }
    void clear_progress() { progress_ = nb::none(); }

  private:
    const CaptureFile& file() const { return *shared_->file; }
    nb::object choose(const nb::object& progress) const { return progress.is_none() ? progress_ : progress; }

    size_t python_node_count() {
        nb::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(shared_->mutex);
        return file().definitions().python_node_count();
    }

    void require_all_allocations(const char* what) const {
        if (shared_->file->aggregated()) {
            throw nb::value_error((std::string("cannot read ") + what + " from an aggregated capture (" + path_ +
                                   "): only ALL_ALLOCATIONS captures record every event")
                                      .c_str());
        }
    }

    // The summary pass's result, computed once. The reference stays valid:
    // the file keeps its summary for its lifetime.
    const CaptureSummary& summary(const nb::object& progress) {
        PythonProgress p(choose(progress));
        const CaptureSummary* s;
        PassEnd end;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(shared_->mutex);
            s = shared_->file->summary(p.callback(), &end);
        }
        if (s == nullptr) raise_for(p, end);
        return *s;
    }

    template <typename Query>
    void stack_query(const std::string& what, Query&& query) {
        PythonProgress p(progress_);
        PassEnd end;
        CaptureFile::StackStatus status;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(shared_->mutex);
            status = query(p.callback(), &end);
        }
        if (status == CaptureFile::StackStatus::kPassFailed) raise_for(p, end);
        if (status == CaptureFile::StackStatus::kUnknownNode) {
            throw nb::value_error(("no " + what + " in " + path_).c_str());
        }
    }

    std::string path_;
    nb::object progress_;
    std::shared_ptr<SharedFile> shared_;
};

// heapscope live's reader of a socket stream.
class PyCaptureStream {
  public:
    void feed(nb::bytes data) {
        std::string_view bytes(static_cast<const char*>(data.data()), data.size());
        nb::gil_scoped_release release;  // `data` stays alive: the caller holds it
        std::lock_guard<std::mutex> lock(mutex_);
        stream_.feed(bytes);
    }
    bool ended() {
        std::lock_guard<std::mutex> lock(mutex_);
        return stream_.ended();
    }
    nb::object damage() {
        std::string damage;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            damage = stream_.damage();
        }
        return damage.empty() ? nb::none() : nb::object(text(damage));
    }
    nb::dict metadata() {
        std::lock_guard<std::mutex> lock(mutex_);  // quick: nothing here calls back into C++ passes
        nb::dict result;
        for (const auto& [key, value] : stream_.definitions().metadata()) {
            result[text(key)] = text(value);
        }
        result["total_allocations"] = stream_.total_allocations();
        result["total_frames"] = stream_.definitions().python_node_count();
        result["peak_memory"] = stream_.peak_heap();
        result["heap"] = stream_.heap();
        result["complete"] = stream_.ended();
        result["damage"] =
            stream_.damage().empty() ? nb::none() : nb::object(text(stream_.damage()));
        result["has_native_traces"] = stream_.header().native_traces;
        result["file_format"] = stream_.header_seen() ? nb::object(nb::str(file_format_name(stream_.header().format)))
                                                      : nb::none();
        return result;
    }
    nb::list live(bool merge_threads) {
        std::vector<LocationTotal> rows;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(mutex_);
            rows = stream_.live_rows();
        }
        return location_list(std::move(rows), merge_threads);
    }
    nb::object memory() {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto& m = stream_.memory();
        if (!m) return nb::none();
        return nb::make_tuple(m->time_ms, m->rss, m->heap);
    }
    nb::list python_stack(uint32_t node, nb::object max_frames) {
        std::vector<PythonFrame> frames;
        bool known;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            known = stream_.definitions().python_stack(node, frame_limit(max_frames), &frames);
        }
        if (!known) throw nb::value_error(("no python node " + std::to_string(node) + " in the stream so far").c_str());
        return frame_list(frames);
    }
    nb::list native_stack(uint32_t node, nb::object max_frames) {
        std::vector<NativeFrame> frames;
        bool known;
        const size_t limit = frame_limit(max_frames);
        {
            nb::gil_scoped_release release;  // symbolizing may read debug information
            std::lock_guard<std::mutex> lock(mutex_);
            known = stream_.definitions().native_stack(node, limit, &symbolizer(), &frames);
        }
        if (!known) throw nb::value_error(("no native node " + std::to_string(node) + " in the stream so far").c_str());
        return frame_list(frames);
    }
    nb::list hybrid_stack(uint32_t python_node, uint32_t native_node, nb::object max_frames) {
        std::vector<NativeFrame> frames;
        bool known;
        const size_t limit = frame_limit(max_frames);
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(mutex_);
            known = stream_.definitions().hybrid_stack(python_node, native_node, limit, &symbolizer(), &frames);
        }
        if (!known) throw nb::value_error("no such stack node in the stream so far");
        return frame_list(frames);
    }
    nb::dict threads() {
        std::vector<std::pair<uint32_t, ThreadInfo>> threads;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            threads = stream_.definitions().threads();
        }
        return threads_dict(threads);
    }

  private:
    Symbolizer& symbolizer() {
        if (!symbolizer_) symbolizer_ = std::make_unique<Symbolizer>();
        return *symbolizer_;
    }

    std::mutex mutex_;
    CaptureStream stream_;
    std::unique_ptr<Symbolizer> symbolizer_;
};

// Garbage-collector support for the objects that hold a progress callable.
template <typename T>
int traverse_progress(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(Py_TYPE(self));
    if (!nb::inst_ready(self)) return 0;  // called before __init__ completed
    nb::handle callable;
    if constexpr (std::is_same_v<T, PyCaptureFile>) {
        callable = nb::inst_ptr<T>(self)->progress();
    } else {
        callable = nb::inst_ptr<T>(self)->progress().callable();
    }
    Py_VISIT(callable.ptr());
    return 0;
}

template <typename T>
int clear_progress(PyObject* self) {
    if (!nb::inst_ready(self)) return 0;
    if constexpr (std::is_same_v<T, PyCaptureFile>) {
        nb::inst_ptr<T>(self)->clear_progress();
    } else {
        nb::inst_ptr<T>(self)->progress().clear();
    }
    return 0;
}

PyType_Slot file_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(traverse_progress<PyCaptureFile>)},
                            {Py_tp_clear, reinterpret_cast<void*>(clear_progress<PyCaptureFile>)},
                            {0, nullptr}};
PyType_Slot iterator_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(traverse_progress<RecordIterator>)},
                                {Py_tp_clear, reinterpret_cast<void*>(clear_progress<RecordIterator>)},
                                {0, nullptr}};

}  // namespace

void bind_capture_reader(nb::module_& m) {
    m.def(
        "allocator_name",
        [](long long value) {
            if (value < 0 || value > 255) return "UNKNOWN";
            return allocator_name(static_cast<Allocator>(value));
        },
        nb::arg("value"), "The name of an allocator value in a capture (memray's AllocatorType names).");

    nb::class_<RecordIterator>(m, "_CaptureRecordIterator", nb::type_slots(iterator_slots))
        .def("__iter__", [](nb::handle self) { return self; })
        .def("__next__", &RecordIterator::next);

    nb::class_<PyCaptureFile>(m, "CaptureFile", nb::type_slots(file_slots),
                              "A capture file opened for reports. Location rows are tuples (thread, allocator,\n"
                              "python_node, native_node, domain, n_allocations, size), largest size first;\n"
                              "thread is 0 when threads are merged.")
        .def(nb::init<nb::object, nb::object>(), nb::arg("path"), nb::arg("progress") = nb::none())
        .def_prop_ro("file_format", &PyCaptureFile::file_format)
        .def_prop_ro("native_traces", &PyCaptureFile::native_traces)
        .def_prop_ro("trace_python_allocators", &PyCaptureFile::trace_python_allocators)
        .def_prop_ro("metadata", &PyCaptureFile::metadata)
        .def_prop_ro("damage", &PyCaptureFile::damage)
        .def("high_watermark", &PyCaptureFile::high_watermark, nb::arg("merge_threads") = true,
             nb::arg("progress") = nb::none())
        .def("leaks", &PyCaptureFile::leaks, nb::arg("merge_threads") = true, nb::arg("progress") = nb::none())
        .def("temporary", &PyCaptureFile::temporary, nb::arg("threshold") = 1, nb::arg("merge_threads") = true,
             nb::arg("progress") = nb::none())
        .def("records", &PyCaptureFile::records, nb::arg("progress") = nb::none(), nb::rv_policy::take_ownership,
             "Every allocation and deallocation, lazily, as (thread, address, size, allocator,\n"
             "python_node, native_node, domain).")
        .def("memory_snapshots", &PyCaptureFile::memory_snapshots)
        .def("snapshot_at", &PyCaptureFile::snapshot_at, nb::arg("time_ms"), nb::arg("merge_threads") = true)
        .def("blocks_at", &PyCaptureFile::blocks_at, nb::arg("time_ms"))
        .def("stats", &PyCaptureFile::stats, nb::arg("top") = 5, nb::arg("progress") = nb::none())
        .def("python_stack", &PyCaptureFile::python_stack, nb::arg("node"), nb::arg("max_frames") = nb::none())
        .def("native_stack", &PyCaptureFile::native_stack, nb::arg("node"), nb::arg("max_frames") = nb::none())
        .def("hybrid_stack", &PyCaptureFile::hybrid_stack, nb::arg("python_node"), nb::arg("native_node"),
             nb::arg("max_frames") = nb::none())
        .def("threads", &PyCaptureFile::threads);

    nb::class_<PyCaptureStream>(m, "CaptureStream", "A capture read while it arrives (heapscope live).")
        .def(nb::init<>())
        .def("feed", &PyCaptureStream::feed, nb::arg("data"))
        .def_prop_ro("ended", &PyCaptureStream::ended)
        .def_prop_ro("damage", &PyCaptureStream::damage)
        .def_prop_ro("metadata", &PyCaptureStream::metadata)
        .def_prop_ro("memory", &PyCaptureStream::memory)
        .def("live", &PyCaptureStream::live, nb::arg("merge_threads") = true)
        .def("python_stack", &PyCaptureStream::python_stack, nb::arg("node"), nb::arg("max_frames") = nb::none())
        .def("native_stack", &PyCaptureStream::native_stack, nb::arg("node"), nb::arg("max_frames") = nb::none())
        .def("hybrid_stack", &PyCaptureStream::hybrid_stack, nb::arg("python_node"), nb::arg("native_node"),
             nb::arg("max_frames") = nb::none())
        .def("threads", &PyCaptureStream::threads);
}
