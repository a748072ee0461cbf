"""What ``heapscope attach`` runs inside the target process (docs/attach.md).

Not imported: ``heapscope attach`` sends this file's source over the attach
channel, and the agent's thread in the target runs it, holding the GIL, with
``channel`` (the connected socket) in its globals, then calls ``main``. It
must therefore run before heapscope is known to be importable there, and on
any Python 3 the target may run (the version check comes first).

``main`` answers with one JSON line: ``{"ok": ...}`` or ``{"error": message,
"kind": kind}``; ``--live`` adds a ``{"serving": port}`` line before the
capture starts (``Tracker.__enter__`` then waits for the viewer). Nothing is
printed in the target, and nothing raised escapes into it.

Once the capture runs, the same thread stays, untraced, blocked on the
process's control socket (``control_address(pid)``, an abstract Unix socket
that only this user may use) until ``heapscope detach`` asks it to end the
capture, or --duration passes. So ending a capture needs no debugger, and
allocates nothing that the capture would count as the program's.
"""

import json
import os
import socket
import struct
import sys

SUPPORTED = ((3, 9), (3, 13))


def control_address(pid):
    """The abstract Unix socket (no file) where the capture of *pid* takes orders."""
    return f"\0heapscope-attach-{pid}"


def main(channel, request):
    try:
        reply, then = _handle(channel, request)
    except BaseException as error:  # noqa: B036 (nothing may escape into the program)
        reply, then = {"error": f"{type(error).__name__}: {error}", "kind": "internal"}, None
    send_line(channel, reply)
    channel.close()
    if then is not None:
        then()


def send_line(sock, message):
    """One JSON line on *sock*; False if the other end has gone."""
    try:
        sock.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        return False
    return True


def _handle(channel, request):
    version = sys.version_info[:2]
    if sys.implementation.name != "cpython" or not SUPPORTED[0] <= version <= SUPPORTED[1]:
        return {"error": f"the process runs {sys.implementation.name} {sys.version.split()[0]}: heapscope "
                         f"supports CPython {SUPPORTED[0][0]}.{SUPPORTED[0][1]} to "
                         f"{SUPPORTED[1][0]}.{SUPPORTED[1][1]}", "kind": "version"}, None
    if "threading" not in sys.modules:
        _import_threading_for_the_main_thread()
    try:
        import heapscope
        from heapscope import _heapscope, tracker
    except ImportError as error:
        return {"error": f"heapscope cannot be imported in the process ({error}); install heapscope in the "
                         f"environment it runs ({sys.executable}, sys.prefix {sys.prefix})", "kind": "import"}, None
    return _attach(heapscope, _heapscope, tracker, channel, request)


def _import_threading_for_the_main_thread():
    """Imports threading (heapscope needs it) on behalf of a program that has
    not. Before 3.13, threading takes the thread that first imports it for
    the main thread, and the interpreter's exit then waits for that thread:
    here, this one, which stays until detach. So the program's main thread is
    made threading's main thread again (the only other thread running Python
    is it); failing that, at least the exit does not wait for this thread."""
    import threading

    if hasattr(threading, "_get_main_thread_ident"):  # 3.13+: threading finds the main thread itself...
        if hasattr(threading._main_thread, "_native_id"):
            threading._main_thread._native_id = os.getpid()  # ...but takes this thread's native id
        return
    me = threading.get_ident()
    main = threading._main_thread
    if main.ident != me:
        return
    others = [ident for ident in sys._current_frames() if ident != me]
    with threading._shutdown_locks_lock:
        threading._shutdown_locks.discard(main._tstate_lock)
    if len(others) == 1:
        # Held until the exit's threading._shutdown releases it, as the
        # main thread's own lock would be (join() and is_alive() wait on it).
        running = threading.Lock()
        running.acquire()
        with threading._active_limbo_lock:
            threading._active.pop(me, None)
            main._ident = others[0]
            main._tstate_lock = running
            if hasattr(main, "_native_id"):
                main._native_id = os.getpid()  # the main thread's native id is the process id
            threading._active[others[0]] = main


