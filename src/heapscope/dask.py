"""Profile a Dask cluster: every worker's memory, attributed to tasks.

::

    with heapscope.dask.profile(client, output="profiles") as result:
        client.compute(graph).result()
    # profiles/<worker>.bin: each worker's capture; result.path: all of them merged
    # heapscope flamegraph profiles/merged.hscap

:func:`profile` registers a worker plugin that starts a
``heapscope.Tracker`` in each worker process (sampled by default, so that
it can stay on in production), and in every worker that joins while the
block runs. Each task runs under a label naming its task prefix
(``distributed.utils.key_split`` of its key), so that in the merged report
every stack of a task starts with the worker's frame (``[process] pid N:
... (host, worker NAME at ADDRESS)``), then ``[label] <prefix>``, then the
task's own frames. On exit each worker stops its Tracker and sends its
capture back over Dask's own communication (``client.run`` returns the
bytes: no shared filesystem is needed); the client writes
``<output>/<worker name>.bin`` each and ``<output>/merged.hscap``
(``heapscope merge``), and ``result.peaks`` says each worker's peak and
which task prefixes held memory at it.

A worker that dies during the block cannot send its capture, but its
capture stays readable on its host (the capture's journal keeps what it
recorded until the kill; ``heapscope summary`` says it was not finished).
Workers write their captures as ``<name>@<host>-<pid>.bin`` under
``<run_directory>/heapscope-dask-<run id>/`` on their own host
(*run_directory*: the workers' temp dir by default). After the live
workers have sent theirs, every worker still alive, then every nanny, is
asked over Dask's comms (``client.run``) for the captures in its host's run
directory whose writer process is dead; each sends them (bytes) and removes
them. A capture whose writer is alive (another worker of that host, still
running) is never taken. So a killed worker's capture comes back from any
host where a process of the cluster is left: the worker that the nanny
started in its place, its nanny (reached through that worker), or another
worker; the client writes it
into *output* and lists it in ``result.killed``, and it is merged with the
others. When every process of a host is gone (the machine lost, or workers
without nannies that all died), nothing there can answer: the captures stay
in that host's run directory, to copy and pass to any report. The client
looks in its own run directory the same way, which covers that case when
the lost workers ran on the client's own host (a ``LocalCluster``).

:func:`heapscope_workers` takes the arguments of
``distributed.diagnostics.memray.memray_workers``, for memray's users.

This module imports without ``distributed``; its functions raise an
ImportError saying so when it is missing.
"""

import contextlib
import glob
import os
import pathlib
import socket
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple
from urllib.parse import quote

__all__ = ["profile", "heapscope_workers", "ProfileResult", "WorkerPeak"]

_PLUGIN_PREFIX = "heapscope-"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError("heapscope.dask needs Dask's distributed scheduler, which is not installed: "
                          "pip install distributed") from None
    return distributed


@dataclass
class WorkerPeak:
    """A worker's high-water mark: its bytes, and the bytes of each task
    prefix (label) held at it; "(outside tasks)" is the rest."""

    worker: str
    bytes: int
    tasks: Dict[str, int] = field(default_factory=dict)


@dataclass
class ProfileResult:
    """What :func:`profile` gathered: filled in when its block ends."""

    directory: str
    path: Optional[str] = None  # the merged capture
    captures: Dict[str, str] = field(default_factory=dict)  # worker name -> its capture
    killed: List[str] = field(default_factory=list)  # captures of workers that died, read from their files
    peaks: List[WorkerPeak] = field(default_factory=list)


def _run_directory(run_id, parent=None):
    """The run's directory in this process: under *parent*, or under this
    process's temp dir."""
    return os.path.join(tempfile.gettempdir() if parent is None else parent, f"heapscope-dask-{run_id}")


def _capture_name(name, pid):
    """``<name>@<host>-<pid>.bin``: the host and pid say, on any host that sees
    the file, whether its writer can still be running."""
    return f"{quote(name, safe='')}@{quote(socket.gethostname(), safe='')}-{pid}.bin"


def _writer_of(file_name):
    """(host, pid) of the process that writes *file_name*, or None when the
    name is not a capture's."""
    stem, ext = os.path.splitext(file_name)
    _name, at, host_pid = stem.rpartition("@")
    host, dash, pid = host_pid.rpartition("-")
    if ext != ".bin" or not at or not dash or not pid.isdigit():
        return None
    return host, int(pid)


