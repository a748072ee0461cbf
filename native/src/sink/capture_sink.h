// CaptureSink: where the engine sends events while a capture (Tracker) runs.
//
// The engine calls a sink with its lock held, from inside allocator hooks,
// in the order the events happened. A sink must never call Python. It may
// allocate: the calling thread holds its HookGuard, so those allocations pass
// straight through the hooks untraced. It should be quick: every thread that
// allocates waits on the engine lock meanwhile.
#pragma once

#include <cstdint>
#include <string>

#include "model/allocator.h"
#include "model/block.h"
#include "model/frame.h"

namespace heapscope {

struct AllocationEvent {
    uintptr_t address;
    uint64_t size;
    uint32_t domain;       // 0 for Python's allocators and native ones; custom domains otherwise
    uint32_t thread;       // small id given by the engine (see on_thread)
    uint32_t python_node;  // engine StackTrie node (0: no Python frame)
    uint32_t native_node;  // engine native-frame trie node (0: none, or native traces off)
    Allocator allocator;
    // While sampling, `size` is the block's estimated bytes and `count` the
    // number of blocks it stands for (sample/sampler.h); 1 when exact.
    uint64_t count = 1;
};

struct DeallocationEvent {
    // For munmap: one event per piece of a mapping the call overlapped,
    // `address` where the released part starts, `size` its length.
    uintptr_t address;
    uint64_t size;  // the block's size as allocated (for munmap: the bytes released); estimated when sampled
    uint32_t domain;
    uint32_t thread;
    Allocator allocator;  // kFree, kMunmap, kPymallocFree or kUntrack
    BlockInfo block;      // what the engine kept for the block (block.sink_state: see CaptureSink::on_alloc)
    uint64_t count = 1;   // blocks it stood for (AllocationEvent::count); for munmap 0 unless the piece went whole
    Unmapped how = Unmapped::kWhole;  // munmap: what became of the piece (model/block.h)
};

// A Python object made or destroyed while the capture tracks object
// lifetimes (Tracker(track_object_lifetimes=True)).
struct ObjectEvent {
    uintptr_t address;     // the PyObject*
    uint32_t thread;
    bool created;
    uint32_t python_node;  // creations: the stack that made it (0 otherwise)
    uint32_t native_node;
};

// Describes Python frames for a capture. Installed by the Python layer, whose
// implementation knows CPython's layout. Callable from any thread, with or
// without the GIL, for frames whose code object the engine has pinned (every
// frame it hands to a sink but kUnknownFrame). Never calls Python, never
// allocates Python objects, takes no lock.
struct FrameDescriber {
    // The line number of a frame, as tracemalloc reports it (0 if unknown).
    int (*lineno)(FrameKey frame);
    // The code object's function name (qualified where the version has
    // co_qualname), its filename and first line, as UTF-8. False if unreadable.
    bool (*describe_code)(uintptr_t code, std::string* function, std::string* filename, int* first_lineno);
    // Whether the frame was entered from C (it is the outermost Python frame
    // run by its own call of the interpreter loop). Hybrid stacks use it to
    // give each native _PyEval_EvalFrameDefault frame its Python frames.
    bool (*is_entry)(FrameKey frame);
    // A label's name (its frame is {kLabelCode, id}: model/frame.h); false
    // if unknown. Captures name the frame "[label] <name>" in "<label>".
    bool (*label_name)(uint32_t id, std::string* name);
};

class CaptureSink {
  public:
    virtual ~CaptureSink() = default;
    // A thread's first event: `thread` is the engine's small id, `os_tid`
    // gettid(). Called by the thread itself, and again whenever it is
    // renamed (Engine::name_thread), with the new `name`; null for an
    // announcement without one: a sink that knows the thread (a forked
    // child's) keeps the name it has, otherwise takes the thread's own.
    virtual void on_thread(uint32_t thread, uint64_t os_tid, const std::string* name) = 0;
    // A stack node the sink has not been told of: `frame` called from `parent`
    // (0 for the outermost frame). Always before the first event that uses it.
    virtual void on_python_node(uint32_t node, uint32_t parent, FrameKey frame) = 0;
    // The same for native frames (return addresses), when native traces are on.
    virtual void on_native_node(uint32_t node, uint32_t parent, uintptr_t ip) = 0;
    // Whether the sink keeps state per block: then the engine stores
    // on_alloc's value in the block (BlockInfo::sink_state, in place of its
    // stack) and hands it back in DeallocationEvent::block. Fixed for the
    // sink's life.
    virtual bool keeps_block_state() const = 0;
    // A block was made. Returns its state (kNoSinkState if the sink keeps
    // none, or recorded none for this block).
    virtual uint32_t on_alloc(const AllocationEvent& event) = 0;
    // A block the engine had recorded was released.
    virtual void on_free(const DeallocationEvent& event) = 0;
    // Shared objects were loaded or unloaded (dlopen/dlclose): a sink that
    // records native frames records the loaded objects again.
    virtual void on_mappings_changed() = 0;
    // A Python object was made or destroyed (track_object_lifetimes only).
    virtual void on_object(const ObjectEvent& event) { (void)event; }
};

}  // namespace heapscope
