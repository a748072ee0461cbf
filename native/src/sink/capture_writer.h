// CaptureWriter: the sink that turns engine events into a capture file
// (FileFormat::kAllAllocations: every event) or an aggregated profile
// (kAggregatedAllocations: per location, counts and bytes at the high-water
// mark and at the end, checkpointed so that a killed process leaves a usable
// profile as of its last checkpoint).
//
// Hook side (on_* below, called by the engine with its lock held): encode
// into the current chunk buffer (for a regular file, a window of the file
// mapped shared: the journal, so that everything encoded survives a kill of
// the process); a full buffer is handed to the background
// thread, and when the destination falls behind (three buffers in flight)
// the hook waits for it: memory stays bounded. Background thread: compresses
// and writes chunks (a partial one at least every 250 ms), adds a
// MemoryRecord every memory interval and, for the aggregated format, a
// checkpoint at least every checkpoint interval. It never calls Python, and
// it runs with its HookGuard held so its own allocations are not traced.
//
// Locks: the writer's state is guarded by CaptureOptions::hook_lock when the
// caller gives it (the engine's lock, which every on_* call already holds: one
// lock per event instead of two), otherwise by a lock of the writer's own that
// each on_* call takes. A separate small lock guards only the queues of full
// and spare buffers, so handing a buffer back never needs the state lock.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/spin_lock.h"
#include "format/chunk_io.h"
#include "format/records.h"
#include "sink/capture_sink.h"

namespace heapscope {

struct CaptureOptions {
    int fd = -1;  // a file opened for writing, or a connected socket; the writer owns it
    format::FileFormat format = format::FileFormat::kAllAllocations;
    bool native_traces = false;
    bool trace_python_allocators = false;
    // Object records (CaptureSink::on_object) are written: the file is
    // version 3. Aggregated: only the objects alive at a clean stop.
    bool track_object_lifetimes = false;
    // How events are sampled, SamplingConfig::describe()'s form, written as
    // the `sampling` metadata (a forked child's capture inherits it). Sampled
    // events carry weights: the file is version 2. Exact captures are
    // written as version 1, which older readers still read.
    std::string sampling = "exact";
    // A regular file opened for reading and writing gets a journal: records
    // are encoded into windows of the file mapped shared, so every event
    // recorded is in the file even if the process is killed the next
    // instant (docs/capture-format.md, "Journal"). Other destinations
    // (sockets, pipes, a file opened write-only) are written a chunk at a time.
    bool journal = true;
    int compression_level = 3;                // 0: chunks stored uncompressed
    uint32_t memory_interval_ms = 10;         // 0: no memory records
    uint32_t checkpoint_interval_ms = 1000;   // aggregated format
    size_t chunk_bytes = 1 << 20;             // encoded bytes per chunk before it is handed off
    std::vector<std::pair<std::string, std::string>> metadata;  // written first: command, pid, ...
    FrameDescriber describer{};
    // The lock the caller holds on every on_* call (the engine's), or null.
    // When set, the hooks take no lock of their own, and the background
    // thread takes this one, never waiting on anything while it holds it,
    // to add its records or hand off a partial buffer. It must outlive the
    // writer. Null: the writer locks for itself (the caller may then call
    // on_* from several threads without a common lock).
    SpinLock* hook_lock = nullptr;
    // A socket destination's listening socket, or -1. The writer owns it: a
    // second viewer that connects while this one is served is told so
    // (kLiveBusy) and let go, by the background thread.
    int listener_fd = -1;
    // Tests: called by finish() with 0 once the end records are encoded
    // (into the journal when they fit), then with 1 once they are in a
    // chunk, before the end chunk: where a kill while finishing may land.
    void (*finishing_step)(int step) = nullptr;
};

// What a second live viewer is sent before the connection is closed.
inline constexpr const char kLiveBusy[] =
    "HEAPSCOPE-BUSY\nheapscope: error: this program's capture already has a live viewer (one at a time)\n";

struct CaptureTotals {
    uint64_t allocations = 0;    // allocation events seen
    uint64_t deallocations = 0;
    uint64_t peak_heap = 0;      // high-water mark of traced bytes
    uint64_t heap = 0;           // traced bytes outstanding now
    uint64_t bytes_written = 0;  // file bytes so far
    uint64_t python_nodes = 0, native_nodes = 0;
};

class CaptureWriter final : public CaptureSink {
  public:
    // Writes the header and the metadata, and starts the background thread.
    // Null on failure (`*error` says why); the descriptor is then closed.
    // `*error_number`, if given, gets the errno of a failed write (EPIPE: a
    // live viewer that left), or 0.
    static std::unique_ptr<CaptureWriter> open(CaptureOptions options, std::string* error,
                                               int* error_number = nullptr);
    ~CaptureWriter() override;  // finishes if finish() was not called

    // CaptureSink (hook_lock held, if one was given)
    void on_thread(uint32_t thread, uint64_t os_tid, const std::string* name) override;
    void on_python_node(uint32_t node, uint32_t parent, FrameKey frame) override;
    void on_native_node(uint32_t node, uint32_t parent, uintptr_t ip) override;
    bool keeps_block_state() const override;
    uint32_t on_alloc(const AllocationEvent& event) override;
    void on_free(const DeallocationEvent& event) override;
    void on_mappings_changed() override;
    void on_object(const ObjectEvent& event) override;

    // Appends a Metadata record now (pool names made during the capture);
    // a forked child's capture repeats it. Any thread, without hook_lock held.
    void add_metadata(std::vector<std::pair<std::string, std::string>> entries);

    // Writes the end metadata (appended to what open() wrote), the final
    // checkpoint (aggregated) and the end chunk, joins the background thread
    // and closes the descriptor. Call after the engine has stopped sending
    // events, without holding hook_lock. False if any write failed (`*error`
    // says why).
    bool finish(const std::vector<std::pair<std::string, std::string>>& end_metadata, std::string* error);

    // In a forked child (follow_fork): the parent's background thread does
    // not exist here. Returns a writer for the child's own capture on `fd`,
    // carrying over every definition (threads, code, nodes, loaded objects) so
    // the child's file is self-contained; this writer is abandoned without
    // touching the parent's descriptor. Null on failure.
    std::unique_ptr<CaptureWriter> clone_in_child(int fd, std::vector<std::pair<std::string, std::string>> metadata,
                                                  std::string* error);

    // Takes the state lock: not to be called with hook_lock held.
    CaptureTotals totals();
    // True once a write has failed: the capture is then incomplete.
    bool failed();
    // The errno of the write that failed (EPIPE: a live viewer left), or 0.
    int error_number();

  private:
    CaptureWriter() = default;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace heapscope
