"""Blocks of exact sizes from Python's own allocators, for ground-truth tests.

Two kinds of calls:
- ``raw_malloc`` etc. return the address (as a Python int, which the call
  allocates at the calling line too), so that a test can free the block;
- ``leak_raw``, ``leak_mem``, ``leak_obj`` return nothing, so the calling
  line's traced size is exactly the block's size. Their blocks are never freed;
  tests keep them small.
``*_nogil`` variants release the GIL around the call, as C code may.
"""

import ctypes

_api = ctypes.pythonapi


def _address_of(name):
    return ctypes.cast(getattr(_api, name), ctypes.c_void_p).value


def _function(name, restype, argtypes, gil=True):
    prototype = ctypes.PYFUNCTYPE if gil else ctypes.CFUNCTYPE
    return prototype(restype, *argtypes)(_address_of(name))


_ptr, _size = ctypes.c_void_p, ctypes.c_size_t

raw_malloc = _function("PyMem_RawMalloc", _ptr, [_size])
raw_realloc = _function("PyMem_RawRealloc", _ptr, [_ptr, _size])
raw_free = _function("PyMem_RawFree", None, [_ptr])
raw_malloc_nogil = _function("PyMem_RawMalloc", _ptr, [_size], gil=False)
raw_free_nogil = _function("PyMem_RawFree", None, [_ptr], gil=False)
mem_malloc = _function("PyMem_Malloc", _ptr, [_size])
mem_free = _function("PyMem_Free", None, [_ptr])
obj_malloc = _function("PyObject_Malloc", _ptr, [_size])
obj_free = _function("PyObject_Free", None, [_ptr])

leak_raw = _function("PyMem_RawMalloc", None, [_size])
leak_raw_nogil = _function("PyMem_RawMalloc", None, [_size], gil=False)
leak_mem = _function("PyMem_Malloc", None, [_size])
leak_obj = _function("PyObject_Malloc", None, [_size])
