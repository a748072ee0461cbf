// CaptureFile: one capture opened for reports, with what its passes learned.
//
// The summary pass (analyses.h: peak, leaks, totals, memory over time,
// statistics, and every definition) runs once, when the first report needs
// it, and is kept. Temporary allocations and the heap at a moment are passes
// of their own. Stack queries answer from the definitions read so far and
// run the summary pass first if a node is not known yet.
//
// Not thread-safe: the Python binding holds a lock around every call. Never
// calls Python; `progress` callbacks are the caller's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "analysis/analyses.h"
#include "analysis/temporal.h"
#include "read/capture_reader.h"
#include "read/symbolizer.h"

namespace heapscope::analysis {

class CaptureFile {
  public:
    // Null on failure (`*failure` says why and names the path).
    static std::unique_ptr<CaptureFile> open(const std::string& path, read::CaptureReader::OpenFailure* failure);

    const std::string& path() const { return reader_->path(); }
    const format::FileHeader& header() const { return reader_->header(); }
    bool aggregated() const { return reader_->aggregated(); }
    read::CaptureReader& reader() { return *reader_; }
    const read::Definitions& definitions() const { return reader_->definitions(); }

    // Reads the definitions and metadata written before the first event (the
    // writer's opening chunk: command line, pid, start time, ...), once, so
    // that they are known without a pass over the whole file. What is written
    // later (end_time, pools made during the run) needs a whole pass.
    void read_opening();

    // The summary, from the cache or a pass now. Null if the pass was
    // cancelled or could not start (`*end` says which); such a pass is not
    // kept.
    const CaptureSummary* summary(const read::Progress& progress, PassEnd* end);
    const CaptureSummary* cached_summary() const { return summary_.get(); }

    TemporaryResult temporary(uint64_t threshold, const read::Progress& progress) {
        TemporaryResult result = temporary_allocations(*reader_, threshold, progress);
        if (result.end.ok()) note_full_pass(result.end);
        return result;
    }

    // Allocation histories over snapshots (analysis/temporal.h): lifetimes,
    // or shares of each interval's high-water mark.
    TemporalResult temporal(bool high_water_marks, bool merge_threads, uint64_t stride, const read::Progress& progress) {
        TemporalResult result = high_water_marks
                                    ? temporal_high_water_marks(*reader_, merge_threads, stride, progress)
                                    : allocation_lifetimes(*reader_, merge_threads, stride, progress);
        if (result.end.ok()) note_full_pass(result.end);
        return result;
    }

    // How the first pass that read the whole capture ended (clean end or
    // damage), if one has: any such pass finds the same.
    const std::optional<PassEnd>& full_pass_end() const { return full_pass_end_; }
    // For passes run outside this class (the records iterator) that read
    // to the end.
    void note_full_pass(const PassEnd& end) {
        if (!full_pass_end_ && end.ok()) full_pass_end_ = end;
    }

    // The heap as of the last memory record (aggregated: whole checkpoint)
    // whose time is <= t_ms, and that time; before the first one, the empty
    // heap at time 0. Runs the summary pass first if it has not run.
    struct Moment {
        PassEnd end;
        uint64_t time_ms = 0;
        HeapAt state;
    };
    Moment heap_at_time(uint64_t t_ms, const read::Progress& progress);

    enum class StackStatus {
        kOk,
        kUnknownNode,  // no such node in the whole capture
        kPassFailed,   // the summary pass needed to find it was cancelled or failed (`*end`)
    };
    StackStatus python_stack(uint32_t node, size_t max_frames, const read::Progress& progress, std::vector<read::PythonFrame>* out,
                             PassEnd* end);
    StackStatus native_stack(uint32_t node, size_t max_frames, const read::Progress& progress, std::vector<read::NativeFrame>* out,
                             PassEnd* end);
    StackStatus hybrid_stack(uint32_t python_node, uint32_t native_node, size_t max_frames, const read::Progress& progress,
                             std::vector<read::NativeFrame>* out, PassEnd* end);

  private:
    CaptureFile() = default;
    // Runs the summary pass if a node is unknown and it has not run yet.
    StackStatus learn(bool known, const read::Progress& progress, PassEnd* end);
    read::Symbolizer& symbolizer();

    std::unique_ptr<read::CaptureReader> reader_;
    std::unique_ptr<CaptureSummary> summary_;
    std::unique_ptr<read::Symbolizer> symbolizer_;
    std::optional<PassEnd> full_pass_end_;
    bool opening_read_ = false;
};

}  // namespace heapscope::analysis