def _writer_is_dead(path, pid):
    """The process *pid* that wrote *path* has ended (on this host). A zombie
    is dead; so is a process with that pid started after the file's last
    write (the pid was reused; with a second's margin, as a start time is
    known to about a second)."""
    try:
        import psutil  # distributed depends on it
    except ImportError:
        psutil = None
    if psutil is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        return process.create_time() > os.stat(path).st_mtime + 1.0
    except psutil.NoSuchProcess:
        return True
    except (psutil.AccessDenied, OSError):
        return False


# --- in the worker ------------------------------------------------------------------------------------------------

_state = {}  # run id -> (Tracker, path): one per process


def _task_prefix(key):
    from dask.utils import key_split

    return key_split(key)


# The worker's task runners, looked up in distributed.worker at each task:
# _run_task since distributed 2024.12, apply_function (thread pools) before.
# Each takes the task's key as its argument `key`.
_TASK_RUNNERS = ("_run_task", "apply_function")


def _labelled(runner):
    """*runner* with the task's prefix as the thread's label while it runs."""
    import inspect

    from heapscope.labels import label

    position = list(inspect.signature(runner).parameters).index("key")

    def run_labelled(*args, **kwargs):
        key = args[position] if len(args) > position else kwargs.get("key")
        with label(_task_prefix(key)):
            return runner(*args, **kwargs)

    run_labelled.heapscope_original = runner
    return run_labelled


def _label_tasks(on):
    """Labels every task this process's workers run (on), or stops (off)."""
    import distributed.worker as worker_module

    for name in _TASK_RUNNERS:
        current = getattr(worker_module, name, None)
        if current is None:
            continue
        original = getattr(current, "heapscope_original", None)
        if on and original is None:
            setattr(worker_module, name, _labelled(current))
        elif not on and original is not None:
            setattr(worker_module, name, original)


def _start(server, run_id, settings, role):
    """Starts this process's Tracker for the run (once), labels its tasks.
    Returns the capture's path."""
    from heapscope.tracker import Tracker

    if run_id in _state:
        return _state[run_id][1]
    directory = _run_directory(run_id, settings.get("run_directory"))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    name = str(getattr(server, "name", role))
    path = os.path.join(directory, _capture_name(name, os.getpid()))
    tracker = Tracker(path, native_traces=settings["native_traces"],
                      trace_python_allocators=settings["trace_python_allocators"], sampling=settings["sampling"])
    tracker._extra_metadata = [("dask_worker_name", name), ("dask_worker_address", str(server.address))]
    if role == "scheduler":
        tracker._extra_metadata = [("dask_worker_name", "scheduler"), ("dask_worker_address", str(server.address))]
    tracker.__enter__()
    _state[run_id] = (tracker, path)
    if settings["label_tasks"] and role == "worker":
        _label_tasks(True)
    return path


def _finish(server, run_id, role="worker", find_peak=True):
    """Stops this process's Tracker for the run; (name, capture bytes, its
    WorkerPeak), or None. The peak is found here, by every worker at once:
    on the client it would be one pass over each capture after the other."""
    entry = _state.pop(run_id, None)
    if role == "worker":
        _label_tasks(False)
    if entry is None:
        return None
    tracker, path = entry
    tracker.__exit__(None, None, None)
    peak = _worker_peak(path) if find_peak else None
    with open(path, "rb") as capture:
        data = capture.read()
    try:
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass  # another worker of this host is still writing there
    name = "scheduler" if role == "scheduler" else str(getattr(server, "name", server.address))
    return name, data, peak


