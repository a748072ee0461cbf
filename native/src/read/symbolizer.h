// Symbolizer: native return addresses to function, file and line, offline.
//
// Runs when a report is made, in the reading process, against the shared
// objects a capture recorded (path and load bias): the files must still be
// on this machine, as with memray and heaptrack. Never calls Python.
//
// Names: DWARF's (inlined frames included) when the object or its separate
// debug file (/usr/lib/debug/.build-id) has it, C++ demangled with
// parameters; else the ELF symbol table's (.symtab, or .dynsym when
// stripped). Files: the source file from the line table, else the object's
// path. A file changed since the capture (a reinstalled library) is read as
// it is now: nothing checks build ids.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/loaded_object.h"

namespace heapscope::read {

// One frame of a native or hybrid stack.
struct NativeFrame {
    std::string function;  // demangled; "??" when unknown
    std::string file;      // source file from debug info, else the object's path
    int line = 0;          // 0 when unknown
    bool python = false;   // a Python frame, put by hybrid_stack in place of the interpreter's
};

// Not thread-safe: one per reading thread. Keeps each object it touched
// (and its debug file) open and mapped until destroyed.
class Symbolizer {
  public:
    Symbolizer();
    ~Symbolizer();
    Symbolizer(const Symbolizer&) = delete;
    Symbolizer& operator=(const Symbolizer&) = delete;
    // The objects loaded as of `generation` (LoadedObjectsRecord). Objects
    // listed again with the same path and load bias share their parsed data.
    void set_objects(uint32_t generation, std::vector<LoadedObject> objects);
    // The frames for one return address, the innermost inlined frame first,
    // the function the address is physically in last. Looks up ip - 1 (the
    // call instruction). A generation never given resolves against the
    // latest one given before it. An address in no object, or in an object
    // whose file is missing or unreadable, gives {"??", path or "??", 0}.
    // Never empty, never throws on bad input. Results are cached per
    // (object, ip), so per (generation, ip).
    std::vector<NativeFrame> symbolize(uint64_t ip, uint32_t generation);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// A Python frame as a hybrid stack needs it.
struct PythonFrame {
    std::string function;
    std::string file;
    int line = 0;
    bool is_entry = false;  // the outermost frame of one interpreter-loop call
};

// Merges a native stack and a Python stack (both innermost first) into one:
// each native frame of the interpreter loop (_PyEval_EvalFrameDefault, or a
// part the compiler split off it: "_PyEval_EvalFrameDefault.cold") is
// replaced by the Python frames it ran, up to and including the next entry
// frame (on 3.9/3.10 every Python frame is an entry, so one frame each).
// The loop's wrappers right outside a loop frame (_PyEval_EvalFrame, inlined
// into its callers on 3.9-3.13; PyEval_EvalFrameEx and PyEval_EvalFrame)
// belong to the same call and are dropped; elsewhere (a PEP 523 evaluator in
// between) they stay as native frames. A loop frame with no Python frames
// left (the Python stack was cut at its depth limit) stays native. Python
// frames left over (none of the loop's frames were captured) are appended
// outermost. Checked on real 3.9, 3.11 and 3.13 stacks (ctypes -> C).
// `outer_cut`: the Python stack was cut at its outer end (the capture's
// stack root): the merged stack ends with the loop frame that ran its
// outermost frame, as memray's does.
std::vector<NativeFrame> hybrid_stack(const std::vector<PythonFrame>& python, const std::vector<NativeFrame>& native,
                                      bool outer_cut = false);

}  // namespace heapscope::read