def _attach(heapscope, native, tracker, channel, request):
    attached = getattr(heapscope, "_attached", None)
    if attached is not None:
        return {"error": f"it is already being profiled by heapscope attach ({attached['where']}); end that "
                         f"with: heapscope detach {os.getpid()}", "kind": "busy"}, None
    try:
        native.check_can_start("tracker")
    except RuntimeError as error:
        return {"error": f"it is already being profiled: {error}", "kind": "busy"}, None

    if request["port"] is not None:
        destination = tracker.SocketDestination(server_port=request["port"])
        where = f"served on port {request['port']}"
    else:
        destination = tracker.FileDestination(request["output"], overwrite=request["force"])
        where = f"writing {request['output']}"
    capture = tracker.Tracker(
        destination=destination,
        native_traces=request["native"],
        trace_python_allocators=request["trace_python_allocators"],
        file_format=tracker.FileFormat.AGGREGATED_ALLOCATIONS if request["aggregate"]
        else tracker.FileFormat.ALL_ALLOCATIONS,
        sampling=request["sample"],
    )
    capture._warn_of_viewer = False  # the program's stderr is not ours
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        control.bind(control_address(os.getpid()))
    except OSError as error:
        control.close()
        return {"error": f"its heapscope attach control socket is taken ({error.strerror}): is another "
                         f"heapscope attach starting?", "kind": "busy"}, None
    control.listen(4)
    # Made now: nothing that ends the capture may allocate before it stops (tracker.py).
    endings = {why: [("ended_by", why)] for why in ("detach", "duration", "exit")}
    state = {"tracker": capture, "where": where, "output": request["output"], "control": control,
             "endings": endings}
    # From here on this thread's allocations are heapscope's own: the
    # capture counts only the program's.
    try:
        native.untrace_this_thread()
        if request["port"] is not None:
            send_line(channel, {"serving": request["port"]})
        capture.__enter__()
    except BaseException:
        control.close()  # the name is free again: a later attach may bind it
        raise
    if capture.viewer_left:
        control.close()
        return {"error": "the live viewer left before the capture began", "kind": "viewer"}, None
    heapscope._attached = state
    if not getattr(heapscope, "_attach_exit_registered", False):
        import atexit

        atexit.register(_end_attached, heapscope, "exit")  # the capture is finished when the program ends
        heapscope._attach_exit_registered = True
    return {"ok": {"pid": os.getpid(), "where": where}}, lambda: _take_orders(heapscope, state, request["duration"])


def _take_orders(heapscope, state, duration):
    """Waits on the control socket for heapscope detach (a process of this
    user, or root), or until *duration* seconds have passed; ends the capture."""
    import time

    control = state["control"]
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while heapscope._attached is state:
            control.settimeout(None if deadline is None else max(0.0, deadline - time.monotonic()))
            try:
                connection, _ = control.accept()
            except socket.timeout:
                _end_attached(heapscope, "duration")
                return
            with connection:
                credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                _, uid, _ = struct.unpack("3i", credentials)
                if uid not in (0, os.getuid()):
                    continue
                connection.settimeout(10)
                try:
                    order = connection.makefile("rb").readline()
                except OSError:
                    continue
                if order.strip() != b"detach":
                    send_line(connection, {"error": "unknown order", "kind": "internal"})
                    continue
                try:
                    ended = _end_attached(heapscope, "detach")
                except Exception as error:  # noqa: B902 (said to heapscope detach, not raised in the program)
                    send_line(connection, {"error": f"ending the capture failed: {type(error).__name__}: {error}",
                                           "kind": "internal"})
                    return
                if ended is None:
                    send_line(connection, {"error": "no capture started by heapscope attach runs in the process",
                                           "kind": "not-attached"})
                else:
                    send_line(connection, {"ok": ended})
                return
    except OSError:
        pass  # the control socket was closed: the capture ended at exit
    finally:
        control.close()


def _end_attached(heapscope, why):
    """Ends the capture heapscope attach started, if it still runs; what it
    wrote, or None. Runs in the target (detach, --duration, atexit)."""
    state = getattr(heapscope, "_attached", None)
    if state is None:
        return None
    heapscope._attached = None
    capture = state["tracker"]
    capture._end_metadata = state["endings"][why]
    try:
        capture.__exit__(None, None, None)
    except OSError:
        if state["output"] is not None:
            raise
        # --live: the viewer has gone (the view ended first), so the end could not be sent; the capture is over.
    return {"output": state["output"], "totals": capture.totals or {}, "ended_by": why}
