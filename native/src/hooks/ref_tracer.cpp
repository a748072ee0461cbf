#include "hooks/ref_tracer.h"

#include <unordered_set>

#include "common/hook_guard.h"
#include "cpython/python_frames.h"
#include "engine/thread_state.h"
#include "hooks/record.h"

namespace heapscope::reftrace {

#if PY_VERSION_HEX >= 0x030D0000

namespace {
// Guarded by the GIL (the tracer runs with it held; free-threaded builds are
// not supported).
unsigned g_uses = 0;
PyRefTracer g_previous = nullptr;
void* g_previous_data = nullptr;
// kObjectLifetimes: the objects made since install() and not destroyed.
// Allocated and changed with the hook guard held: its memory is not traced.
std::unordered_set<PyObject*>* g_live = nullptr;

// A remembered object is gone: forgotten whatever the guard says (a pointer
// kept past its object's death would be handed back as a surviving object;
// erasing allocates nothing), and written unless inside a hook.
void forget(std::unordered_set<PyObject*>::iterator it, bool may_record) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(*it);
    g_live->erase(it);
    if (may_record && engine().tracing()) hooks::record_object(address, false);
}

void on_object_event(PyObject* op, PyRefTracerEvent event) {
    HookGuard guard;
    if (event == PyRefTracer_CREATE) {
        // An object remembered at this address died unreported (3.13.0-3.13.2,
        // from a free list): its destruction comes first.
        auto known = g_live->find(op);
        if (known != g_live->end()) forget(known, guard.entered());
        if (!allocation_traced(guard)) return;  // heapscope's own objects, or inside a hook
        try {
            g_live->insert(op);
        } catch (const std::bad_alloc&) {
            return;  // not remembered: not written either, so the capture stays consistent
        }
        hooks::record_object(reinterpret_cast<uintptr_t>(op), true);
        return;
    }
    auto known = g_live->find(op);
    if (known != g_live->end()) forget(known, guard.entered());
}

int on_reference(PyObject* op, PyRefTracerEvent event, void* data) {
    if (g_uses & kObjectLifetimes) on_object_event(op, event);
    if ((g_uses & kRestamp) && event == PyRefTracer_CREATE) {
        HookGuard guard;
        if (allocation_traced(guard)) {
            uintptr_t block = python::object_block_address(op);
            // Most new objects were allocated just now, with this very stack.
            if (block != hooks::take_last_recorded_address()) hooks::restamp_block(block);
        }
    }
    (void)data;
    return g_previous ? g_previous(op, event, g_previous_data) : 0;
}
}  // namespace

bool available() { return true; }

void install(unsigned uses) {
    if (uses == 0) return;
    if (uses & kObjectLifetimes) {
        HookGuard untraced;
        if (!g_live) g_live = new std::unordered_set<PyObject*>();
    }
    if (g_uses == 0) {
        g_previous = PyRefTracer_GetTracer(&g_previous_data);
        if (g_previous == &on_reference) g_previous = nullptr;
        PyRefTracer_SetTracer(&on_reference, nullptr);
    }
    g_uses |= uses;
}

void forget_freed_block(uintptr_t block, bool may_record) {
    if (!g_live || g_live->empty()) return;
    // The object at the block's start (no header) is in it, whatever its
    // state: its type is not read (a float on a free list keeps its link there).
    auto known = g_live->find(reinterpret_cast<PyObject*>(block));
    if (known != g_live->end()) {
        forget(known, may_record);
        return;
    }
    // After a GC header, and managed-dict/weakref pointers: only if that
    // object's block is this one (a live object may start just past a
    // small block). Read from the object's type, intact until it is freed.
    for (uintptr_t offset : {2 * sizeof(uintptr_t), 4 * sizeof(uintptr_t)}) {
        known = g_live->find(reinterpret_cast<PyObject*>(block + offset));
        if (known != g_live->end() && python::object_block_address(*known) == block) {
            forget(known, may_record);
            return;
        }
    }
}

void take_surviving(std::vector<PyObject*>* out) {
    if (!g_live) return;
    HookGuard guard;
    out->reserve(out->size() + g_live->size());
    for (PyObject* op : *g_live) {
        if (Py_REFCNT(op) == 0) {
            // Destroyed unreported and kept on a free list (3.13.0-3.13.2):
            // its memory is still the free list's, so the count is readable.
            if (guard.entered() && engine().tracing()) hooks::record_object(reinterpret_cast<uintptr_t>(op), false);
            continue;
        }
        Py_INCREF(op);
        out->push_back(op);
    }
    g_live->clear();
}

void uninstall() {
    if (g_uses == 0) return;
    g_uses = 0;
    void* data = nullptr;
    if (PyRefTracer_GetTracer(&data) == &on_reference) PyRefTracer_SetTracer(g_previous, g_previous_data);
    g_previous = nullptr;
    g_previous_data = nullptr;
    HookGuard untraced;
    delete g_live;
    g_live = nullptr;
}

#else

bool available() { return false; }
void install(unsigned) {}
void uninstall() {}
void forget_freed_block(uintptr_t, bool) {}
void take_surviving(std::vector<PyObject*>*) {}

#endif

}  // namespace heapscope::reftrace
