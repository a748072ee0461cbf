"""Run one workload under one tool in this (fresh) process; report as JSON.

    python bench/_driver.py MODE path/to/workload.py   # one timed run
    python bench/_driver.py MODE bench/pyperf_workloads.py::raytrace
                                                       # one of a collection's workloads
    python bench/_driver.py --probe MODE...            # which modes can run here

The tool is imported and the workload module loaded (its imports done) before
the clock starts.  The timed span is tool start + workload ``main()`` + tool
stop; reading the tool's own memory just before stop is not timed.  Whatever
``main()`` returns (the objects a workload keeps) stays alive until after stop,
so the tool memory includes their live traces.  The result
is one JSON object on the last stdout line.
"""
import gc
import importlib
import importlib.util
import json
import os
import resource
import shutil
import sys
import tempfile
import time


class Plain:
    version = ""

    def start(self):
        pass

    def memory(self):
        return None

    def stop(self):
        pass

    def cleanup(self):
        return {}


class PlainWithAThread(Plain):
    """Plain Python with one more thread, asleep: what any tool with a
    thread of its own (heapscope's and memray's writers) costs before it
    does anything. glibc's malloc and free skip their arena lock while a
    process has a single thread, and take it from the second one on."""

    def start(self):
        import threading

        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.stopped.wait, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopped.set()
        self.thread.join()


class Tracemalloc(Plain):
    """The stdlib tracemalloc, or a drop-in replacement module for it."""

    def __init__(self, module, nframe, **options):
        self.tm = importlib.import_module(module)
        self.nframe = nframe
        self.options = options  # heapscope's keywords (sampling=...)
        top = module.partition(".")[0]
        self.version = _dist_version(top) or "stdlib, Python " + sys.version.split()[0]

    def start(self):
        self.tm.start(self.nframe, **self.options)

    def memory(self):
        return self.tm.get_tracemalloc_memory()

    def stop(self):
        self.tm.stop()


class Memray(Plain):
    def __init__(self):
        import memray
        self.memray = memray
        self.version = memray.__version__

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="heapscope-bench-")
        self.path = os.path.join(self.dir, "capture.bin")
        self.tracker = self.memray.Tracker(self.path, trace_python_allocators=True)
        self.tracker.__enter__()

    def stop(self):
        self.tracker.__exit__(None, None, None)

    def cleanup(self):
        size = os.path.getsize(self.path)
        shutil.rmtree(self.dir)
        return {"capture_bytes": size}


class Capture(Plain):
    """A capture to a file, by default with Python allocators traced (memray's
    ``trace_python_allocators=True``), optionally with native stacks. After the
    timed span, the time to compute the peak report from the file is measured
    in a fresh process (bench/_peak_report.py)."""

    def __init__(self, tool, native, sampling=None, report=True, python_allocators=True):
        self.tool, self.native = tool, native
        self.sampling, self.report = sampling, report
        self.python_allocators = python_allocators
        if tool == "memray":
            import memray
            self.module = memray
            self.version = memray.__version__
        else:
            import heapscope
            self.module = heapscope
            self.version = _dist_version("heapscope")
        # heapscope.Tracker is imported lazily (heapscope/__init__.py): import
        # it here, before the clock starts, as every tool's imports are.
        self.tracker_class = self.module.Tracker

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="heapscope-bench-")
        self.path = os.path.join(self.dir, "capture.bin")
        extra = {} if self.sampling is None else {"sampling": self.sampling}
        self.tracker = self.tracker_class(self.path, trace_python_allocators=self.python_allocators,
                                          native_traces=self.native, **extra)
        self.tracker.__enter__()

    def stop(self):
        self.tracker.__exit__(None, None, None)

    def cleanup(self):
        import subprocess

        result = {"capture_bytes": os.path.getsize(self.path)}
        if not self.report:
            shutil.rmtree(self.dir)
            return result
        here = os.path.dirname(os.path.abspath(__file__))
        proc = subprocess.run([sys.executable, os.path.join(here, "_peak_report.py"), self.tool, self.path],
                              capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines:
            result.update(json.loads(lines[-1]))
        else:
            result["report_error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        shutil.rmtree(self.dir)
        return result


class ShadowStackFloor(Plain):
    """The least a shadow-stack profiler does: a C profile function that
    pushes and pops a per-thread stack on every call (bench/designs/)."""

    def __init__(self):
        import subprocess
        import sysconfig

        here = os.path.dirname(os.path.abspath(__file__))
        build = os.path.join(here, "out", "designs")
        os.makedirs(build, exist_ok=True)
        target = os.path.join(build, "shadow_stack" + sysconfig.get_config_var("EXT_SUFFIX"))
        source = os.path.join(here, "designs", "shadow_stack.c")
        if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(source):
            subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"],
                            source, "-o", target], check=True)
        sys.path.insert(0, build)
        import shadow_stack
        self.probe = shadow_stack
        self.version = "bench/designs/shadow_stack.c"

    def start(self):
        import threading

        # New threads install it on their first call event.
        threading.setprofile(lambda *args: self.probe.install())
        self.probe.install()

    def stop(self):
        import threading

        threading.setprofile(None)
        self.probe.uninstall()


