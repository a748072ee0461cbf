"""``heapscope.Tracker``: record every allocation of a running program into a capture file.

Follows memray's API page (``memray.Tracker``, ``FileDestination``,
``SocketDestination``, ``FileFormat``): same arguments, same rules, same
errors, all raised before tracking starts. One deliberate difference: an
``AGGREGATED_ALLOCATIONS`` capture of a process that is killed still holds a
usable profile as of its last checkpoint (taken at least every second).

The capture itself is written by the engine (``_heapscope.capture_start``);
this module only checks arguments, opens the destination and hands the
descriptor over.
"""

import enum
import operator
import os
import socket
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from typing import Union

from heapscope import _heapscope
from heapscope._private_files import open_private
from heapscope._sampling import describe_sampling

__all__ = ["Tracker", "FileDestination", "SocketDestination", "FileFormat", "Destination"]


class FileFormat(enum.IntEnum):
    """The capture file formats (memray's values)."""

    #: Every allocation and deallocation is recorded (the default). The only
    #: format that supports temporary allocations, stats and snapshot_at.
    ALL_ALLOCATIONS = 0
    #: Per location: count and bytes outstanding at the high-water mark, and
    #: count and bytes leaked at the end. Much smaller; checkpointed at least
    #: every second, so a killed process still leaves a usable profile.
    AGGREGATED_ALLOCATIONS = 1


@dataclass(frozen=True)
class Destination:
    """Where a Tracker sends its capture."""


@dataclass(frozen=True)
class FileDestination(Destination):
    """A capture file at *path*.

    Args:
        path: the file to write.
        overwrite: replace an existing file instead of raising.
        compress_on_exit: compress the file's chunks (zstd). With False they
            are stored raw: larger, a little cheaper to write.
    """

    path: Union[str, "os.PathLike[str]"]
    overwrite: bool = False
    compress_on_exit: bool = True


@dataclass(frozen=True)
class SocketDestination(Destination):
    """Serve the capture on a TCP port: ``Tracker.__enter__`` listens on
    *address*:*server_port* and blocks until one reader (``heapscope live
    PORT``) connects."""

    server_port: int
    address: str = "127.0.0.1"


# One lock makes "is a Tracker active?" and "start one" a single step.
_tracker_lock = threading.Lock()
_active_tracker = None  # the Tracker whose capture runs in this process
_fork_handler_registered = False


