// _heapscope.CaptureFile and _heapscope.CaptureStream: the capture reader
// and its analyses (native/src/analysis) for the Python front doors
// (heapscope.FileReader, heapscope live). Rows cross as the named types of
// results.cpp and of this file (EventRow, LiveBlock, BlocksAt, ReadTotals),
// in lists and dicts.
//
// Long passes run with the GIL released; the progress callback (and a check
// for Ctrl-C) runs with it held, between chunks. One lock per file
// serialises passes; every path releases the GIL before taking it, so a
// pass that needs the GIL for its callback never waits on a thread that
// holds the GIL and waits for the lock.
#include <Python.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

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
#include "format/record_text.h"
#include "model/allocator.h"
#include "model/location.h"
#include "model/allocator.h"

namespace nb = nanobind;
using namespace heapscope;
using namespace heapscope::analysis;
using namespace heapscope::read;
using heapscope::bindings::damage_or_none;
using heapscope::bindings::file_format_name;
using heapscope::bindings::metadata_dict;
using heapscope::bindings::PythonProgress;
using heapscope::bindings::raise_for;
using heapscope::bindings::shown_frames;
using heapscope::bindings::text;
using heapscope::bindings::threads_dict;

namespace {

constexpr size_t kRecordBatch = 4096;  // events decoded per GIL release while iterating records

size_t frame_limit(const nb::object& max_frames) {
    if (max_frames.is_none()) return SIZE_MAX;
    const long long n = nb::cast<long long>(max_frames);
    if (n < 0) throw nb::value_error("max_frames must be >= 0 or None");
    return static_cast<size_t>(n);
}

// What only the whole capture (or the stream so far) tells.
struct ReadTotals {
    uint64_t total_allocations = 0;
    uint64_t total_frames = 0;  // Python stack nodes defined
    uint64_t peak_memory = 0;   // the heap at its highest
    uint64_t heap = 0;          // outstanding at the end of what was read
    bool complete = false;      // the capture's end was read: it stopped cleanly
    std::string damage;         // where reading stopped early, or empty
};

// A block live at a moment (CaptureFile.blocks_at).
struct LiveBlock {
    uint64_t size;
    LocationKey key;  // with the domain the block is live in
    uint32_t count;   // blocks it stands for (1 unless sampled)
};
struct BlocksAt {
    std::vector<LiveBlock> blocks;
    uint64_t used_ms;  // the time of the memory record used
};

// The file and the lock its passes share with the record iterators made
// from it (which may outlive the CaptureFile object).
struct SharedFile {
    std::mutex mutex;
    std::unique_ptr<CaptureFile> file;
};

// One event as records() yields it (EventRow).
struct EventRow {
    uint64_t address, size;
    LocationKey key;  // a deallocation's has no stack nodes
    uint32_t count;   // blocks the event stands for (1 unless sampled)
};

// records() yields the events as EventRows.
bool event_row(const format::Record& r, EventRow* row) {
    if (r.type == format::RecordType::kAllocation) {
        const format::AllocationRecord& a = r.allocation;
        *row = EventRow{a.address, a.size,
                        LocationKey{.thread = a.thread, .python_node = a.python_node, .native_node = a.native_node,
                                    .domain = a.domain, .allocator = a.allocator},
                        a.count};
        return true;
    }
    if (r.type == format::RecordType::kDeallocation) {
        const format::DeallocationRecord& d = r.deallocation;
        *row = EventRow{d.address, d.size, LocationKey{.thread = d.thread, .domain = d.domain, .allocator = d.allocator},
                        1};
        return true;
    }
    return false;
}

// objects() yields the Object records as themselves.
bool object_row(const format::Record& r, format::ObjectRecord* row) {
    if (r.type != format::RecordType::kObject) return false;
    *row = r.object;
    return true;
}

// dump() yields every record as a line of text.
bool record_line(const format::Record& r, std::string* line) {
    *line = format::record_text(r);
    return true;
}

// The lazy iterator of records() and dump(): decodes a batch of records with
// the GIL released, converts those `Convert` keeps, then hands them out one
// at a time.
template <typename Row, bool (*Convert)(const format::Record&, Row*)>
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
            if (cursor_ && std::is_same_v<Row, std::string>) cursor_->every_record();  // dump(): all of them
        }
        if (!cursor_) {
            PyErr_SetString(PyExc_OSError, error.c_str());
            throw nb::python_error();
        }
    }

    Row next() {
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
        return batch_[position_++];
    }

    PythonProgress& progress() { return progress_; }

  private:
    void fill() {
        Row row;
        while (batch_.size() < kRecordBatch) {
            const format::Record* r = cursor_->next();
            if (r == nullptr) return;
            if (Convert(*r, &row)) batch_.push_back(std::move(row));
        }
    }

    std::shared_ptr<SharedFile> shared_;
    PythonProgress progress_;
    std::unique_ptr<CaptureReader::Cursor> cursor_;
    std::vector<Row> batch_;
    size_t position_ = 0;
};
using EventIterator = RecordIterator<EventRow, event_row>;
using LineIterator = RecordIterator<std::string, record_line>;
using ObjectIterator = RecordIterator<format::ObjectRecord, object_row>;

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

    // No pass over the file: the metadata written at the start, or all of it
    // once a whole pass has run.
    nb::dict metadata() {
        std::vector<std::pair<std::string, std::string>> entries;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(shared_->mutex);
            shared_->file->read_opening();
            entries = file().definitions().metadata();
        }
        return metadata_dict(entries, &file().header());
    }

    ReadTotals totals(nb::object progress) {
        const CaptureSummary& s = summary(progress);
        return ReadTotals{s.total_allocations, python_node_count(), s.peak_heap, s.end_heap, s.end.complete,
                             s.end.damage};
    }

    nb::object damage() {
        std::optional<PassEnd> known;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(shared_->mutex);
            known = file().full_pass_end();
        }
        const std::string& damage = known ? known->damage : summary(nb::none()).end.damage;
        return damage_or_none(damage);
    }

    std::vector<LocationTotal> high_watermark(bool merge_threads, nb::object progress) {
        return finish_rows(summary(progress).peak, merge_threads);
    }
    std::vector<LocationTotal> leaks(bool merge_threads, nb::object progress) {
        return finish_rows(summary(progress).leaks, merge_threads);
    }

    std::vector<LocationTotal> temporary(uint64_t threshold, bool merge_threads, nb::object progress) {
        require_all_allocations("temporary allocations");
        PythonProgress p(choose(progress));
        TemporaryResult result;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(shared_->mutex);
            result = shared_->file->temporary(threshold, p.callback());
        }
        if (!result.end.ok()) raise_for(p, result.end);
        return finish_rows(std::move(result.rows), merge_threads);
    }

    // (intervals: [TemporalInterval], high-water marks: [int]; empty for lifetimes).
    std::pair<std::vector<TemporalInterval>, std::vector<uint64_t>> temporal(bool high_water_marks, bool merge_threads,
                                                                              uint64_t stride, nb::object progress) {
        require_all_allocations("allocation histories");
        if (stride == 0) throw nb::value_error("stride must be at least 1");
        PythonProgress p(choose(progress));
        TemporalResult result;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(shared_->mutex);
            result = shared_->file->temporal(high_water_marks, merge_threads, stride, p.callback());
        }
        if (!result.end.ok()) raise_for(p, result.end);
        return {std::move(result.intervals), std::move(result.high_water_marks)};
    }

    EventIterator* records(nb::object progress) {
        require_all_allocations("the allocation records");
        return started(new EventIterator(shared_, choose(progress)));
    }

    // The Object records (track_object_lifetimes), in order; either format.
    ObjectIterator* objects(nb::object progress) { return started(new ObjectIterator(shared_, choose(progress))); }

    // Every record as text, the file header first (heapscope parse).
    LineIterator* dump(nb::object progress) { return started(new LineIterator(shared_, choose(progress))); }
    std::string header_line() const { return format::header_text(file().header()); }

    std::vector<format::MemoryRecord> memory_snapshots() { return summary(nb::none()).memory; }

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

    BlocksAt blocks_at(uint64_t time_ms) {
        require_all_allocations("live blocks");
        BlocksAt result;
        result.used_ms = with_heap_at(time_ms, [&](const CaptureFile::Moment& moment) {
            const HeapReplay& heap = *moment.state.heap;
            result.blocks.reserve(heap.live_blocks());
            heap.for_each_block([&](uint32_t domain, uint64_t, uint64_t size, uint32_t location, uint32_t count) {
                LocationKey key = heap.locations().key(location);
                key.domain = domain;  // a mapping is live in domain 0 whatever its call said
                result.blocks.push_back(LiveBlock{size, key, count});
            });
        });
        return result;
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
        result["histogram"] = nb::cast(std::move(buckets));
        nb::dict allocators;
        for (const AllocatorInfo& a : allocator_table()) {
            const uint64_t count = s.allocations_by_allocator[static_cast<uint8_t>(a.allocator)];
            if (count > 0) allocators[a.name] = count;
        }
        result["allocators"] = allocators;
        result["top_by_bytes"] = nb::cast(std::move(by_bytes));
        result["top_by_count"] = nb::cast(std::move(by_count));
        return result;
    }

    std::vector<NativeFrame> python_stack(uint32_t node, nb::object max_frames) {
        std::vector<PythonFrame> frames;
        stack_query("python node " + std::to_string(node), [&](const Progress& progress, PassEnd* end) {
            return shared_->file->python_stack(node, frame_limit(max_frames), progress, &frames, end);
        });
        return shown_frames(frames);
    }

    std::vector<NativeFrame> native_stack(uint32_t node, nb::object max_frames) {
        std::vector<NativeFrame> frames;
        stack_query("native node " + std::to_string(node), [&](const Progress& progress, PassEnd* end) {
            return shared_->file->native_stack(node, frame_limit(max_frames), progress, &frames, end);
        });
        return frames;
    }

    std::vector<NativeFrame> hybrid_stack(uint32_t python_node, uint32_t native_node, nb::object max_frames) {
        std::vector<NativeFrame> frames;
        stack_query("python node " + std::to_string(python_node) + " or native node " + std::to_string(native_node),
                    [&](const Progress& progress, PassEnd* end) {
                        return shared_->file->hybrid_stack(python_node, native_node, frame_limit(max_frames),
                                                           progress, &frames, end);
                    });
        return frames;
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
    template <typename Iterator>
    static Iterator* started(Iterator* iterator) {
        try {
            iterator->start();
        } catch (...) {
            delete iterator;
            throw;
        }
        return iterator;
    }

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
        return damage_or_none(damage);
    }
    nb::dict metadata() {
        std::vector<std::pair<std::string, std::string>> entries;
        std::optional<format::FileHeader> header;
        {
            std::lock_guard<std::mutex> lock(mutex_);  // quick: nothing here calls back into C++ passes
            entries = stream_.definitions().metadata();
            if (stream_.header_seen()) header = stream_.header();
        }
        return metadata_dict(entries, header ? &*header : nullptr);
    }
    ReadTotals totals() {
        std::lock_guard<std::mutex> lock(mutex_);
        return ReadTotals{stream_.total_allocations(), stream_.definitions().python_node_count(),
                             stream_.peak_heap(), stream_.heap(), stream_.ended(), stream_.damage()};
    }
    std::vector<LocationTotal> live(bool merge_threads) {
        std::vector<LocationTotal> rows;
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(mutex_);
            rows = stream_.live_rows();
        }
        return finish_rows(std::move(rows), merge_threads);
    }
    std::optional<format::MemoryRecord> memory() {
        std::lock_guard<std::mutex> lock(mutex_);
        return stream_.memory();
    }
    std::vector<NativeFrame> python_stack(uint32_t node, nb::object max_frames) {
        std::vector<PythonFrame> frames;
        bool known;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            known = stream_.definitions().python_stack(node, frame_limit(max_frames), &frames);
        }
        if (!known) throw nb::value_error(("no python node " + std::to_string(node) + " in the stream so far").c_str());
        return shown_frames(frames);
    }
    std::vector<NativeFrame> native_stack(uint32_t node, nb::object max_frames) {
        std::vector<NativeFrame> frames;
        bool known;
        const size_t limit = frame_limit(max_frames);
        {
            nb::gil_scoped_release release;  // symbolizing may read debug information
            std::lock_guard<std::mutex> lock(mutex_);
            known = stream_.definitions().native_stack(node, limit, &symbolizer(), &frames);
        }
        if (!known) throw nb::value_error(("no native node " + std::to_string(node) + " in the stream so far").c_str());
        return frames;
    }
    std::vector<NativeFrame> hybrid_stack(uint32_t python_node, uint32_t native_node, nb::object max_frames) {
        std::vector<NativeFrame> frames;
        bool known;
        const size_t limit = frame_limit(max_frames);
        {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(mutex_);
            known = stream_.definitions().hybrid_stack(python_node, native_node, limit, &symbolizer(), &frames);
        }
        if (!known) throw nb::value_error("no such stack node in the stream so far");
        return frames;
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
template <typename Iterator>
PyType_Slot iterator_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(traverse_progress<Iterator>)},
                                {Py_tp_clear, reinterpret_cast<void*>(clear_progress<Iterator>)},
                                {0, nullptr}};

}  // namespace

