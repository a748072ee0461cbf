// The attach agent (docs/attach.md): `heapscope attach` has gdb load this
// library into a running Python process at a safe point and call
// heapscope_attach_agent_start(source). That starts a thread of its own,
// which takes the GIL the ordinary way (PyGILState_Ensure: it waits until the
// interpreter hands the GIL over between bytecodes) and runs `source`, a few
// lines of Python (heapscope/cli/attach.py's bootstrap). Those connect back
// to `heapscope attach`, which sends the rest of the code to run
// (heapscope/_attach_payload.py).
//
// Nothing here runs at the point where gdb stopped the process, apart from
// copying the source and creating the thread, and no Python runs on any thread
// the program owns.
//
// The library does not include Python.h: one build serves every CPython the
// target may run (3.9-3.13 and later), so it declares the few functions of
// the stable ABI it calls, and they are resolved against the target's
// interpreter when it is loaded.

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>

#include <climits>
#include <cerrno>
#include <cstdlib>
#include <cstring>

extern "C" {
struct _object;
using PyObject = _object;
enum PyGILState_STATE { PyGILState_LOCKED, PyGILState_UNLOCKED };
constexpr int kPyFileInput = 257;  // Py_file_input

int Py_IsInitialized(void);
PyGILState_STATE PyGILState_Ensure(void);
void PyGILState_Release(PyGILState_STATE);
PyObject* Py_CompileString(const char* source, const char* filename, int start);
PyObject* PyDict_New(void);
int PyDict_SetItemString(PyObject* dict, const char* key, PyObject* item);
PyObject* PyImport_ImportModule(const char* name);
PyObject* PyEval_EvalCode(PyObject* code, PyObject* globals, PyObject* locals);
void PyErr_Clear(void);
void Py_DecRef(PyObject* object);
}

namespace {

// Takes the GIL and runs `source` in a namespace of its own (not the
// program's __main__). Calls into Python; allocates.
void run_source(const char* source) {
    if (!Py_IsInitialized()) return;  // the interpreter is finalizing or gone: leave it alone
    const PyGILState_STATE state = PyGILState_Ensure();
    PyObject* globals = PyDict_New();
    PyObject* builtins = PyImport_ImportModule("builtins");
    PyObject* code = nullptr;
    PyObject* result = nullptr;
    if (globals != nullptr && builtins != nullptr && PyDict_SetItemString(globals, "__builtins__", builtins) == 0) {
        code = Py_CompileString(source, "<heapscope attach bootstrap>", kPyFileInput);
        if (code != nullptr) result = PyEval_EvalCode(code, globals, globals);
    }
    // A failure here (no channel: heapscope attach gave up) has nobody to be
    // told to; the program must not see it either.
    if (result == nullptr) PyErr_Clear();
    Py_DecRef(result);
    Py_DecRef(code);
    Py_DecRef(builtins);
    Py_DecRef(globals);
    PyGILState_Release(state);
}

// dl_iterate_phdr's callback: copies the path of a loaded heapscope module
// (.../heapscope/_heapscope.<tag>.so) into `found` (PATH_MAX bytes).
int find_heapscope(dl_phdr_info* info, size_t, void* found) {
    const char* name = info->dlpi_name;
    const char* base = name != nullptr ? std::strrchr(name, '/') : nullptr;
    if (base == nullptr || base - name < 10 || std::strncmp(base - 10, "/heapscope/_heapscope.", 22) != 0) return 0;
    if (std::strlen(name) >= PATH_MAX) return 0;
    std::strcpy(static_cast<char*>(found), name);
    return 1;
}

// When heapscope is loaded in the process (a capture may run: the
// program's own, or one heapscope attach started), what this thread
// allocates from now on is heapscope's and not recorded.
void untrace_if_heapscope_is_loaded() {
    char path[PATH_MAX] = "";
    if (dl_iterate_phdr(find_heapscope, path) == 0) return;
    void* handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (handle == nullptr) return;
    if (void* untrace = dlsym(handle, "heapscope_untrace_this_thread")) reinterpret_cast<void (*)()>(untrace)();
    dlclose(handle);
}

void* agent_thread(void* argument) {
    char* source = static_cast<char*>(argument);
    untrace_if_heapscope_is_loaded();
    run_source(source);
    std::free(source);
    return nullptr;
}

}  // namespace

// Called by gdb in the stopped target, at the entry of malloc, free or one of
// Python's allocation functions (where no allocator lock is held by the
// thread). Allocates (the copy of the source, the thread). Returns 0, or the
// errno of the failure.
extern "C" __attribute__((visibility("default"))) int heapscope_attach_agent_start(const char* source) {
    char* copy = strdup(source);
    if (copy == nullptr) return ENOMEM;
    pthread_attr_t attributes;
    int error = pthread_attr_init(&attributes);
    if (error != 0) {
        std::free(copy);
        return error;
    }
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    // The program's signals stay with its own threads (the new thread inherits this mask).
    sigset_t all;
    sigset_t previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pthread_t thread;
    error = pthread_create(&thread, &attributes, agent_thread, copy);
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    pthread_attr_destroy(&attributes);
    if (error != 0) {
        std::free(copy);
        return error;
    }
    pthread_setname_np(thread, "heapscope-attach");
    return 0;
}