def _flag(name, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be a bool, not {type(value).__name__}")


def _file_format(value):
    if isinstance(value, FileFormat):
        return value
    try:
        number = operator.index(value)  # memray's FileFormat (an IntEnum) has the same values
    except TypeError:
        raise TypeError(f"file_format must be a FileFormat, not {type(value).__name__}") from None
    try:
        return FileFormat(number)
    except ValueError:
        raise ValueError(f"file_format must be FileFormat.ALL_ALLOCATIONS or FileFormat.AGGREGATED_ALLOCATIONS, "
                         f"not {value!r}") from None


def _is_dev_null(path):
    try:
        return os.path.samefile(path, os.devnull)
    except OSError:
        return False


def _configured_allocator_name():
    """CPython's name for its allocators ("pymalloc_debug"...), from the
    configuration: for when a hook hides CPython's own answer."""
    chosen = os.environ.get("PYTHONMALLOC", "") if not sys.flags.ignore_environment else ""
    debug = chosen.endswith("_debug") or sys.flags.dev_mode or (chosen == "debug")
    base = chosen[:-len("_debug")] if chosen.endswith("_debug") else chosen
    if base in ("", "default", "debug"):
        base = "pymalloc" if sysconfig.get_config_var("WITH_PYMALLOC") else "malloc"
    return f"{base}_debug" if debug else base


def _python_allocator_name():
    """The allocator behind Python's object domain, named as memray names it:
    CPython's own answer while no hook hides it (sysconfig, asked otherwise,
    costs a millisecond to import), else from the configuration."""
    base, _, debug = (_heapscope.current_allocator_name() or _configured_allocator_name()).partition("_")
    if base not in ("pymalloc", "malloc", "mimalloc"):
        return "unknown"
    return f"{base} debug" if debug == "debug" else base


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class Tracker:
    """Context manager that records the process's allocations while its
    ``with`` block runs::

        with heapscope.Tracker("capture.hscap"):
            run_the_code()

    Only one Tracker can be active in a process at a time, and a Tracker can
    be entered once. Every thread's allocations are recorded while it is
    active.

    Args:
        file_name: the capture file to write (str or path-like); the only
            positional argument. Exactly one of *file_name* and *destination*.
        destination: a FileDestination or a SocketDestination.
        native_traces: also record the native (C/C++) frames of each
            allocation; symbolized when a report is made.
        trace_python_allocators: record each block from Python's own
            allocators (pymalloc), not only the arenas pymalloc maps.
        follow_fork: a forked child continues into its own capture file,
            ``<path>.<child pid>``. Needs a file destination.
        memory_interval_ms: how often the resident set size and heap size
            are recorded, in milliseconds.
        file_format: FileFormat.ALL_ALLOCATIONS (default) or
            FileFormat.AGGREGATED_ALLOCATIONS (needs a file destination).
        checkpoint_interval_ms: AGGREGATED_ALLOCATIONS: how often the
            profile so far is written (default 1000): a process killed
            (SIGKILL, the OOM killer) loses at most this much.
        sampling: None (default: every allocation), True (Poisson byte
            sampling, one sample per 64 KiB on average), an int (that mean
            interval in bytes) or a mapping {size upper bound: probability}
            (heapprof's size ranges). A sampled capture holds unbiased
            estimates of bytes and counts; docs/sampling.md.
        track_object_lifetimes: record every Python object made while the
            Tracker is active, with its stacks, and its destruction; the
            ones still alive at the end are get_surviving_objects()
            (memray's option; docs/capture.md). Python 3.13+: RuntimeError
            before it.
    """

    def __init__(self, file_name=None, *, destination=None, native_traces=False, trace_python_allocators=False,
                 follow_fork=False, memory_interval_ms=10, file_format=FileFormat.ALL_ALLOCATIONS, sampling=None,
                 checkpoint_interval_ms=1000, track_object_lifetimes=False):
        if (file_name, destination).count(None) != 1:
            raise TypeError("Exactly one of 'file_name' or 'destination' argument must be specified")
        if file_name is not None:
            destination = FileDestination(path=os.fspath(file_name))  # TypeError for a non-path
        elif not isinstance(destination, (FileDestination, SocketDestination)):
            raise TypeError("destination must be a SocketDestination or FileDestination")
        self._native_traces = _flag("native_traces", native_traces)
        self._trace_python_allocators = _flag("trace_python_allocators", trace_python_allocators)
        self._follow_fork = _flag("follow_fork", follow_fork)
        self._track_object_lifetimes = _flag("track_object_lifetimes", track_object_lifetimes)
        if self._track_object_lifetimes and sys.version_info < (3, 13):
            # 3.9-3.12 tell no tool but their own tracemalloc of a new object
            # (docs/capture.md, "Object lifetimes", has the evidence).
            raise RuntimeError(f"track_object_lifetimes needs Python 3.13 or later (its reference tracer, "
                               f"PyRefTracer_SetTracer, is what reports every object made and destroyed). "
                               f"Current version: {'.'.join(map(str, sys.version_info[:3]))}")
        if isinstance(memory_interval_ms, bool) or not isinstance(memory_interval_ms, int):
            raise TypeError(f"memory_interval_ms must be an int, not {type(memory_interval_ms).__name__}")
        if not 1 <= memory_interval_ms <= 2 ** 31 - 1:
            raise ValueError(f"memory_interval_ms must be at least 1, got {memory_interval_ms}")
        self._memory_interval_ms = memory_interval_ms
        if isinstance(checkpoint_interval_ms, bool) or not isinstance(checkpoint_interval_ms, int):
            raise TypeError(f"checkpoint_interval_ms must be an int, not {type(checkpoint_interval_ms).__name__}")
        if not 1 <= checkpoint_interval_ms <= 2 ** 31 - 1:
            raise ValueError(f"checkpoint_interval_ms must be at least 1, got {checkpoint_interval_ms}")
        self._checkpoint_interval_ms = checkpoint_interval_ms
        self._file_format = _file_format(file_format)
        self._sampling = describe_sampling(sampling)

        if isinstance(destination, FileDestination):
            path = os.fspath(destination.path)
            if not isinstance(path, str):
                raise TypeError(f"the capture path must be a str or path-like, not {type(path).__name__}")
            self._overwrite = _flag("overwrite", destination.overwrite) or _is_dev_null(path)
            if not self._overwrite and os.path.lexists(path):
                raise FileExistsError(f"Output file {path} already exists. heapscope can overwrite it with "
                                      f"the --force CLI argument or the overwrite=True API argument.")
            self._compress = _flag("compress_on_exit", destination.compress_on_exit)
        else:
            if self._follow_fork:
                raise RuntimeError("follow_fork requires an output file")
            if self._file_format != FileFormat.ALL_ALLOCATIONS:
                raise RuntimeError("AGGREGATED_ALLOCATIONS requires an output file")
            port = destination.server_port
            if isinstance(port, bool) or not isinstance(port, int):
                raise TypeError(f"server_port must be an int, not {type(port).__name__}")
            if not 1 <= port <= 65535:
                raise ValueError(f"server_port must be in 1..65535, got {port}")
            if not isinstance(destination.address, str):
                raise TypeError(f"address must be a str, not {type(destination.address).__name__}")
            self._compress = True
        self._destination = destination
        self._used = False
        self._door = "tracker"  # the front door this Tracker serves (hooks/session.h)
        self._owner_pid = None  # the process whose capture this Tracker ends
        self._start_metadata = None
        self._command_line = None  # heapscope run names the program it runs, not itself
        self._launcher = None  # heapscope run: the script that started heapscope (a console script)
        self._end_metadata = []  # heapscope run: how the program ended (exit_code)
        # More (key, value) text pairs to write at the start: a Dask worker's
        # name and address, a child's parent_pid (heapscope.reports.merge names processes by them).
        self._extra_metadata = []
        self.totals = None  # what capture_stop reported: allocations, deallocations, peak_memory, bytes_written
        self._thread_patch = None  # what _intercept_thread_names changed, for __exit__ to restore
        self.viewer_left = False  # SocketDestination: the viewer disconnected before the end
        self._warn_of_viewer = True  # heapscope attach: the program's stderr is not ours to write to
        self._surviving_objects = None  # track_object_lifetimes: what capture_stop handed back

    @property
    def destination(self):
        return self._destination

    def _metadata(self, start_time):
        return [
            ("command_line", self._command_line or " ".join(sys.argv)),
            ("pid", str(os.getpid())),
            ("python_version", sys.version.split()[0]),
            ("start_time", repr(start_time)),
            ("memory_interval_ms", str(self._memory_interval_ms)),
            ("python_allocator", _python_allocator_name()),
            ("main_thread_native_id", str(getattr(threading.main_thread(), "native_id", 0) or 0)),
            # Frames from this directory at the outer end of a stack are
            # heapscope's own (`heapscope run`): reports leave them out.
            ("heapscope_package", _PACKAGE_DIR),
            ("heapscope_launcher", self._launcher or ""),
            ("host", _host_name()),
        ] + list(self._extra_metadata)

    def _open_file(self, path, overwrite):
        if _is_dev_null(path):
            try:
                return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError as error:
                raise _os_error(error, f"Could not create output file {path}: {error.strerror}") from None
        try:
            return open_private(path, overwrite)
        except FileExistsError:
            raise FileExistsError(f"Output file {path} already exists. heapscope can overwrite it with "
                                  f"the --force CLI argument or the overwrite=True API argument.") from None
        except OSError as error:
            raise _os_error(error, f"Could not create output file {path}: {error.strerror}") from None

    def _serve(self, destination):
        """Listens and waits for one viewer (``heapscope live``), which
        greets with LIVE_HELLO: the connected socket's descriptor and the
        listener's (the writer turns away any second viewer on it). A client
        that says anything else, or nothing within a few seconds, is sent an
        error line and let go; the wait goes on."""
        try:
            listener = socket.create_server((destination.address, destination.server_port), reuse_port=False)
        except OSError as error:
            raise _os_error(error, f"Could not listen on {destination.address}:{destination.server_port}: "
                                   f"{error.strerror}") from None
        try:
            while True:
                connection, _ = listener.accept()  # Ctrl-C interrupts it (KeyboardInterrupt)
                if _greeted(connection):
                    break
        except BaseException:
            listener.close()
            raise
        connection.setblocking(True)
        listener.setblocking(False)
        return connection.detach(), listener.detach()

    def __enter__(self):
        global _active_tracker

        # Taken and released by calls, not `with`: leaving a `with` calls the
        # lock's __exit__ with an argument tuple, an object the capture would
        # see made (track_object_lifetimes) after it started.
        _tracker_lock.acquire()
        try:
            if self._used:
                raise RuntimeError("This Tracker was already used: create a new Tracker to track again")
            _heapscope.check_can_start(self._door)  # before the file is made
            destination = self._destination
            created = None
            listener_fd = -1
            if isinstance(destination, FileDestination):
                path = os.fspath(destination.path)
                fd = self._open_file(path, self._overwrite)
                created = None if _is_dev_null(path) else path
            else:
                fd, listener_fd = self._serve(destination)
            start_time = time.time()
            metadata = self._metadata(start_time)
            _register_fork_handler()  # every forked child must end or continue its copy of the capture
            pid = os.getpid()  # made now: from capture_start on, whatever this frame allocates is recorded
            # Threads are named by their threading names, and follow renames.
            thread_names = [(thread.ident, thread.name) for thread in threading.enumerate()
                            if thread.ident is not None and isinstance(thread.name, str)]
            self._thread_patch = _intercept_thread_names()
            try:
                # Owns fd from here on, whatever happens.
                _heapscope.capture_start(
                    fd,
                    aggregated=self._file_format == FileFormat.AGGREGATED_ALLOCATIONS,
                    native_traces=self._native_traces,
                    trace_python_allocators=self._trace_python_allocators,
                    memory_interval_ms=self._memory_interval_ms,
                    checkpoint_interval_ms=self._checkpoint_interval_ms,
                    compress=self._compress,
                    metadata=metadata,
                    sampling=self._sampling,
                    door=self._door,
                    # The stacks of this thread start at the frame that
                    # called __enter__ (memray's rule): its callers are cut.
                    entry_depth=1,
                    thread_names=thread_names,
                    listener_fd=listener_fd,
                    track_object_lifetimes=self._track_object_lifetimes,
                )
            except (BrokenPipeError, ConnectionResetError) as error:
                if created is not None or not isinstance(destination, SocketDestination):
                    raise
                # The viewer left before the capture began: the program goes on, untracked.
                self._used = True
                self.viewer_left = True
                if self._warn_of_viewer:
                    _warn_viewer_left(error)
                _restore_thread_names(self._thread_patch)
                return self
            except BaseException:
                _restore_thread_names(self._thread_patch)
                if created is not None and not self._overwrite:
                    _remove_quietly(created)  # we made it: leave nothing behind
                raise
            # Nothing below allocates (the attributes exist already).
            self._used = True
            self._owner_pid = pid
            self._start_metadata = metadata
            _active_tracker = self
        finally:
            _tracker_lock.release()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        global _active_tracker

        # Nothing may allocate before the engine stops: a block made here
        # would be recorded as the program's. So capture_stop itself checks
        # that this process owns the capture (a forked child whose part
        # ended gets None) and stamps the end time, and the lock is taken
        # by calls, not `with` (which makes bound methods: two blocks).
        _tracker_lock.acquire()
        try:
            if _active_tracker is not self:
                return False
            _active_tracker = None
            try:
                totals = _heapscope.capture_stop(self._owner_pid, self._end_metadata)
                if totals is not None:
                    surviving = totals.pop("surviving_objects")
                    if self._track_object_lifetimes:
                        self._surviving_objects = tuple(surviving)
                    self.totals = totals
            except (BrokenPipeError, ConnectionResetError) as error:
                if not isinstance(self._destination, SocketDestination):
                    raise
                # The viewer left: the program went on, unrecorded from then.
                self.viewer_left = True
                if self._warn_of_viewer:
                    _warn_viewer_left(error)
            finally:
                _restore_thread_names(self._thread_patch)
        finally:
            _tracker_lock.release()
        return False


    def get_surviving_objects(self):
        """The Python objects made while this Tracker was active and still
        alive when it ended (memray's): a tuple, with references of its own.

        Raises:
            RuntimeError: track_object_lifetimes was not enabled, or the
                Tracker has not ended (or never started, or failed).
        """
        if not self._track_object_lifetimes:
            raise RuntimeError("track_object_lifetimes=True was not provided at Tracker construction")
        if self._surviving_objects is None:
            raise RuntimeError("Tracking was never started or has not finished yet or failed.")
        return self._surviving_objects


class _ThreadNameInterceptor:
    """Tells the capture each threading.Thread's name, and every rename, as
    memray does: while a Tracker is active, threading.Thread's ``_name`` and
    ``_ident`` are these descriptors, and once a thread has both, each
    assignment to either names the thread (by its ident) in the capture."""

    def __init__(self, attr):
        self._attr = attr

    def __set__(self, instance, value):
        instance.__dict__[self._attr] = value
        ident = instance.__dict__.get("_ident")
        name = instance.__dict__.get("_name")
        if ident is not None and name is not None:
            _heapscope.capture_thread_name(ident, name)


_THREAD_ATTRS = ("_name", "_ident")


def _intercept_thread_names():
    """Installs the interceptors (none if another tool has its own there);
    returns what to restore. Python 3.14+ also copies a thread's name to
    the OS (Thread._set_os_name), which the capture sees cut to 15 bytes:
    the full name is given again after it."""
    thread = threading.Thread
    installed = [attr for attr in _THREAD_ATTRS if attr not in thread.__dict__]
    for attr in installed:
        setattr(thread, attr, _ThreadNameInterceptor(attr))
    set_os_name = thread.__dict__.get("_set_os_name")
    if set_os_name is not None:
        def _set_os_name(self):
            set_os_name(self)
            if self.__dict__.get("_ident") is not None:
                _heapscope.capture_thread_name(self.__dict__["_ident"], self.__dict__.get("_name"))
        thread._set_os_name = _set_os_name
    return installed, set_os_name


def _restore_thread_names(saved):
    installed, set_os_name = saved
    thread = threading.Thread
    for attr in installed:
        try:
            delattr(thread, attr)
        except AttributeError:
            pass
    if set_os_name is not None:
        thread._set_os_name = set_os_name


#: What ``heapscope live`` sends first: a port that serves a capture streams
#: it only to a client that says this.
LIVE_HELLO = b"HEAPSCOPE-LIVE 1\n"
#: What a second viewer is sent (by the capture's writer) before it is let go.
LIVE_BUSY = b"HEAPSCOPE-BUSY\n"
_HELLO_TIMEOUT_S = 5.0


def _warn_viewer_left(error):
    print(f"heapscope: warning: the live viewer disconnected ({os.strerror(error.errno)}); the program went on "
          f"without being recorded from then", file=sys.stderr, flush=True)


def _greeted(connection):
    """True if the client sent LIVE_HELLO; otherwise it is sent why not and closed."""
    connection.settimeout(_HELLO_TIMEOUT_S)
    received = b""
    try:
        while len(received) < len(LIVE_HELLO) and LIVE_HELLO.startswith(received):
            data = connection.recv(len(LIVE_HELLO) - len(received))
            if not data:
                break
            received += data
    except OSError:  # silent past the timeout, or reset
        pass
    if received == LIVE_HELLO:
        return True
    try:
        connection.sendall(b"heapscope: error: this port serves a heapscope capture; "
                           b"view it with: heapscope live PORT\n")
        # What the client sent past the greeting is read, briefly, before the
        # close: unread bytes would turn it into a reset that can lose the line.
        connection.shutdown(socket.SHUT_WR)
        connection.settimeout(0.5)
        for _ in range(64):
            if not connection.recv(1 << 16):
                break
    except OSError:
        pass
    connection.close()
    return False


if sys.version_info < (3, 11):
    # 3.9 and 3.10 allocate a frame object on a function's first call and keep
    # it for the next (the code object's zombie frame): __exit__ runs once now
    # (it returns at once for a Tracker that is not active), so that the frame
    # of the real call is not a block of the program's in its capture.
    Tracker.__exit__(object.__new__(Tracker), None, None, None)


def _os_error(error, message):
    """The same kind of OSError, with the same errno, and a message that reads as one sentence."""
    clear = type(error)(message)
    clear.errno = error.errno  # (strerror stays unset: str() is then the message alone)
    return clear


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _register_fork_handler():
    global _fork_handler_registered
    if not _fork_handler_registered:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_handler_registered = True


def _host_name():
    try:
        return socket.gethostname()
    except OSError:
        return ""


def _after_fork_in_child():
    """In a forked child: continue into ``<path>.<pid>`` (follow_fork), or end
    the child's part quietly. Calls into the engine; may allocate."""
    global _active_tracker, _tracker_lock

    _tracker_lock = threading.Lock()  # another thread may have held it across fork()
    tracker = _active_tracker
    if tracker is None or not _heapscope.capture_active():
        return
    if not tracker._follow_fork:
        _heapscope.capture_fork_child(None, [])
        _restore_thread_names(tracker._thread_patch)
        _active_tracker = None  # the child may start a Tracker of its own
        return
    path = f"{os.fspath(tracker._destination.path)}.{os.getpid()}"
    try:
        fd = open_private(path, True)
    except OSError as error:
        print(f"heapscope: cannot follow the fork into {path}: {error.strerror}", file=sys.stderr)
        _heapscope.capture_fork_child(None, [])
        _restore_thread_names(tracker._thread_patch)
        _active_tracker = None
        return
    metadata = [(key, value) for key, value in tracker._start_metadata if key not in ("pid", "start_time")]
    metadata += [("pid", str(os.getpid())), ("start_time", repr(time.time())), ("parent_pid", str(os.getppid()))]
    _heapscope.capture_fork_child(fd, metadata)
    tracker._owner_pid = os.getpid()
    tracker._start_metadata = metadata
