// heapscope.pools' engine side: the Pool and ResourceHandle classes, the
// class hooks behind Pool.track_class, snapshots of the registry, and the C
// API of native/include/heapscope/pools.h (heapscope_pool_*_v1).
//
// The tracking paths (Pool.track, the __init__ hook, the C API) are C++ all
// the way: no Python frame of heapscope's stands between the program's line
// and the registration, so the engine's custom-domain block and the
// resource's source both name the program's line, and the call stays cheap.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "read/symbolizer.h"
#include "bindings.h"
#include "common/loaded_object.h"
#include "hooks/custom_domains.h"
#include "pools/pool_registry.h"
#include "sink/capture_writer.h"
#include "stack/native_unwind.h"
#include "cpython/python_frames.h"

namespace nb = nanobind;
using namespace heapscope;

namespace {

// ---------------------------------------------------------------------------
// Hooks the registry calls (never Python)

int track_block(uint32_t domain, uint64_t id, uint64_t size) {
    return domains::track(domain, static_cast<uintptr_t>(id), static_cast<size_t>(size));
}

int untrack_block(uint32_t domain, uint64_t id) { return domains::untrack(domain, static_cast<uintptr_t>(id)); }

// The calling thread's own frames: readable with or without the GIL (a
// thread without the GIL is suspended in C and its frames stay put), and
// their code objects are alive while the frames are.
void describe_python_stack(std::vector<pools::SourceFrame>* out, uint32_t limit) {
    PyThreadState* tstate = python::this_thread_state();
    if (!tstate) return;
    FrameKey keys[pools::Registry::kSourceDepth];
    uint32_t total = 0;
    if (limit > pools::Registry::kSourceDepth) limit = pools::Registry::kSourceDepth;
    const uint32_t n = python::capture_stack(tstate, keys, limit, &total);
    out->reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
        pools::SourceFrame frame;
        int first_lineno = 0;
        if (!python::describe_code(keys[i].code, &frame.function, &frame.filename, &first_lineno)) {
            frame.function = frame.filename = "<unknown>";
        }
        frame.lineno = python::frame_lineno(keys[i]);
        frame.is_entry = python::frame_is_entry(keys[i]);
        out->push_back(std::move(frame));
    }
}

// Registers a resource with the engine's domain and, if the pool is
// detailed, its source. Never calls Python. `native_skip` frames of the
// caller's own are left out of the native stack (only for C/C++ callers).
__attribute__((noinline)) uint64_t register_resource(pools::Pool* pool, uint64_t id, uint64_t size,
                                                     uint32_t kind, bool native, size_t native_skip) {
    uint32_t source = pools::Registry::kNoSource;
    if (pool->detailed()) source = pools::registry().capture_source(native, native_skip + 1);
    uint64_t serial = pool->track(id, size, kind, source);
    if (serial) track_block(pool->domain(), id, size);
    return serial;
}

void unregister_resource(pools::Pool* pool, uint64_t id, uint64_t serial) {
    if (pool->release(id, serial)) untrack_block(pool->domain(), id);
}

// ---------------------------------------------------------------------------
// Argument checks: TypeError for a wrong type, ValueError for a bad value

[[noreturn]] void type_error(const std::string& message) { throw nb::type_error(message.c_str()); }
[[noreturn]] void value_error(const std::string& message) { throw nb::value_error(message.c_str()); }

std::string python_type_name(nb::handle value) { return Py_TYPE(value.ptr())->tp_name; }

uint64_t unsigned_value(nb::handle value, const char* what) {
    if (!PyLong_Check(value.ptr()) || PyBool_Check(value.ptr())) {
        type_error(std::string(what) + " must be an int, not " + python_type_name(value));
    }
    unsigned long long result = PyLong_AsUnsignedLongLong(value.ptr());
    if (result == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
        PyErr_Clear();
        value_error(std::string(what) + " must be in range [0; 2**64 - 1], not " +
                    nb::cast<std::string>(nb::repr(value)));
    }
    return result;
}