def _collect_dead(run_id, run_directory=None, directories=()):
    """Takes the captures of this host's run directory (and of *directories*,
    where the workers said they wrote) whose writer process is dead:
    {"directory": this process's run directory, "captures": [(file name,
    bytes)]}. Each file is renamed before it is read, so that of the
    processes of a host asked at once, one takes it."""
    own = _run_directory(run_id, run_directory)
    host = quote(socket.gethostname(), safe="")
    taken = []
    for directory in dict.fromkeys([own, *directories]):
        for path in sorted(glob.glob(os.path.join(directory, "*.bin"))):
            writer = _writer_of(os.path.basename(path))
            if writer is None or writer[0] != host or not _writer_is_dead(path, writer[1]):
                continue  # another host's (a shared filesystem), or its writer still runs
            claimed = f"{path}.taken-{os.getpid()}"
            try:
                os.rename(path, claimed)
            except OSError:
                continue  # another process of this host took it first
            with open(claimed, "rb") as capture:
                taken.append((os.path.basename(path), capture.read()))
            os.unlink(claimed)
        try:
            os.rmdir(directory)
        except OSError:
            pass  # absent here, or a live worker's capture is still in it
    return {"directory": own, "captures": taken}


def _start_worker(dask_worker, run_id, settings):
    return _start(dask_worker, run_id, settings, "worker")


def _finish_worker(dask_worker, run_id, find_peak=True):
    return _finish(dask_worker, run_id, find_peak=find_peak)


def _start_scheduler(dask_scheduler, run_id, settings):
    return _start(dask_scheduler, run_id, settings, "scheduler")


def _finish_scheduler(dask_scheduler, run_id):
    return _finish(dask_scheduler, run_id, "scheduler")


def _plugin_class():
    distributed = _distributed()

    class HeapscopeWorkerPlugin(distributed.WorkerPlugin):
        """Starts the run's Tracker in each worker (those present and those
        that join), and labels its tasks; *addresses*: only these workers."""

        def __init__(self, run_id, settings, addresses=None):
            self.run_id = run_id
            self.settings = settings
            self.addresses = None if addresses is None else set(addresses)

        def setup(self, worker):
            if self.addresses is None or worker.address in self.addresses:
                _start_worker(worker, self.run_id, self.settings)

        def teardown(self, worker):
            # Unregistered (the run ended) or the worker is closing: a
            # capture still running is ended here and stays on disk.
            entry = _state.pop(self.run_id, None)
            _label_tasks(False)
            if entry is not None:
                entry[0].__exit__(None, None, None)

    return HeapscopeWorkerPlugin


# --- on the client -----------------------------------------------------------------------------------------------

def _sampling(sample):
    if sample is True:
        return True
    if sample is False or sample is None:
        return None
    return sample


def _chosen_workers(client, workers):
    info = client.scheduler_info(n_workers=-1) if "n_workers" in _parameters(client.scheduler_info) \
        else client.scheduler_info()
    addresses = list(info["workers"])
    if workers is None:
        return None
    if isinstance(workers, int) and not isinstance(workers, bool):
        return addresses[:workers]
    return list(workers)


def _parameters(function):
    import inspect

    try:
        return inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}


@contextlib.contextmanager
def profile(client, workers=None, scheduler=False, sample=True, output="heapscope-dask", *, native_traces=False,
            trace_python_allocators=False, label_tasks=True, run_directory=None):
    """Profiles the workers of *client*'s cluster while the block runs.

    *workers*: None (every worker, and those that join), an int (the first
    n) or a list of worker addresses. *scheduler*: the scheduler too.
    *sample*: True (Poisson sampling at heapscope's default mean, cheap
    enough to leave on), False (every allocation), or a Tracker ``sampling``
    value. *output*: the directory for the captures. *label_tasks*: run
    each task under the label of its task prefix. *run_directory*: where
    each worker writes its capture while the block runs, on its own host
    (in ``heapscope-dask-<run id>/`` under it; None: the worker's temp
    dir); the captures of workers that die are fetched from there.

    Yields a :class:`ProfileResult`, filled in when the block ends.
    """
    _distributed()
    if run_directory is not None:
        if not isinstance(run_directory, (str, os.PathLike)):
            raise TypeError(f"run_directory must be a path or None, not {type(run_directory).__name__}")
        run_directory = os.fspath(run_directory)
        if not os.path.isabs(run_directory):
            raise ValueError(f"run_directory must be an absolute path (each worker resolves it on its own host): "
                             f"{run_directory!r}")
    run_id = uuid.uuid4().hex[:12]
    settings = {"native_traces": bool(native_traces), "trace_python_allocators": bool(trace_python_allocators),
                "sampling": _sampling(sample), "label_tasks": bool(label_tasks), "run_directory": run_directory}
    addresses = _chosen_workers(client, workers)
    plugin_name = _PLUGIN_PREFIX + run_id
    result = ProfileResult(directory=os.fspath(output))
    client.register_plugin(_plugin_class()(run_id, settings, addresses), name=plugin_name)
    if scheduler:
        client.run_on_scheduler(_start_scheduler, run_id=run_id, settings=settings)
    try:
        yield result
    finally:
        _gather(client, run_id, plugin_name, addresses, scheduler, result, run_directory)


