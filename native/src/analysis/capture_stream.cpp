#include "analysis/capture_stream.h"


namespace heapscope::analysis {

void CaptureStream::feed(std::string_view bytes) {
    decoder_.feed(bytes, [this](const format::Record& record) { apply(record); });
}

void CaptureStream::apply(const format::Record& record) {
    switch (record.type) {
        case format::RecordType::kAllocation:
            heap_.allocate(record.allocation);
            allocations_ += record.allocation.count;
            break;
        case format::RecordType::kDeallocation:
            heap_.deallocate(record.deallocation);
            break;
        case format::RecordType::kMemory:
            memory_ = record.memory;
            break;
        case format::RecordType::kCheckpoint:
            aggregated_.on_checkpoint(record.checkpoint);
            break;
        case format::RecordType::kLocation:
            aggregated_.on_location(record.location);
            break;
        default:
            break;
    }
}

std::vector<LocationTotal> CaptureStream::live_rows() const {
    return aggregated() ? aggregated_.current_rows() : heap_.current_rows();
}

uint64_t CaptureStream::total_allocations() const {
    if (!aggregated()) return allocations_;
    uint64_t total = 0;
    for (const LocationTotal& row : aggregated_.total_rows()) total += row.count;
    return total;
}

uint64_t CaptureStream::heap() const { return aggregated() ? aggregated_.checkpoint().heap : heap_.heap(); }

uint64_t CaptureStream::peak_heap() const {
    return aggregated() ? aggregated_.checkpoint().peak_heap : heap_.peak_heap();
}

}  // namespace heapscope::analysis
