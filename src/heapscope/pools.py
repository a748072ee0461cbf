"""Resource pools: which images, tensors, buffers or handles are alive, how
large, and where they were made.

A library (or a program) declares each resource when it is made, in a named
pool, with its size in bytes and an optional kind; the resource is released
when its last reference goes::

    from heapscope import pools

    images = pools.pool("images")
    handle = images.track(image, size=image.nbytes, kind="rgb")  # released when `image` dies
    with images.track(4711, size=1 << 20):                       # an id: released by the handle
        ...
    images.track_class(Frame, size=lambda frame: frame.nbytes)   # every instance of a class

    pools.enable_detailed_profiling()          # before the first resource: sources are kept
    before = pools.make_snapshot()
    run_the_suspect_code()
    leaked = pools.diff(first_snapshot=before, second_snapshot=pools.make_snapshot()).new

C and C++ libraries use ``#include <heapscope/pools.h>`` (see docs/pools.md).
Each pool is also a custom domain of the engine (``Pool.domain``), so while
heapscope traces (``heapscope.tracemalloc``, a ``Tracker`` capture) its
resources appear in snapshots and captures like any other block.
"""

import warnings
from collections import namedtuple

from heapscope import _heapscope

__all__ = ["Pool", "pool", "all_pools", "make_snapshot", "enable_detailed_profiling", "disable_detailed_profiling",
           "diff", "domain_names", "Snapshot", "SnapshotDiff", "Resource", "Source", "Frame", "ResourceHandle",
           "FIRST_DOMAIN", "MAX_POOLS"]

#: Pool n (in creation order) is the engine's custom domain FIRST_DOMAIN + n.
FIRST_DOMAIN = _heapscope.POOL_FIRST_DOMAIN
MAX_POOLS = _heapscope.POOL_MAX_POOLS

ResourceHandle = _heapscope.ResourceHandle

_IMMUTABLE_TYPE = 1 << 8   # Py_TPFLAGS_IMMUTABLETYPE (3.10+)
_HEAP_TYPE = 1 << 9        # Py_TPFLAGS_HEAPTYPE: classes made by a class statement


class Frame(namedtuple("Frame", "filename lineno function is_native")):
    """One frame of a resource's source. ``is_native`` for a C/C++ frame."""

    __slots__ = ()

    def __str__(self):
        return f'  File "{self.filename}", line {self.lineno}, in {self.function}'


def _frames(stack):
    return tuple(Frame(frame.filename, frame.lineno, frame.function, frame.is_native) for frame in stack)


class Source:
    """Where a resource was made, innermost frame first.

    ``python``: the Python stack. ``native``: the native stack, for resources
    registered from C or C++ (symbolized when the snapshot was made).
    ``frames``: both merged (the interpreter's own native frames replaced by
    the Python frames they ran), or the Python stack when there is no native one.
    """

    __slots__ = ("python", "native", "frames")

    def __init__(self, python, native, frames):
        self.python = python
        self.native = native
        self.frames = frames

    @classmethod
    def _from_raw(cls, raw):
        python = _frames(raw.python)
        return cls(python, _frames(raw.native), _frames(raw.merged) if raw.native else python)

    def __iter__(self):
        return iter(self.frames)

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, index):
        return self.frames[index]

    def __eq__(self, other):
        return isinstance(other, Source) and self.frames == other.frames and self.native == other.native

    def __hash__(self):
        return hash(self.frames)

    def __repr__(self):
        top = self.frames[0] if self.frames else None
        where = f"{top.filename}:{top.lineno}" if top else "nowhere"
        return f"<Source {where} ({len(self.frames)} frames)>"

    def format(self):
        """The frames as traceback lines, outermost first (as Python prints them)."""
        return [str(frame) for frame in reversed(self.frames)]


class Resource:
    """One live resource in a snapshot: ``pool`` (name), ``id``, ``kind``
    (str or None), ``size`` (bytes), ``created`` (Unix time, seconds) and
    ``source`` (a Source, or None when detailed profiling was off)."""

    __slots__ = ("pool", "id", "size", "kind", "created", "source", "_serial")

    def __init__(self, pool, id, serial, size, kind, created, source):
        self.pool = pool
        self.id = id
        self._serial = serial
        self.size = size
        self.kind = kind
        self.created = created
        self.source = source

    @property
    def _key(self):
        # The same id registered again is another resource.
        return (self.pool, self._serial)

    def __eq__(self, other):
        return isinstance(other, Resource) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        kind = f" kind={self.kind!r}" if self.kind is not None else ""
        where = ""
        if self.source is not None and len(self.source):
            where = f" at {self.source[0].filename}:{self.source[0].lineno}"
        return f"<Resource pool={self.pool!r} id={self.id:#x} size={self.size}{kind}{where}>"