def _gather(client, run_id, plugin_name, addresses, scheduler, result, run_directory=None):
    from heapscope.reports.merge import write_merged

    directory = pathlib.Path(result.directory)
    directory.mkdir(parents=True, exist_ok=True)
    gathered = _run(client, _finish_worker, run_id=run_id, workers=addresses)
    if scheduler:
        gathered["scheduler"] = client.run_on_scheduler(_finish_scheduler, run_id=run_id)
    try:
        client.unregister_worker_plugin(plugin_name)
    except Exception:  # noqa: BLE001 -- already gone with its workers: nothing to undo
        pass
    written = []
    peaks = []
    for _address, answer in sorted(gathered.items(), key=lambda item: str(item[0])):
        if not isinstance(answer, tuple):
            continue  # a worker without a capture for this run, or one that failed to answer
        name, data, peak = answer
        path = directory / f"{quote(name, safe='')}.bin"
        path.write_bytes(data)
        result.captures[name] = str(path)
        written.append(str(path))
        peaks.append(peak)
    # Workers that died: their captures are in their host's run directory.
    # The processes left on each host send them: the workers alive (all of
    # them: the one a nanny started in a dead one's place was not asked
    # above), then the nannies (a worker's temp dir is its own: they look
    # where the workers said they wrote), then the client itself, which
    # covers workers lost on its own host.
    for file_name, data in _collect_everywhere(client, run_id, run_directory):
        target = directory / file_name
        target.write_bytes(data)
        result.killed.append(str(target))
        written.append(str(target))
    if written:
        result.path = str(directory / "merged.hscap")
        if os.path.exists(result.path):
            os.unlink(result.path)
        write_merged(written, result.path)
        result.peaks = peaks + worker_peaks(result.killed)


def _run(client, function, **kwargs):
    """``client.run``, a worker's failure being its answer where this
    distributed version can say so (older ones pass unknown keywords on to
    *function*)."""
    if "on_error" in _parameters(client.run):
        kwargs["on_error"] = "return"
    return client.run(function, **kwargs)


def _collect_everywhere(client, run_id, run_directory):
    """[(file name, bytes)] of the dead workers' captures, from every host
    where a process of the cluster (or the client) is left."""
    taken, directories = [], set()
    on_workers = _run(client, _collect_dead, run_id=run_id, run_directory=run_directory)
    for answer in on_workers.values():
        if isinstance(answer, dict):
            taken += answer["captures"]
            directories.add(answer["directory"])
    if "nanny" in _parameters(client.run):
        on_nannies = _run(client, _collect_dead, run_id=run_id, run_directory=run_directory,
                          directories=sorted(directories), nanny=True)
        for answer in on_nannies.values():
            if isinstance(answer, dict):  # not a nanny that failed to answer
                taken += answer["captures"]
    taken += _collect_dead(run_id, run_directory)["captures"]
    return sorted(taken)


def worker_peaks(paths):
    """A :class:`WorkerPeak` per capture: its peak, and the bytes each task
    prefix (the first label frame of a stack) held at it, largest first."""
    return [_worker_peak(path) for path in paths]


def _worker_peak(path):
    from heapscope.reader import FileReader
    from heapscope.reports.adapters import profile_from_capture

    with FileReader(path) as reader:
        extra = reader.start_metadata
        profile = profile_from_capture(reader, "peak")
    tasks = {}
    for sample in profile.samples:
        prefix = next((frame.function[len("[label] "):] for frame in sample.stack
                       if frame.filename == "<label>"), "(outside tasks)")
        tasks[prefix] = tasks.get(prefix, 0) + sample.bytes
    name = extra.get("dask_worker_name") or os.path.basename(path)
    return WorkerPeak(name, profile.total_bytes, dict(sorted(tasks.items(), key=lambda item: (-item[1], item[0]))))


