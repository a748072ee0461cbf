#include "cpython/python_allocators.h"

#include <Python.h>

#include <cstring>

// Exported on 3.9-3.13; declared by Python.h up to 3.12 and in the internal
// headers since.
#if PY_VERSION_HEX >= 0x030D0000
extern "C" const char* _PyMem_GetCurrentAllocatorName(void);
#endif

namespace heapscope::python {

const char* current_allocator_name() { return _PyMem_GetCurrentAllocatorName(); }

bool allocators_are_pymalloc() {
    const char* name = current_allocator_name();
    return name != nullptr && std::strcmp(name, "pymalloc") == 0;
}

}  // namespace heapscope::python