void bind_capture_reader(nb::module_& m) {
    nb::class_<EventRow> event_row(m, "EventRow",
                                   "One allocation or deallocation: thread, address, size, allocator (public\n"
                                   "value), python_node, native_node (both 0 for a deallocation), domain, count\n"
                                   "(blocks it stands for: 1 unless sampled).");
    heapscope::bindings::def_location(event_row, &EventRow::key)
        .def_ro("address", &EventRow::address)
        .def_ro("size", &EventRow::size)
        .def_ro("count", &EventRow::count);

    nb::class_<LiveBlock> live_block(m, "LiveBlock",
                                     "A block live at a moment: domain, size, python_node, native_node, thread,\n"
                                     "allocator (public value), count (blocks it stands for: 1 unless sampled).");
    heapscope::bindings::def_location(live_block, &LiveBlock::key)
        .def_ro("size", &LiveBlock::size)
        .def_ro("count", &LiveBlock::count);
    nb::class_<TemporalInterval> interval(
        m, "TemporalInterval",
        "One location's blocks over snapshots: thread, allocator (public value), python_node, native_node,\n"
        "domain, allocated_before and deallocated_before (snapshot indexes; None: never), count, size.");
    heapscope::bindings::def_location(interval, &TemporalInterval::key)
        .def_ro("allocated_before", &TemporalInterval::allocated_before)
        .def_prop_ro("deallocated_before",
                     [](const TemporalInterval& i) {
                         return i.deallocated_before == kNever ? nb::none() : nb::cast(i.deallocated_before);
                     })
        .def_ro("count", &TemporalInterval::count)
        .def_ro("size", &TemporalInterval::bytes);
    nb::class_<BlocksAt>(m, "BlocksAt", "blocks (LiveBlock) and used_ms, the time of the memory record used.")
        .def_ro("blocks", &BlocksAt::blocks)
        .def_ro("used_ms", &BlocksAt::used_ms);

    nb::class_<ReadTotals>(m, "ReadTotals",
                              "What only the whole capture (or the stream so far) tells: total_allocations,\n"
                              "total_frames (Python stack nodes), peak_memory and heap (now, or at the end) in\n"
                              "bytes, complete (its end was read) and damage (None, or where reading stopped).")
        .def_ro("total_allocations", &ReadTotals::total_allocations)
        .def_ro("total_frames", &ReadTotals::total_frames)
        .def_ro("peak_memory", &ReadTotals::peak_memory)
        .def_ro("heap", &ReadTotals::heap)
        .def_ro("complete", &ReadTotals::complete)
        .def_prop_ro("damage", [](const ReadTotals& t) { return damage_or_none(t.damage); });

    nb::class_<EventIterator>(m, "_CaptureRecordIterator", nb::type_slots(iterator_slots<EventIterator>))
        .def("__iter__", [](nb::handle self) { return self; })
        .def("__next__", &EventIterator::next);
    nb::class_<LineIterator>(m, "_CaptureLineIterator", nb::type_slots(iterator_slots<LineIterator>))
        .def("__iter__", [](nb::handle self) { return self; })
        .def("__next__", &LineIterator::next);
    nb::class_<format::ObjectRecord>(m, "ObjectRow",
                                     "A Python object made (created True: with its python_node and native_node)\n"
                                     "or destroyed, at address, by thread.")
        .def_ro("thread", &format::ObjectRecord::thread)
        .def_ro("address", &format::ObjectRecord::address)
        .def_ro("created", &format::ObjectRecord::created)
        .def_ro("python_node", &format::ObjectRecord::python_node)
        .def_ro("native_node", &format::ObjectRecord::native_node);
    nb::class_<ObjectIterator>(m, "_CaptureObjectIterator", nb::type_slots(iterator_slots<ObjectIterator>))
        .def("__iter__", [](nb::handle self) { return self; })
        .def("__next__", &ObjectIterator::next);

    nb::class_<PyCaptureFile>(m, "CaptureFile", nb::type_slots(file_slots),
                              "A capture file opened for reports. Location reports are lists of LocationRow,\n"
                              "largest size first; stacks are lists of StackFrame, innermost first.")
        .def(nb::init<nb::object, nb::object>(), nb::arg("path"), nb::arg("progress") = nb::none())
        .def_prop_ro("file_format", &PyCaptureFile::file_format)
        .def_prop_ro("native_traces", &PyCaptureFile::native_traces)
        .def_prop_ro("trace_python_allocators", &PyCaptureFile::trace_python_allocators)
        .def_prop_ro("metadata", &PyCaptureFile::metadata,
                     "{key: value} as written (no pass: what the capture wrote at its start, all of it\n"
                     "once a whole pass has run), then has_native_traces and file_format.")
        .def("totals", &PyCaptureFile::totals, nb::arg("progress") = nb::none(),
             "ReadTotals, from the summary pass (run the first time).")
        .def_prop_ro("damage", &PyCaptureFile::damage)
        .def("high_watermark", &PyCaptureFile::high_watermark, nb::arg("merge_threads") = true,
             nb::arg("progress") = nb::none())
        .def("leaks", &PyCaptureFile::leaks, nb::arg("merge_threads") = true, nb::arg("progress") = nb::none())
        .def("temporary", &PyCaptureFile::temporary, nb::arg("threshold") = 1, nb::arg("merge_threads") = true,
             nb::arg("progress") = nb::none())
        .def("temporal", &PyCaptureFile::temporal, nb::arg("high_water_marks"), nb::arg("merge_threads") = true,
             nb::arg("stride") = 1, nb::arg("progress") = nb::none(),
             "Allocation histories over snapshots (every stride-th memory record): ([TemporalInterval],\n"
             "[high-water mark bytes per interval]) for high_water_marks, else lifetimes and [].")
        .def("records", &PyCaptureFile::records, nb::arg("progress") = nb::none(), nb::rv_policy::take_ownership,
             "Every allocation and deallocation, lazily, as EventRow (thread, address, size,\n"
             "allocator, python_node, native_node, domain, count).")
        .def("objects", &PyCaptureFile::objects, nb::arg("progress") = nb::none(), nb::rv_policy::take_ownership,
             "Every Object record (track_object_lifetimes), lazily, as ObjectRow.")
        .def("dump", &PyCaptureFile::dump, nb::arg("progress") = nb::none(), nb::rv_policy::take_ownership,
             "Every record of the capture, lazily, as a line of text (TYPE name=value ...).")
        .def_prop_ro("header_line", &PyCaptureFile::header_line, "The file header as a line of text.")
        .def("memory_snapshots", &PyCaptureFile::memory_snapshots, "[MemoryRecord], in order.")
        .def("blocks_at", &PyCaptureFile::blocks_at, nb::arg("time_ms"),
             "The blocks live as of the last memory record at or before time_ms: BlocksAt.")
        .def("stats", &PyCaptureFile::stats, nb::arg("top") = 5, nb::arg("progress") = nb::none(),
             "{total_allocations, total_bytes, peak_memory, histogram: [SizeBucket], allocators:\n"
             "{name: count}, top_by_bytes and top_by_count: [StackTotal]}.")
        .def("python_stack", &PyCaptureFile::python_stack, nb::arg("node"), nb::arg("max_frames") = nb::none())
        .def("native_stack", &PyCaptureFile::native_stack, nb::arg("node"), nb::arg("max_frames") = nb::none())
        .def("hybrid_stack", &PyCaptureFile::hybrid_stack, nb::arg("python_node"), nb::arg("native_node"),
             nb::arg("max_frames") = nb::none())
        .def("threads", &PyCaptureFile::threads, "{thread id: ThreadInfo}.");

    nb::class_<PyCaptureStream>(m, "CaptureStream",
                                "A capture read while it arrives (heapscope live). Rows and stacks as CaptureFile's.")
        .def(nb::init<>())
        .def("feed", &PyCaptureStream::feed, nb::arg("data"))
        .def_prop_ro("ended", &PyCaptureStream::ended)
        .def_prop_ro("damage", &PyCaptureStream::damage)
        .def_prop_ro("metadata", &PyCaptureStream::metadata, "As CaptureFile.metadata, for the stream so far.")
        .def_prop_ro("totals", &PyCaptureStream::totals, "ReadTotals of the stream so far.")
        .def_prop_ro("memory", &PyCaptureStream::memory, "The latest MemoryRecord, or None.")
        .def("live", &PyCaptureStream::live, nb::arg("merge_threads") = true, "[LocationRow] outstanding now.")
        .def("python_stack", &PyCaptureStream::python_stack, nb::arg("node"), nb::arg("max_frames") = nb::none())
        .def("native_stack", &PyCaptureStream::native_stack, nb::arg("node"), nb::arg("max_frames") = nb::none())
        .def("hybrid_stack", &PyCaptureStream::hybrid_stack, nb::arg("python_node"), nb::arg("native_node"),
             nb::arg("max_frames") = nb::none())
        .def("threads", &PyCaptureStream::threads, "{thread id: ThreadInfo}.");
}
