// HighWaterMark: per location, what was outstanding when the heap was at its
// highest, in one pass and O(1) per event.
//
// Used by the capture writer (aggregated format, inside the traced process)
// and by the reader (every peak report). Never calls Python; add() and
// remove() allocate only when a location id beyond size() appears.
//
// The argument. Let the heap be the sum over locations of current bytes, and
// peak_epoch the number of times an event left the heap at or above its
// previous maximum (the peak). Each location remembers `epoch`, the value
// peak_epoch had when the location last changed, and `at_peak`, a saved value.
//
//   Before changing a location: if epoch < peak_epoch, a peak was reached
//   after its last change, and it has not changed since, so its current value
//   *is* its value at that latest peak: copy current into at_peak.
//   Change it, set epoch = peak_epoch.
//   Then if heap >= peak: peak = heap, ++peak_epoch (the heap just reached
//   the peak again, with every location at its current value).
//
// Invariant, after every event, for every location L:
//   value of L at the latest peak = (L.epoch < peak_epoch) ? L.current : L.at_peak
// - epoch < peak_epoch: L has not changed since that peak was reached (an
//   event that reaches a peak increments peak_epoch after stamping the
//   location it changed), so its value then is its value now.
// - epoch == peak_epoch: L changed after the latest peak. Its first change
//   after that peak found epoch < peak_epoch and saved current (the value at
//   the peak) into at_peak; later changes find epoch == peak_epoch and leave
//   at_peak alone. A location first seen after the peak starts at zero, which
//   is also its value at the peak.
// The comparison is >=, after every event (allocations, releases and
// shrinks alike): when the maximum is reached several times, the latest of
// those moments is the high-water mark, as memray's HighWatermarkFinder
// (`d_current_memory >= peak`, checked after every record) and its
// aggregated writer (a peak is recorded on its falling edge) both pick it.
// The argument does not depend on the comparison: any event may start a
// new epoch, as long as it does so after stamping its own location.
//
// Counts follow bytes: at_peak_count is the count at the same moment.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/block.h"

namespace heapscope {

struct LocationCounters {
    uint64_t current_count = 0, current_bytes = 0;  // outstanding now
    uint64_t at_peak_count = 0, at_peak_bytes = 0;  // saved value at a peak (see above)
    uint64_t epoch = 0;                             // peak_epoch at the last change
    uint64_t total_count = 0, total_bytes = 0;      // ever allocated here

    // Outstanding at the high-water mark, given the final peak_epoch.
    uint64_t peak_count(uint64_t peak_epoch) const { return epoch < peak_epoch ? current_count : at_peak_count; }
    uint64_t peak_bytes(uint64_t peak_epoch) const { return epoch < peak_epoch ? current_bytes : at_peak_bytes; }
};

class HighWaterMark {
  public:
    // A block of `size` bytes was allocated at `location`. A sampled block
    // stands for `count` blocks and its `size` is already the estimate of
    // their bytes (sample/sampler.h).
    void add(uint32_t location, uint64_t size, uint64_t count = 1) {
        LocationCounters& c = prepare(location);
        c.current_count += count;
        c.current_bytes += size;
        c.total_count += count;
        c.total_bytes += size;
        heap_ += size;
        note_peak();
    }
    // A block of `size` bytes allocated at `location` was released. A release
    // of more than the location holds (a block the caller counted elsewhere)
    // is clamped at zero rather than wrapping.
    void remove(uint32_t location, uint64_t size, uint64_t count = 1) {
        LocationCounters& c = prepare(location);
        c.current_count -= count < c.current_count ? count : c.current_count;
        const uint64_t bytes = size < c.current_bytes ? size : c.current_bytes;
        c.current_bytes -= bytes;
        heap_ -= bytes < heap_ ? bytes : heap_;
        note_peak();  // only a release of 0 bytes can leave the heap at its peak
    }
    // Takes away `size` bytes from a location without releasing a block (a
    // partial munmap: the rest of the mapping stays outstanding).
    void shrink(uint32_t location, uint64_t size) {
        LocationCounters& c = prepare(location);
        const uint64_t bytes = size < c.current_bytes ? size : c.current_bytes;
        c.current_bytes -= bytes;
        heap_ -= bytes < heap_ ? bytes : heap_;
        note_peak();
    }
    // A munmap released `size` bytes of one piece of a mapping made at
    // `location`: the piece went (a block less), lost an end (shrink), or
    // had a hole cut in it, which leaves two blocks (store/mapping_index.h).
    void unmap(uint32_t location, uint64_t size, Unmapped how) {
        if (how == Unmapped::kWhole) {
            remove(location, size);
        } else {
            if (how == Unmapped::kHole) ++prepare(location).current_count;  // not a new allocation: totals stay
            shrink(location, size);
        }
    }

    uint64_t heap() const { return heap_; }
    uint64_t peak_heap() const { return peak_heap_; }
    uint64_t peak_epoch() const { return peak_epoch_; }
    // Location ids seen so far are [0, size()).
    size_t size() const { return locations_.size(); }
    // `location` < size().
    const LocationCounters& at(uint32_t location) const { return locations_[location]; }
    // Grows the table to hold `location` if needed.
    LocationCounters& mutable_at(uint32_t location) {
        if (location >= locations_.size()) locations_.resize(size_t{location} + 1);
        return locations_[location];
    }
    // Sets the global state after locations were loaded with mutable_at (a
    // reader loading a checkpoint). Events may follow.
    void restore(uint64_t peak_epoch, uint64_t heap, uint64_t peak_heap) {
        peak_epoch_ = peak_epoch;
        heap_ = heap;
        peak_heap_ = peak_heap;
    }
    void clear() {
        locations_.clear();
        heap_ = peak_heap_ = peak_epoch_ = 0;
    }

  private:
    // After an event: the heap at or above the peak is the latest high-water mark.
    void note_peak() {
        if (heap_ >= peak_heap_) {
            peak_heap_ = heap_;
            ++peak_epoch_;
        }
    }
    // The location, with its value at the latest peak saved if this is its
    // first change since that peak.
    LocationCounters& prepare(uint32_t location) {
        LocationCounters& c = location < locations_.size() ? locations_[location] : mutable_at(location);
        if (c.epoch < peak_epoch_) {
            c.at_peak_count = c.current_count;
            c.at_peak_bytes = c.current_bytes;
        }
        c.epoch = peak_epoch_;
        return c;
    }

    std::vector<LocationCounters> locations_;
    uint64_t heap_ = 0;
    uint64_t peak_heap_ = 0;
    uint64_t peak_epoch_ = 0;
};

}  // namespace heapscope