# --- memray_workers' arguments ----------------------------------------------------------------------------------

def _report_on_worker(dask_worker, run_id, report_args):
    """Stops the run's Tracker and makes `heapscope <report_args> FILE -o
    FILE.html` there (the worker's own Python reads its own capture); the
    page's bytes."""
    import subprocess
    import sys

    answer = _finish(dask_worker, run_id, find_peak=False)
    if answer is None:
        return None
    name, data, _ = answer
    with tempfile.TemporaryDirectory(prefix="heapscope-report-") as scratch:
        capture = os.path.join(scratch, "capture.bin")
        page = os.path.join(scratch, "report.html")
        with open(capture, "wb") as out:
            out.write(data)
        arguments = list(report_args)
        if arguments and arguments[0] == "heapscope":
            arguments = arguments[1:]
        if "-o" in arguments or "--output" in arguments:
            raise ValueError("report_args cannot name the output file: heapscope_workers chooses it")
        subprocess.run([sys.executable, "-m", "heapscope", *arguments, "-f", capture, "-o", page], check=True,
                       capture_output=True)
        with open(page, "rb") as source:
            return name, source.read()


@contextlib.contextmanager
def heapscope_workers(directory="heapscope-profiles", workers=None, report_args=("flamegraph", "--temporal"),
                      fetch_reports_parallel=True, **tracker_kwargs):
    """``distributed.diagnostics.memray.memray_workers``, with heapscope:
    the same arguments, and the client from ``distributed.get_client()``.

    Each worker (all, the first n, or the addresses given) runs a Tracker
    for the block; then each makes ``heapscope <report_args> -o
    <directory>/<worker>.html`` of its capture, or, with
    ``report_args=False``, its capture is fetched as ``<worker>.bin``.
    (memray's default adds ``--leaks``, which heapscope's ``--temporal``
    page does not take.) *tracker_kwargs* go to ``heapscope.Tracker``
    (``native_traces``, ``trace_python_allocators``, ``sampling``).
    *fetch_reports_parallel*: True (all at once), False (one at a time) or
    how many workers at once. Tasks are labelled by their prefix, as in
    :func:`profile`.
    """
    distributed = _distributed()
    client = distributed.get_client()
    unknown = set(tracker_kwargs) - {"native_traces", "trace_python_allocators", "sampling"}
    if unknown:
        raise TypeError(f"heapscope_workers got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    info = client.scheduler_info(**({"n_workers": -1} if "n_workers" in _parameters(client.scheduler_info) else {}))
    names = {address: worker["name"] for address, worker in info["workers"].items()}
    addresses = list(names)
    if isinstance(workers, int) and not isinstance(workers, bool):
        addresses = addresses[:workers]
    elif workers:
        addresses = list(workers)
    run_id = uuid.uuid4().hex[:12]
    settings = {"native_traces": bool(tracker_kwargs.get("native_traces", False)),
                "trace_python_allocators": bool(tracker_kwargs.get("trace_python_allocators", False)),
                "sampling": tracker_kwargs.get("sampling"), "label_tasks": True}
    plugin_name = _PLUGIN_PREFIX + run_id
    client.register_plugin(_plugin_class()(run_id, settings, addresses), name=plugin_name)
    try:
        yield
    finally:
        target = pathlib.Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        at_once = len(addresses) if fetch_reports_parallel is True else 1 if fetch_reports_parallel is False \
            else max(int(fetch_reports_parallel), 1)
        for start in range(0, len(addresses), at_once):
            group = addresses[start:start + at_once]
            if report_args:
                answers = client.run(_report_on_worker, run_id=run_id, report_args=list(report_args), workers=group)
            else:
                answers = client.run(_finish_worker, run_id=run_id, find_peak=False, workers=group)
            for address, answer in answers.items():
                if answer is None:
                    continue
                data = answer[1]  # (name, page) or (name, capture, None)
                suffix = ".html" if report_args else ".bin"
                (target / (quote(str(names.get(address, address)), safe="") + suffix)).write_bytes(data)
        try:
            client.unregister_worker_plugin(plugin_name)
        except Exception:  # noqa: BLE001 -- gone with its workers
            pass