uint32_t kind_argument(nb::handle kind) {
    if (kind.is_none()) return pools::Registry::kNoKind;
    if (!PyUnicode_Check(kind.ptr())) type_error("kind must be a str or None, not " + python_type_name(kind));
    Py_ssize_t length = 0;
    const char* text = PyUnicode_AsUTF8AndSize(kind.ptr(), &length);
    if (!text) throw nb::python_error();
    if (length == 0) value_error("kind must not be empty (use None for no kind)");
    if (std::memchr(text, '\0', static_cast<size_t>(length))) value_error("kind must not contain a NUL character");
    const uint32_t id = pools::registry().kind_id(std::string_view(text, static_cast<size_t>(length)));
    if (id == pools::Registry::kNoKind) {
        value_error("too many distinct kinds (at most " + std::to_string(pools::kMaxKinds) + ")");
    }
    return id;
}

pools::Pool* pool_argument(nb::handle name) {
    if (!PyUnicode_Check(name.ptr())) type_error("a pool's name must be a str, not " + python_type_name(name));
    Py_ssize_t length = 0;
    const char* text = PyUnicode_AsUTF8AndSize(name.ptr(), &length);
    if (!text) throw nb::python_error();
    std::string_view view(text, static_cast<size_t>(length));
    if (view.empty()) value_error("a pool's name must not be empty");
    if (view.find('\0') != std::string_view::npos) value_error("a pool's name must not contain NUL characters");
    if (view.size() > pools::kMaxNameBytes) {
        value_error("a pool's name must be at most " + std::to_string(pools::kMaxNameBytes) + " bytes of UTF-8");
    }
    pools::Pool* pool = pools::registry().pool(view);
    if (!pool) {
        value_error("cannot make another pool: heapscope keeps at most " + std::to_string(pools::kMaxPools));
    }
    return pool;
}

// ---------------------------------------------------------------------------
// Python classes

struct PyPool {
    pools::Pool* pool;
};

// What Pool.track returns. Holds the weak reference that releases the
// resource when its object dies; the reference's callback holds the handle,
// so a handle nobody keeps lives exactly as long as the object.
struct ResourceHandle {
    pools::Pool* pool = nullptr;
    uint64_t id = 0;
    uint64_t serial = 0;
    uint64_t size = 0;
    uint32_t kind = 0;
    bool released = false;
    nb::object weakref;

    bool release() {
        if (released) return false;
        released = true;
        unregister_resource(pool, id, serial);
        weakref.reset();  // the weak reference and its callback go: no cycle is left
        return true;
    }
};

// The one way resources are registered from Python (track and the class
// hook): `object` may be null for an id.
nb::object make_handle(pools::Pool* pool, uint64_t id, uint64_t size, uint32_t kind, PyObject* object) {
    const uint64_t serial = register_resource(pool, id, size, kind, false, 0);
    if (!serial) throw std::bad_alloc();
    nb::object handle = nb::cast(ResourceHandle{pool, id, serial, size, kind, false, nb::object()});
    if (object) {
        nb::object callback = nb::getattr(handle, "_on_collected");
        PyObject* ref = PyWeakref_NewRef(object, callback.ptr());
        if (!ref) {
            unregister_resource(pool, id, serial);
            throw nb::python_error();
        }
        nb::cast<ResourceHandle&>(handle).weakref = nb::steal(ref);
    }
    return handle;
}

// The object or id that Pool.track registers: (id, object or null).
std::pair<uint64_t, PyObject*> resource_key(nb::handle obj_or_id) {
    if (PyLong_Check(obj_or_id.ptr()) && !PyBool_Check(obj_or_id.ptr())) {
        return {unsigned_value(obj_or_id, "the resource id"), nullptr};
    }
    PyObject* object = obj_or_id.ptr();
    if (object == Py_None || PyBool_Check(object) || !PyType_SUPPORTS_WEAKREFS(Py_TYPE(object))) {
        type_error("cannot tell when a " + python_type_name(obj_or_id) +
                   " object dies (it does not support weak references): track an int id instead and "
                   "release its handle yourself");
    }
    return {reinterpret_cast<uintptr_t>(object), object};
}

uint64_t size_of(nb::handle size, nb::handle instance, const std::string& what);