class Snapshot:
    """The resources alive when it was taken: ``resources`` (oldest first),
    ``count`` and ``total_size`` (bytes)."""

    __slots__ = ("resources", "count", "total_size")

    def __init__(self, resources):
        self.resources = resources  # the engine hands them out oldest first
        self.count = len(self.resources)
        self.total_size = sum(r.size for r in self.resources)

    @classmethod
    def _from_rows(cls, rows):
        sources = {}
        resources = []
        for row in rows:
            source = None
            if row.source is not None:
                # The engine hands out one PoolSource per distinct source.
                source = sources.get(id(row.source))
                if source is None:
                    source = sources[id(row.source)] = Source._from_raw(row.source)
            resources.append(Resource(row.pool, row.id, row.serial, row.size, row.kind, row.created, source))
        return cls(resources)

    def by_pool(self):
        """{pool name: (count, total size)}."""
        result = {}
        for resource in self.resources:
            count, size = result.get(resource.pool, (0, 0))
            result[resource.pool] = (count + 1, size + resource.size)
        return result

    def __repr__(self):
        return f"<Snapshot {self.count} resources, {self.total_size} bytes>"


def _innermost_line(resource):
    if resource.source is None or not len(resource.source):
        return None
    frame = resource.source[0]
    return (frame.filename, frame.lineno)


class SnapshotDiff:
    """What changed between two snapshots: ``new`` (alive in the second,
    not in the first), ``released`` (alive in the first, not in the second),
    ``size_diff`` and ``count_diff`` (second minus first, over all resources)."""

    __slots__ = ("new", "released", "size_diff", "count_diff")

    def __init__(self, first, second):
        before = {r._key for r in first.resources}
        after = {r._key for r in second.resources}
        self.new = [r for r in second.resources if r._key not in before]
        self.released = [r for r in first.resources if r._key not in after]
        self.size_diff = second.total_size - first.total_size
        self.count_diff = second.count - first.count

    def new_by_line(self):
        """The new resources grouped by the innermost frame of their source:
        [((filename, lineno) or None, count, size)], most bytes first. None
        groups resources without a source (detailed profiling was off)."""
        groups = {}
        for resource in self.new:
            line = _innermost_line(resource)
            count, size = groups.get(line, (0, 0))
            groups[line] = (count + 1, size + resource.size)
        rows = [(line, count, size) for line, (count, size) in groups.items()]
        rows.sort(key=lambda row: (-row[2], -row[1], row[0] or ("", 0)))
        return rows

    def __bool__(self):
        """True if anything was made or released in between."""
        return bool(self.new or self.released)

    def __repr__(self):
        return (f"<SnapshotDiff new={len(self.new)} released={len(self.released)} "
                f"size_diff={self.size_diff:+d} count_diff={self.count_diff:+d}>")


def _snapshot_type_check(first_snapshot, second_snapshot):
    for name, value in (("first_snapshot", first_snapshot), ("second_snapshot", second_snapshot)):
        if not isinstance(value, Snapshot):
            raise TypeError(f"{name} must be a heapscope.pools.Snapshot, not {type(value).__name__}")


def diff(*, first_snapshot, second_snapshot):
    """Computes the difference between two snapshots (keyword arguments only:
    the earlier one first). To confirm that an operation leaks nothing, take a
    snapshot before and after it and check that ``.new`` is empty."""
    _snapshot_type_check(first_snapshot, second_snapshot)
    return SnapshotDiff(first_snapshot, second_snapshot)


def _warn_late(alive, where):
    if alive:
        warnings.warn(f"detailed profiling enabled while {alive} resource{'s' if alive != 1 else ''} of {where} "
                      "already exist: those have no source (call enable_detailed_profiling() before the first "
                      "resource is made)", RuntimeWarning, stacklevel=3)


# Class hooks installed by track_class: (pool name, class) -> what to restore.
_class_hooks = {}
_MISSING = object()


