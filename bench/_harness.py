"""Helpers shared by the benchmark runners in bench/.

Generic parts only: timed subprocess runs of bench/_driver.py, interleaved
schedules, medians and geometric means, Markdown tables, RESULTS.md section
replacement, machine description and raw-result files.
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
WORKLOADS = os.path.join(BENCH, "workloads")
OUT = os.path.join(BENCH, "out")
RESULTS_MD = os.path.join(BENCH, "RESULTS.md")
DRIVER = os.path.join(BENCH, "_driver.py")

# Variables that would change what the interpreter under test does.
_SCRUB = ("PYTHONTRACEMALLOC", "PYTHONMALLOC", "PYTHONMALLOCSTATS", "PYTHONDEVMODE",
          "PYTHONPROFILEIMPORTTIME", "PYTHONASYNCIODEBUG", "PYTHONWARNINGS")


# --- running -----------------------------------------------------------------

def bench_env():
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["PYTHONHASHSEED"] = "0"  # same str hashes, same dict/set layouts, every run
    return env


def workload_names():
    return sorted(f[:-3] for f in os.listdir(WORKLOADS)
                  if f.endswith(".py") and not f.startswith("_"))


def run_json(args, timeout=None, json_line_prefix=None):
    """Run ``python ARGS`` in a fresh process; return the JSON on its last stdout line
    (the last line starting with *json_line_prefix*, when given: a launcher such
    as Scalene prints after the program).

    On failure (non-zero exit, timeout, no JSON) return ``{"error": "..."}``.
    """
    cmd = [sys.executable] + list(args)
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=bench_env(), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    lines = proc.stdout.strip().splitlines()
    if json_line_prefix is not None:
        lines = [line for line in lines if line.startswith(json_line_prefix)]
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    tail = (proc.stderr.strip().splitlines() or lines or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def workload_path(workload):
    return os.path.join(WORKLOADS, workload + ".py")


def run_driver(mode, workload, timeout=None, target=None):
    """One timed run of *workload* (a bench/workloads name, unless the driver's
    *target* is given, such as ``bench/pyperf_workloads.py::raytrace``)."""
    return run_json([DRIVER, mode, target or workload_path(workload)], timeout)


def run_driver_under_scalene(target, timeout=None):
    """One run of the driver's plain mode as a program under Scalene's memory
    profiler (``scalene run --memory``: CPU and memory profiling, its sampled
    allocation tracking through LD_PRELOAD). Scalene cannot be started inside
    a running interpreter; the figure is still the driver's own timed span."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="heapscope-bench-") as scratch:
        return run_json(["-m", "scalene", "run", "--memory", "-o", os.path.join(scratch, "profile.json"),
                         DRIVER, "---", "plain", target], timeout=timeout, json_line_prefix="{")


def probe_scalene():
    version = package_versions(["scalene"])["scalene"]
    return ({"ok": True, "version": version} if version
            else {"ok": False, "error": "scalene is not installed (pip install scalene)"})


def probe_modes(modes):
    """Ask a fresh interpreter which modes can run: {mode: {"ok", "version" | "error"}}.
    The mode "scalene" (a launcher around the driver) is looked up as a package."""
    driven = [m for m in modes if m != "scalene"]
    report = run_json([DRIVER, "--probe"] + driven, timeout=120) if driven else {}
    if "error" in report:
        report = {m: {"ok": False, "error": "probe failed: " + report["error"]} for m in driven}
    if "scalene" in modes:
        report["scalene"] = probe_scalene()
    return report


def package_versions(names):
    """{name: installed distribution version or None}, as the interpreter under test sees it."""
    code = ("import json, sys, importlib.metadata as md\n"
            "def v(n):\n"
            "    try: return md.version(n)\n"
            "    except md.PackageNotFoundError: return None\n"
            "print(json.dumps({n: v(n) for n in sys.argv[1:]}))")
    found = run_json(["-c", code] + list(names), timeout=60)
    return {n: found.get(n) for n in names}


def name_list(choices):
    """An argparse type: a comma-separated list of names, each one of *choices*."""
    def split(text):
        items = [s for s in text.split(",") if s]
        bad = [s for s in items if s not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items
    return split


def interleave(keys, reps):
    """Round-robin schedule [(rep, key)]: every key once per repetition, rotating
    the order each repetition so no key always runs first or after the same one."""
    keys = list(keys)
    schedule = []
    for rep in range(reps):
        shift = rep % len(keys) if keys else 0
        schedule += [(rep, k) for k in keys[shift:] + keys[:shift]]
    return schedule


def progress(msg):
    print(msg, file=sys.stderr, flush=True)


# --- statistics and formatting ----------------------------------------------

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def fmt_seconds(s):
    return "–" if s is None else f"{s:.3f} s" if s < 10 else f"{s:.1f} s"


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×" if r < 10 else f"{r:.1f}×" if r < 100 else f"{r:.0f}×"


def fmt_bytes(n):
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def markdown_table(headers, rows):
    """Markdown table; the first column is left-aligned, the others right-aligned."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    def line(cells):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    rule = "| " + " | ".join(("-" * (w - 1) + ":") if i else "-" * w
                             for i, w in enumerate(widths)) + " |"
    return "\n".join([line([str(h) for h in headers]), rule] + [line(r) for r in rows])


# --- results files -----------------------------------------------------------

def replace_section(name, body, path=RESULTS_MD):
    """Replace (or append) the marked section NAME of a Markdown file, keeping the rest."""
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else (
        "# heapscope benchmark results\n\nEach section is rewritten by its runner "
        "(`--write-results`); see bench/README.md.\n")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def save_raw(prefix, data):
    os.makedirs(OUT, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(OUT, f"{prefix}-{stamp}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    return path


def command_line():
    """The command as typed, relative to the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
    return shlex.join(["python", script] + sys.argv[1:])


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine_info():
    def read(path):
        try:
            return open(path, encoding="utf-8").read()
        except OSError:
            return ""
    cpu = re.search(r"^model name\s*:\s*(.+)$", read("/proc/cpuinfo"), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", read("/proc/meminfo"), re.M)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu.group(1).strip() if cpu else platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "ram_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": read("/etc/os-release").partition('PRETTY_NAME="')[2].partition('"')[0] or None,
    }


def machine_markdown(info, tools=None):
    lines = [
        f"- CPU: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable)",
        f"- RAM: {info['ram_gib']} GiB",
        f"- OS: {info['os'] or '?'}, kernel {info['kernel']}",
        f"- Python: {info['python']}",
    ]
    if tools:
        lines.append("- Tools: " + "; ".join(f"{k} {v}" for k, v in tools.items()))
    return "\n".join(lines)