nb::object pool_track(PyPool& self, nb::handle obj_or_id, nb::handle size, nb::handle kind) {
    const uint32_t kind_id = kind_argument(kind);
    auto [id, object] = resource_key(obj_or_id);
    const uint64_t bytes = size_of(size, obj_or_id, python_type_name(obj_or_id));
    return make_handle(self.pool, id, bytes, kind_id, object);
}

// The size argument: an int, or a callable that takes the object.
uint64_t size_of(nb::handle size, nb::handle instance, const std::string& what) {
    if (PyLong_Check(size.ptr()) && !PyBool_Check(size.ptr())) return unsigned_value(size, "size");
    if (!PyCallable_Check(size.ptr())) {
        type_error("size must be an int or a callable returning one, not " + python_type_name(size));
    }
    nb::object result = size(instance);
    if (!PyLong_Check(result.ptr()) || PyBool_Check(result.ptr())) {
        type_error("the size callable for a " + what + " returned " + python_type_name(result) + ", not an int");
    }
    return unsigned_value(result, ("the size of a " + what).c_str());
}

// The __init__ that Pool.track_class installs: runs the class's own
// __init__, then registers the instance. A C function wrapped as an instance
// method, so that it binds like a Python function but adds no Python frame.
nb::object class_init_hook(PyPool pool, nb::object original, bool original_is_object_init, nb::object size,
                           uint32_t kind, bool weakrefable, std::string class_name) {
    auto hook = [pool, original, original_is_object_init, size, kind, weakrefable, class_name](
                    nb::args args, nb::kwargs kwargs) {
        if (args.size() < 1) type_error("__init__ of " + class_name + " needs its instance");
        nb::handle instance = args[0];
        // object.__init__ rejects arguments when __init__ is overridden (as
        // it now is), though the class's own construction accepted them.
        if (!original_is_object_init) original(*args, **kwargs);
        const uint64_t bytes = size_of(size, instance, class_name);
        const auto id = reinterpret_cast<uintptr_t>(instance.ptr());
        make_handle(pool.pool, id, bytes, kind, weakrefable ? instance.ptr() : nullptr);
    };
    nb::object function = nb::cpp_function(std::move(hook), nb::name("__init__"));
    PyObject* method = PyInstanceMethod_New(function.ptr());
    if (!method) throw nb::python_error();
    return nb::steal(method);
}

// For instances without weak references (__slots__ without __weakref__):
// released by the class's __del__ (installed by Pool.track_class).
nb::object class_del_hook(PyPool pool, nb::object original) {
    auto hook = [pool, original](nb::handle instance) {
        unregister_resource(pool.pool, reinterpret_cast<uintptr_t>(instance.ptr()), 0);
        if (!original.is_none()) original(instance);
    };
    nb::object function = nb::cpp_function(std::move(hook), nb::name("__del__"));
    PyObject* method = PyInstanceMethod_New(function.ptr());
    if (!method) throw nb::python_error();
    return nb::steal(method);
}

// ---------------------------------------------------------------------------
// Snapshots

bool is_pools_header(const std::string& file) {
    static const std::string kHeader = "heapscope/pools.h";
    return file.size() >= kHeader.size() && file.compare(file.size() - kHeader.size(), kHeader.size(), kHeader) == 0;
}

// Where a resource was made (PoolSource), innermost frame first: its
// Python stack, its native stack (from C/C++), and the two merged.
struct PoolSource {
    std::vector<read::NativeFrame> python, native, merged;
};

// One live resource (ResourceRow). The names are Python objects already:
// rows of one pool share its name, and rows of one source share its
// PoolSource (heapscope.pools turns each distinct source into one Source).
struct ResourceRow {
    nb::object pool;  // its name
    uint64_t id, serial, size;
    nb::object kind;    // str or None
    double created;     // Unix time, seconds
    nb::object source;  // PoolSource, or None without detailed profiling
};

struct PoolTotals {
    uint64_t count = 0, bytes = 0;
};