class Pool(_heapscope._Pool):
    """A named pool of resources. ``Pool(name)`` and ``pool(name)`` give the
    same pool for the same name (pools are never destroyed).

    ``track(obj_or_id, size, kind=None)`` registers a resource and returns a
    ResourceHandle: for an object (it must support weak references), the
    resource is released when the object dies or by ``handle.release()``;
    for an int id, by the handle (a context manager) or ``pool.release(id)``.
    Registering an id (or object) that is alive replaces the old registration.
    ``size`` is an int, or a callable that takes the object.
    ``tracked(obj, size, kind=None)`` does the same and returns ``obj``.
    """

    def __eq__(self, other):
        return isinstance(other, _heapscope._Pool) and other.name == self.name

    def __hash__(self):
        return hash(("heapscope.pools.Pool", self.name))

    def __repr__(self):
        return f"<heapscope.pools.Pool {self.name!r} domain={self.domain} {self.count} resources, {self.total_size} bytes>"

    @property
    def count(self):
        """The number of live resources (exact at the moment it is read)."""
        return self._totals().count

    @property
    def total_size(self):
        """The bytes of the live resources."""
        return self._totals().bytes

    def make_snapshot(self):
        """A Snapshot of this pool's live resources."""
        return Snapshot._from_rows(self._collect())

    def enable_detailed_profiling(self):
        """Resources registered in this pool from now on keep their source
        (Python stack; native stack too from C/C++). Call it before the first
        resource is made: resources alive now have no source (a warning says so)."""
        was_on = self._detailed()
        self._set_detailed(True)
        if not was_on:  # a second call: the live resources may well have sources
            _warn_late(self.count, f"pool {self.name!r}")

    def disable_detailed_profiling(self):
        self._set_detailed(False)

    @property
    def detailed_profiling(self):
        return self._detailed()

    @staticmethod
    def diff(*, first_snapshot, second_snapshot):
        """The same as heapscope.pools.diff()."""
        return diff(first_snapshot=first_snapshot, second_snapshot=second_snapshot)

    def track_class(self, cls, size, kind=None):
        """Register every instance of ``cls`` (and of subclasses that inherit
        its ``__init__`` or call it) when its ``__init__`` returns, with
        ``size(instance)`` bytes (or an int) and ``kind`` (default: the
        class's qualified name); each is released when it is collected.

        Works for classes defined in Python, with or without ``__slots__``
        (without a ``__weakref__`` slot, by wrapping ``__del__``). Built-in
        and extension types (``numpy.ndarray``) cannot be changed: track
        their objects with ``track(obj, size=...)``, or track a Python
        subclass. Instances made without ``__init__`` (``copy.copy``,
        unpickling) are not seen."""
        if not isinstance(cls, type):
            raise TypeError(f"track_class() takes a class, not {type(cls).__name__}")
        if isinstance(size, bool) or not (callable(size) or isinstance(size, int)):
            raise TypeError(f"size must be an int or a callable taking an instance, not {type(size).__name__}")
        if isinstance(size, int) and size < 0:
            raise ValueError(f"size must be >= 0, not {size}")
        if kind is None:
            kind = cls.__qualname__
        elif not isinstance(kind, str):
            raise TypeError(f"kind must be a str or None, not {type(kind).__name__}")
        key = (self.name, cls)
        if key in _class_hooks:
            raise ValueError(f"{cls.__qualname__} is already tracked by pool {self.name!r}")
        # One pool per class: hooks stacked by two pools cannot be undone in
        # any order without restoring the wrong one.
        other = next((pool_name for pool_name, tracked in _class_hooks if tracked is cls), None)
        if other is not None:
            raise ValueError(f"{cls.__qualname__} is already tracked by pool {other!r}: untrack it there first")
        name = f"{cls.__module__}.{cls.__qualname__}"
        if not cls.__flags__ & _HEAP_TYPE or cls.__flags__ & _IMMUTABLE_TYPE:
            raise TypeError(f"cannot track every instance of {name}: it is a built-in or extension type, whose "
                            f"methods cannot be replaced; register each object with pool.track(obj, size=...) "
                            f"instead, or track a Python subclass")
        weakrefable = cls.__weakrefoffset__ != 0
        original_init = cls.__dict__.get("__init__", _MISSING)
        inherited_init = cls.__init__
        init_hook = self._init_hook(inherited_init, inherited_init is object.__init__, size, kind, weakrefable,
                                    cls.__qualname__)
        replaced = {"__init__": original_init}
        cls.__init__ = init_hook
        if not weakrefable:
            replaced["__del__"] = cls.__dict__.get("__del__", _MISSING)
            cls.__del__ = self._del_hook(getattr(cls, "__del__", None))
        _class_hooks[key] = replaced

    def untrack_class(self, cls):
        """Undo track_class(cls): instances made later are not registered.
        The ones alive stay registered until they die -- except for classes
        without weak references, whose release hook (``__del__``) goes with
        this call: their live instances then stay registered for good."""
        try:
            replaced = _class_hooks.pop((self.name, cls))
        except (KeyError, TypeError):
            raise ValueError(f"{getattr(cls, '__qualname__', cls)!r} is not tracked by pool {self.name!r}") from None
        for attribute, original in replaced.items():
            if original is not _MISSING:
                setattr(cls, attribute, original)
            elif attribute in cls.__dict__:
                delattr(cls, attribute)


_pools = {}


def pool(name):
    """The pool named ``name`` (a non-empty str), made on first use."""
    found = _pools.get(name) if isinstance(name, str) else None
    if found is None:
        found = Pool(name)
        _pools[name] = found
    return found


def all_pools():
    """Every pool made so far (from Python or C/C++), in creation order."""
    return [pool(name) for _, name in sorted(_heapscope._pools_names().items())]


def domain_names():
    """{domain: pool name} for every pool: what ``trace.domain`` means in a
    heapscope.tracemalloc snapshot."""
    return dict(_heapscope._pools_names())


def make_snapshot():
    """A Snapshot of the live resources of every pool."""
    return Snapshot._from_rows(_heapscope._pools_collect())


def enable_detailed_profiling():
    """Every pool, existing and future, keeps the source of resources
    registered from now on. Call it before the first resource is made:
    resources alive now have no source (a warning says so)."""
    # Resources alive in pools that were not keeping sources have none.
    alive = sum(each.count for each in map(Pool, _heapscope._pools_names().values())
                if not each.detailed_profiling)
    _heapscope._pools_set_detailed(True)
    _warn_late(alive, "the pools")


def disable_detailed_profiling():
    _heapscope._pools_set_detailed(False)
