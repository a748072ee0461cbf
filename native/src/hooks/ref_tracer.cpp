#include "hooks/ref_tracer.h"

#include <Python.h>

#include "common/hook_guard.h"
#include "cpython/python_frames.h"
#include "engine/thread_state.h"
#include "hooks/record.h"

namespace heapscope::reftrace {

#if PY_VERSION_HEX >= 0x030D0000

namespace {
// Guarded by the GIL.
bool g_installed = false;
PyRefTracer g_previous = nullptr;
void* g_previous_data = nullptr;

int on_reference(PyObject* op, PyRefTracerEvent event, void* data) {
    if (event == PyRefTracer_CREATE) {
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

void install() {
    if (g_installed) return;
    g_previous = PyRefTracer_GetTracer(&g_previous_data);
    if (g_previous == &on_reference) g_previous = nullptr;
    PyRefTracer_SetTracer(&on_reference, nullptr);
    g_installed = true;
}

void uninstall() {
    if (!g_installed) return;
    g_installed = false;
    void* data = nullptr;
    if (PyRefTracer_GetTracer(&data) == &on_reference) PyRefTracer_SetTracer(g_previous, g_previous_data);
    g_previous = nullptr;
    g_previous_data = nullptr;
}

#else

bool available() { return false; }
void install() {}
void uninstall() {}

#endif

}  // namespace heapscope::reftrace