// Turns sources into PoolSource objects, each distinct source once.
class SourceBuilder {
  public:
    nb::object build(uint32_t id) {
        if (id == pools::Registry::kNoSource) return nb::none();
        auto found = built_.find(id);
        if (found != built_.end()) return found->second;
        pools::Source source = pools::registry().source(id);
        PoolSource result;
        std::vector<read::PythonFrame> python_frames;
        for (const pools::SourceFrame& frame : source.python) {
            python_frames.push_back(read::PythonFrame{frame.function, frame.filename, frame.lineno, frame.is_entry});
        }
        result.python = bindings::shown_frames(python_frames);
        if (!source.native.empty()) {
            for (uintptr_t ip : source.native) {
                for (read::NativeFrame& frame : symbolizer().symbolize(ip, 1)) {
                    // The header's inline functions, compiled into the caller,
                    // are heapscope's: the stack starts at the library's code.
                    if (result.native.empty() && is_pools_header(frame.file)) continue;
                    result.native.push_back(std::move(frame));
                }
            }
            // The hybrid stack: the interpreter's native frames replaced by
            // the Python frames they ran.
            result.merged = read::hybrid_stack(python_frames, result.native);
        }
        nb::object built = nb::cast(std::move(result));
        built_.emplace(id, built);
        return built;
    }

  private:
    read::Symbolizer& symbolizer() {
        if (!symbolizer_) {
            symbolizer_ = std::make_unique<read::Symbolizer>();
            symbolizer_->set_objects(1, current_loaded_objects());
        }
        return *symbolizer_;
    }
    std::unordered_map<uint32_t, nb::object> built_;
    std::unique_ptr<read::Symbolizer> symbolizer_;
};

// Every live resource of `pool` (or of every pool, for null), oldest first.
std::vector<ResourceRow> collect(pools::Pool* pool) {
    std::vector<pools::ResourceInfo> rows;
    {
        nb::gil_scoped_release unlocked;  // shards may be held by threads waiting for the GIL
        if (pool) {
            pool->collect(&rows);
        } else {
            for (uint32_t i = 0; i < pools::registry().pool_count(); ++i) pools::registry().at(i)->collect(&rows);
        }
        // Oldest first (shards hand them out in hash order).
        std::sort(rows.begin(), rows.end(), [](const pools::ResourceInfo& a, const pools::ResourceInfo& b) {
            return a.created_ns != b.created_ns ? a.created_ns < b.created_ns
                                                : a.pool != b.pool ? a.pool < b.pool : a.serial < b.serial;
        });
    }
    std::vector<ResourceRow> result;
    result.reserve(rows.size());
    SourceBuilder sources;
    std::unordered_map<uint32_t, nb::object> kinds;
    std::vector<nb::object> names;
    for (const pools::ResourceInfo& row : rows) {
        while (names.size() <= row.pool) {
            names.push_back(bindings::text(pools::registry().at(static_cast<uint32_t>(names.size()))->name()));
        }
        auto kind = kinds.find(row.kind);
        if (kind == kinds.end()) {
            nb::object name = row.kind == pools::Registry::kNoKind
                                  ? nb::none()
                                  : nb::object(bindings::text(pools::registry().kind_name(row.kind)));
            kind = kinds.emplace(row.kind, name).first;
        }
        result.push_back(ResourceRow{names[row.pool], row.id, row.serial, row.size, kind->second,
                                     static_cast<double>(row.created_ns) / 1e9, sources.build(row.source)});
    }
    return result;
}

PoolTotals totals(pools::Pool* pool) {
    PoolTotals result;
    pool->totals(&result.count, &result.bytes);
    return result;
}

void set_detailed(pools::Pool* pool, bool on) {
    if (on) load_native_unwinder();  // for resources registered from C and C++
    if (pool) {
        pool->set_detailed(on);
        return;
    }
    pools::registry().set_detailed_by_default(on);
    for (uint32_t i = 0; i < pools::registry().pool_count(); ++i) pools::registry().at(i)->set_detailed(on);
}

}  // namespace

// ---------------------------------------------------------------------------
// The C API (native/include/heapscope/pools.h). Return values: 0 done; 1 a
// release of a resource that is not alive; -1 a bad argument (null or empty
// pool name, too many pools, out of memory). Any thread, GIL or not.

