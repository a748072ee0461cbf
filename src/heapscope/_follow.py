"""Following child processes that do not fork from a traced one.

``heapscope run --follow-fork`` follows forked children in the process
(Tracker(follow_fork=True)). Children that start a new interpreter are
followed through their environment: the parent sets ``HEAPSCOPE_FOLLOW``
(what to record, and the parent's capture path) and puts
``heapscope/_follow_site`` first on ``PYTHONPATH``, whose
``sitecustomize`` calls :func:`start_in_child` when the child's interpreter
starts (then runs any other ``sitecustomize`` on the path). A child whose
interpreter is the parent's (the same ``sys.executable``) then starts a
Tracker into ``<parent capture>.<pid>`` and stops it at exit; its own
children follow it the same way, into ``<its capture>.<pid>``.

Which children: with --follow-fork, multiprocessing's children started by
the spawn and forkserver methods (the forkserver's capture follows the
workers it forks); with --follow-exec as well, every process running the
same Python (``subprocess.run([sys.executable, ...])``). Not followed: other
Pythons, interpreters started with ``-E`` or ``-I`` (they ignore the
environment), and multiprocessing's resource tracker.
"""

import json
import os
import sys

ENVIRONMENT_VARIABLE = "HEAPSCOPE_FOLLOW"
SITE_DIRECTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_follow_site")

# multiprocessing's children run `python -c "from multiprocessing.<module> import ..."`.
_FOLLOWED_MULTIPROCESSING = ("from multiprocessing.spawn import", "from multiprocessing.forkserver import")


def follow_children(path, tracker, follow_exec):
    """In a traced process: children started from now on (see the module's
    help) record into ``<path>.<pid>``, as *tracker* records."""
    settings = {
        "path": os.path.abspath(path),
        "exec": bool(follow_exec),
        "python": os.path.realpath(sys.executable),
        "native_traces": tracker._native_traces,
        "trace_python_allocators": tracker._trace_python_allocators,
        "memory_interval_ms": tracker._memory_interval_ms,
        "file_format": tracker._file_format.name,
        "sampling": tracker._sampling,
    }
    os.environ[ENVIRONMENT_VARIABLE] = json.dumps(settings)
    paths = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    if SITE_DIRECTORY not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([SITE_DIRECTORY] + paths)


def _command_line():
    try:
        with open("/proc/self/cmdline", "rb") as source:
            raw = source.read()
    except OSError:
        return list(sys.argv)
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0") if part]


def _is_followed(arguments, follow_exec):
    code = arguments[arguments.index("-c") + 1] if "-c" in arguments[:-1] else None
    if code is not None and code.startswith(_FOLLOWED_MULTIPROCESSING):
        return True
    if code is not None and code.startswith("from multiprocessing."):
        return False  # the resource tracker: multiprocessing's own helper
    return follow_exec


_tracker = None


def start_in_child():
    """At interpreter start (sitecustomize): start a Tracker into
    ``<parent capture>.<pid>`` if this process is to be followed. Problems
    are reported on stderr; the program runs on, untraced."""
    global _tracker

    raw = os.environ.get(ENVIRONMENT_VARIABLE)
    if not raw or _tracker is not None:
        return
    try:
        settings = json.loads(raw)
        if os.path.realpath(sys.executable) != settings["python"]:
            return
        arguments = _command_line()
        if not _is_followed(arguments, settings["exec"]):
            return
        from heapscope._sampling import parse_sampling
        from heapscope.tracker import FileFormat, Tracker

        path = f"{settings['path']}.{os.getpid()}"
        tracker = Tracker(path, native_traces=settings["native_traces"],
                          trace_python_allocators=settings["trace_python_allocators"], follow_fork=True,
                          memory_interval_ms=settings["memory_interval_ms"],
                          file_format=FileFormat[settings["file_format"]],
                          sampling=parse_sampling(settings["sampling"]))
        tracker._command_line = " ".join(arguments)
        tracker._extra_metadata = [("parent_pid", str(os.getppid()))]
        tracker.__enter__()
    except Exception as error:  # never stop the child: say why it is not followed
        print(f"heapscope: not following process {os.getpid()}: {error}", file=sys.stderr)
        return
    _tracker = tracker
    settings["path"] = path
    os.environ[ENVIRONMENT_VARIABLE] = json.dumps(settings)  # this child's children follow it
    import atexit

    atexit.register(_stop)


def _stop():
    global _tracker

    tracker, _tracker = _tracker, None
    if tracker is not None and tracker._owner_pid == os.getpid():
        tracker.__exit__(None, None, None)
