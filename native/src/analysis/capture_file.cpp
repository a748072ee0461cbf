#include "analysis/capture_file.h"

namespace heapscope::analysis {

std::unique_ptr<CaptureFile> CaptureFile::open(const std::string& path, read::CaptureReader::OpenFailure* failure) {
    auto reader = read::CaptureReader::open(path, failure);
    if (!reader) return nullptr;
    std::unique_ptr<CaptureFile> file(new CaptureFile());
    file->reader_ = std::move(reader);
    return file;
}

void CaptureFile::read_opening() {
    if (opening_read_ || summary_) return;  // a whole pass has read every definition
    opening_read_ = true;
    std::string error;
    std::unique_ptr<read::CaptureReader::Cursor> cursor = reader_->start_pass(nullptr, false, &error);
    // Applies every definition up to the first event. A failure or damage
    // here is left to the whole pass to report.
    if (cursor) cursor->next();
}

const CaptureSummary* CaptureFile::summary(const read::Progress& progress, PassEnd* end) {
    if (summary_) {
        *end = summary_->end;
        return summary_.get();
    }
    auto fresh = std::make_unique<CaptureSummary>(summarize(*reader_, progress));
    *end = fresh->end;
    if (!fresh->end.ok()) return nullptr;
    note_full_pass(fresh->end);
    summary_ = std::move(fresh);
    return summary_.get();
}

CaptureFile::Moment CaptureFile::heap_at_time(uint64_t t_ms, const read::Progress& progress) {
    Moment moment;
    const CaptureSummary* s = summary(progress, &moment.end);
    if (s == nullptr) return moment;
    std::vector<uint64_t> times;
    if (aggregated()) {
        times = s->checkpoint_times;
    } else {
        times.reserve(s->memory.size());
        for (const format::MemoryRecord& m : s->memory) times.push_back(m.time_ms);
    }
    const int64_t index = last_at_or_before(times, t_ms);
    moment.time_ms = index < 0 ? 0 : times[static_cast<size_t>(index)];
    moment.state = heap_at(*reader_, index, progress);
    moment.end = moment.state.end;
    return moment;
}

CaptureFile::StackStatus CaptureFile::learn(bool known, const read::Progress& progress, PassEnd* end) {
    if (known) return StackStatus::kOk;
    if (summary_) return StackStatus::kUnknownNode;  // the whole capture has been read
    if (summary(progress, end) == nullptr) return StackStatus::kPassFailed;
    return StackStatus::kOk;
}

read::Symbolizer& CaptureFile::symbolizer() {
    if (!symbolizer_) symbolizer_ = std::make_unique<read::Symbolizer>();
    return *symbolizer_;
}

CaptureFile::StackStatus CaptureFile::python_stack(uint32_t node, size_t max_frames, const read::Progress& progress,
                                                   std::vector<read::PythonFrame>* out, PassEnd* end) {
    const read::Definitions& defs = reader_->definitions();
    StackStatus status = learn(node == 0 || defs.has_python_node(node), progress, end);
    if (status != StackStatus::kOk) return status;
    return defs.python_stack(node, max_frames, out) ? StackStatus::kOk : StackStatus::kUnknownNode;
}

CaptureFile::StackStatus CaptureFile::native_stack(uint32_t node, size_t max_frames, const read::Progress& progress,
                                                   std::vector<read::NativeFrame>* out, PassEnd* end) {
    read::Definitions& defs = reader_->definitions();
    StackStatus status = learn(node == 0 || defs.has_native_node(node), progress, end);
    if (status != StackStatus::kOk) return status;
    return defs.native_stack(node, max_frames, &symbolizer(), out) ? StackStatus::kOk : StackStatus::kUnknownNode;
}

CaptureFile::StackStatus CaptureFile::hybrid_stack(uint32_t python_node, uint32_t native_node, size_t max_frames,
                                                   const read::Progress& progress, std::vector<read::NativeFrame>* out,
                                                   PassEnd* end) {
    read::Definitions& defs = reader_->definitions();
    const bool known = (python_node == 0 || defs.has_python_node(python_node)) &&
                       (native_node == 0 || defs.has_native_node(native_node));
    StackStatus status = learn(known, progress, end);
    if (status != StackStatus::kOk) return status;
    return defs.hybrid_stack(python_node, native_node, max_frames, &symbolizer(), out) ? StackStatus::kOk
                                                                                       : StackStatus::kUnknownNode;
}

}  // namespace heapscope::analysis