extern "C" __attribute__((visibility("default"))) void* heapscope_pool_get_v1(const char* pool) {
    return pool ? pools::registry().pool(pool) : nullptr;
}

// The pool if it exists: releasing by name never makes a pool.
extern "C" __attribute__((visibility("default"))) void* heapscope_pool_find_v1(const char* pool) {
    return pool ? pools::registry().find(pool) : nullptr;
}

extern "C" __attribute__((visibility("default"), noinline)) int heapscope_pool_track_in_v1(void* pool, uint64_t id,
                                                                                           uint64_t size,
                                                                                           const char* kind) {
    if (!pool) return -1;
    uint32_t kind_id = kind ? pools::registry().kind_id(kind) : pools::Registry::kNoKind;
    // Skip this function's frame: the native stack starts in the caller.
    return register_resource(static_cast<pools::Pool*>(pool), id, size, kind_id, true, 1) ? 0 : -1;
}

extern "C" __attribute__((visibility("default"))) int heapscope_pool_release_in_v1(void* pool, uint64_t id) {
    if (!pool) return -1;
    auto* p = static_cast<pools::Pool*>(pool);
    if (!p->release(id, 0)) return 1;
    untrack_block(p->domain(), id);
    return 0;
}

namespace {
void name_pool_in_capture(void* writer, uint32_t domain, const std::string& name) {
    static_cast<CaptureWriter*>(writer)->add_metadata({{"pool." + std::to_string(domain), name}});
}
}  // namespace

namespace heapscope::bindings {
// Declared where it is called (capture_control.cpp).
void announce_pools(CaptureWriter* writer) {
    pools::registry().set_observer(writer ? &name_pool_in_capture : nullptr, writer);
}
}  // namespace heapscope::bindings

