// Names of code objects for captures, read from the str objects' storage so
// that it works inside allocator hooks: no Python call, no Python allocation.
#include <Python.h>

#include "cpython/python_frames.h"

namespace heapscope::python {

namespace {
void append_utf8(uint32_t c, std::string* out) {
    if (c >= 0xD800 && c <= 0xDFFF) c = '?';  // a lone surrogate has no UTF-8 form
    if (c < 0x80) {
        out->push_back(static_cast<char>(c));
    } else if (c < 0x800) {
        out->push_back(static_cast<char>(0xC0 | (c >> 6)));
        out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
        out->push_back(static_cast<char>(0xE0 | (c >> 12)));
        out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
        out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
        out->push_back(static_cast<char>(0xF0 | (c >> 18)));
        out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
        out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
        out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
}

// Code objects' names are compact, ready str objects (the compiler interns
// them), so their characters can be read in place.
bool str_to_utf8(PyObject* text, std::string* out) {
    out->clear();
    if (!text || !PyUnicode_Check(text)) return false;
#if PY_VERSION_HEX < 0x030C0000
    if (!PyUnicode_IS_READY(text)) return false;
#endif
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void* data = PyUnicode_DATA(text);
    if (PyUnicode_IS_ASCII(text)) {
        out->assign(static_cast<const char*>(data), static_cast<size_t>(length));
        return true;
    }
    out->reserve(static_cast<size_t>(length) * 2);
    for (Py_ssize_t i = 0; i < length; ++i) append_utf8(PyUnicode_READ(kind, data, i), out);
    return true;
}
}  // namespace

bool describe_code(uintptr_t code_address, std::string* function, std::string* filename, int* first_lineno) {
    auto* code = reinterpret_cast<PyCodeObject*>(code_address);
    if (!code) return false;
#if PY_VERSION_HEX >= 0x030B0000
    PyObject* name = code->co_qualname;
#else
    PyObject* name = code->co_name;
#endif
    *first_lineno = code->co_firstlineno;
    return str_to_utf8(name, function) && str_to_utf8(code->co_filename, filename);
}

}  // namespace heapscope::python