class HeapscopeWithoutStackCache(Tracemalloc):
    """heapscope with its per-thread stack cache switched off: every
    allocation interns its whole stack under the lock."""

    def __init__(self):
        os.environ["HEAPSCOPE_NO_STACK_CACHE"] = "1"
        super().__init__("heapscope.tracemalloc", 64)


MODES = {
    "plain": Plain,
    "plain-thread": PlainWithAThread,
    "tracemalloc-1": lambda: Tracemalloc("tracemalloc", 1),
    "tracemalloc-64": lambda: Tracemalloc("tracemalloc", 64),
    "memray": Memray,
    "heapscope-64": lambda: Tracemalloc("heapscope.tracemalloc", 64),
    "heapscope-64-nocache": HeapscopeWithoutStackCache,
    "shadow-stack-floor": ShadowStackFloor,
    "memray-capture": lambda: Capture("memray", False),
    "heapscope-capture": lambda: Capture("heapscope", False),
    "memray-capture-native": lambda: Capture("memray", True),
    "heapscope-capture-native": lambda: Capture("heapscope", True),
    # bench/run_sampling.py: captures without the report step, exact and sampled
    "memray-file": lambda: Capture("memray", False, report=False),
    "heapscope-exact": lambda: Capture("heapscope", False, report=False),
    "heapscope-sampled": lambda: Capture("heapscope", False, sampling=True, report=False),
    # bench/pyperf_set.py: both tools' default modes, Python's allocators not traced
    # (memray then sees pymalloc's arenas, not its blocks)
    "memray-file-nopyalloc": lambda: Capture("memray", False, report=False, python_allocators=False),
    "heapscope-exact-nopyalloc": lambda: Capture("heapscope", False, report=False, python_allocators=False),
    "heapscope-door-sampled": lambda: Tracemalloc("heapscope.tracemalloc", 64, sampling=True),
}


def _without_frame_anchors(make):
    """The same mode with anchored stack walks off (issue 17: what they save)."""
    def mode():
        os.environ["HEAPSCOPE_FRAME_ANCHORS"] = "0"  # read when a session starts
        return make()
    return mode


MODES["heapscope-64-noanchors"] = _without_frame_anchors(MODES["heapscope-64"])
MODES["heapscope-exact-noanchors"] = _without_frame_anchors(MODES["heapscope-exact"])
for _kib in (16, 32, 64, 128, 256, 512, 1024):
    MODES[f"heapscope-sampled-{_kib}k"] = (
        lambda kib=_kib: Capture("heapscope", False, sampling=kib * 1024, report=False))


def _dist_version(name):
    if name == "tracemalloc":
        return None
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return getattr(sys.modules.get(name), "__version__", "unknown")


def peak_rss_bytes():
    """High-water RSS of this process image.

    Linux keeps ru_maxrss across execve, so a child forked (or vforked) from a
    big runner would report the runner's peak; VmHWM belongs to the new image.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _load(path):
    spec = importlib.util.spec_from_file_location("bench_workload", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _workload_main(target):
    """The workload's callable, its imports and set-up done: ``main`` of
    workload.py, or for ``collection.py::NAME`` what ``prepare(NAME)`` of that
    collection returns (bench/pyperf_workloads.py)."""
    path, _, name = target.partition("::")
    module = _load(path)
    return module.prepare(name) if name else module.main


def probe(modes):
    report = {}
    for mode in modes:
        try:
            report[mode] = {"ok": True, "version": MODES[mode]().version}
        except Exception as exc:  # ImportError, or a broken build
            report[mode] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return report


def run(mode, target):
    tool = MODES[mode]()
    workload_main = _workload_main(target)
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    tool.start()
    try:
        kept = workload_main()  # alive until after stop, so live traces count
        c1, t1 = time.process_time(), time.perf_counter()
        tool_memory = tool.memory()
        c2, t2 = time.process_time(), time.perf_counter()
    finally:
        tool.stop()
    c3, t3 = time.process_time(), time.perf_counter()
    result = {
        "mode": mode,
        "workload": target.partition("::")[2] or os.path.splitext(os.path.basename(target))[0],
        "elapsed_s": (t1 - t0) + (t3 - t2),
        # CPU time of every thread of the process over the same spans: less
        # sensitive than wall time to other jobs on a shared machine.
        "cpu_s": (c1 - c0) + (c3 - c2),
        "stop_s": t3 - t2,
        "tool_memory_bytes": tool_memory,
        "peak_rss_bytes": peak_rss_bytes(),
    }
    result.update(tool.cleanup())
    del kept
    return result


def main(argv):
    if argv and argv[0] == "--probe":
        out = probe(argv[1:] or list(MODES))
    elif len(argv) == 2 and argv[0] in MODES:
        out = run(*argv)
    else:
        sys.exit(f"usage: _driver.py {{{'|'.join(MODES)}}} WORKLOAD.py|COLLECTION.py::NAME | --probe [MODE...]")
    sys.stdout.flush()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