void bind_pools(nb::module_& m) {
    pools::Hooks hooks;
    hooks.track_block = &track_block;
    hooks.untrack_block = &untrack_block;
    hooks.python_stack = &describe_python_stack;
    pools::registry().set_hooks(hooks);
    // The handle of an object still alive at exit lives on, by design, in a
    // cycle with its weak reference (see ResourceHandle): nanobind would
    // report each one as a leak when the interpreter ends.
    nb::set_leak_warnings(false);

    nb::class_<ResourceHandle>(m, "ResourceHandle",
                               "A registered resource: release() it, or use it as a context manager. "
                               "A tracked object's resource is also released when the object dies.")
        .def_prop_ro("pool", [](const ResourceHandle& h) { return bindings::text(h.pool->name()); })
        .def_ro("id", &ResourceHandle::id)
        .def_ro("size", &ResourceHandle::size)
        .def_prop_ro("kind",
                     [](const ResourceHandle& h) -> nb::object {
                         if (h.kind == pools::Registry::kNoKind) return nb::none();
                         return bindings::text(pools::registry().kind_name(h.kind));
                     })
        .def_prop_ro("released", [](const ResourceHandle& h) { return h.released; })
        .def("release", &ResourceHandle::release,
             "Release the resource now. Returns False if it was released already (harmless).")
        .def("_on_collected", [](ResourceHandle& h, nb::handle) {
            // The weak reference's callback: the reference is mid-call, so it
            // is left for the handle's own end rather than dropped here.
            if (h.released) return;
            h.released = true;
            unregister_resource(h.pool, h.id, h.serial);
        })
        .def("__enter__", [](nb::handle self) { return nb::borrow(self); })
        .def("__exit__", [](ResourceHandle& h, nb::args) {
            h.release();
            return false;
        })
        .def("__repr__", [](const ResourceHandle& h) {
            return "<ResourceHandle pool=" + nb::cast<std::string>(nb::repr(bindings::text(h.pool->name()))) +
                   " id=" + std::to_string(h.id) + " size=" + std::to_string(h.size) +
                   (h.released ? " released>" : ">");
        });

    nb::class_<PoolSource>(m, "PoolSource",
                           "Where a resource was made, innermost frame first: python, native (registered\n"
                           "from C/C++) and merged (both; empty without a native stack), as [StackFrame].")
        .def_ro("python", &PoolSource::python)
        .def_ro("native", &PoolSource::native)
        .def_ro("merged", &PoolSource::merged);
    nb::class_<ResourceRow>(m, "ResourceRow",
                            "One live resource: pool (name), id, serial, size, kind (or None), created (Unix\n"
                            "time, seconds), source (PoolSource, or None).")
        .def_ro("pool", &ResourceRow::pool)
        .def_ro("id", &ResourceRow::id)
        .def_ro("serial", &ResourceRow::serial)
        .def_ro("size", &ResourceRow::size)
        .def_ro("kind", &ResourceRow::kind)
        .def_ro("created", &ResourceRow::created)
        .def_ro("source", &ResourceRow::source);
    nb::class_<PoolTotals>(m, "PoolTotals", "The live resources of a pool: count, and their bytes.")
        .def_ro("count", &PoolTotals::count)
        .def_ro("bytes", &PoolTotals::bytes);

    nb::class_<PyPool>(m, "_Pool", "The engine side of heapscope.pools.Pool.")
        .def("__init__", [](PyPool* self, nb::handle name) { new (self) PyPool{pool_argument(name)}; },
             nb::arg("name").none())
        .def_prop_ro("name", [](const PyPool& p) { return bindings::text(p.pool->name()); })
        .def_prop_ro("domain", [](const PyPool& p) { return p.pool->domain(); })
        .def("track", &pool_track, nb::arg("obj_or_id").none(), nb::arg("size").none(),
             nb::arg("kind").none() = nb::none(),
             "Register a resource of `size` bytes: an object (released when it dies, or by the handle)\n"
             "or an int id (released by the handle). `size` is an int or a callable taking the object.\n"
             "Returns a ResourceHandle.")
        .def("tracked", [](PyPool& self, nb::handle obj, nb::handle size, nb::handle kind) {
                 if (PyLong_Check(obj.ptr())) type_error("tracked() takes an object; use track() for an int id");
                 pool_track(self, obj, size, kind);
                 return nb::borrow(obj);
             },
             nb::arg("obj").none(), nb::arg("size").none(), nb::arg("kind").none() = nb::none(),
             "track(obj, ...) that returns obj itself, to register a resource where it is made.")
        .def("release", [](PyPool& p, nb::handle id) {
                 uint64_t key = unsigned_value(id, "the resource id");
                 if (!p.pool->release(key, 0)) return false;
                 untrack_block(p.pool->domain(), key);
                 return true;
             },
             nb::arg("id").none(), "Release the resource registered under an int id. False if none is alive.")
        .def("_totals", [](PyPool& p) { return totals(p.pool); })
        .def("_collect", [](PyPool& p) { return collect(p.pool); })
        .def("_detailed", [](PyPool& p) { return p.pool->detailed(); })
        .def("_set_detailed", [](PyPool& p, bool on) { set_detailed(p.pool, on); })
        .def("_init_hook", [](PyPool& p, nb::object original, bool is_object_init, nb::object size, nb::handle kind,
                              bool weakrefable, std::string class_name) {
            return class_init_hook(p, std::move(original), is_object_init, std::move(size), kind_argument(kind),
                                   weakrefable, std::move(class_name));
        })
        .def("_del_hook", [](PyPool& p, nb::handle original) { return class_del_hook(p, nb::borrow(original)); },
             nb::arg("original").none());

    m.def("_pools_collect", [] { return collect(nullptr); }, "[ResourceRow] of every pool, oldest first.");
    m.def("_pools_set_detailed", [](bool on) { set_detailed(nullptr, on); });
    m.def("_pools_detailed", [] { return pools::registry().detailed_by_default(); });
    m.def("_pools_names", [] {
        nb::dict result;
        for (uint32_t i = 0; i < pools::registry().pool_count(); ++i) {
            pools::Pool* pool = pools::registry().at(i);
            result[nb::int_(pool->domain())] = bindings::text(pool->name());
        }
        return result;
    });
    m.attr("POOL_FIRST_DOMAIN") = pools::kFirstDomain;
    m.attr("POOL_MAX_POOLS") = pools::kMaxPools;
}
