"""pyperformance's benchmarks as fixed amounts of work, run in this process.

pyperformance (PyPI) ships each benchmark as
``data-files/benchmarks/bm_NAME/run_benchmark.py``, whose ``__main__`` block
hands a workload function to pyperf's Runner, which would spawn worker
processes and calibrate the number of loops.  Here the module is imported
without running that block, and ``prepare(NAME)`` returns a callable that
runs the benchmark's own workload function a fixed number of times: the same
work in every mode, so that times compare across tools.

``prepare`` does the imports and the benchmark's set-up, so that the caller
(bench/_driver.py) can start its clock after it.  The loop counts make each
benchmark take about 0.3-1 s plain on the machine of bench/RESULTS.md.
"""
import argparse
import gc
import importlib.util
import os
import sys

# name -> (directory under bm_*, work, description, set-up function); work
# is the fixed amount of work, most often a loop count, as the set-up reads it.
BENCHMARKS = {}


def _benchmark(name, work, description, directory=None):
    def register(setup):
        BENCHMARKS[name] = (directory or name, work, description, setup)
        return setup
    return register


def benchmarks_dir():
    """pyperformance's benchmark folder, found without importing pyperformance."""
    spec = importlib.util.find_spec("pyperformance")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pyperformance is not installed (pip install -r bench/requirements-pyperf.txt)")
    return os.path.join(list(spec.submodule_search_locations)[0], "data-files", "benchmarks")


def _load_benchmark_module(directory):
    """Import bm_DIRECTORY/run_benchmark.py under a name that is not __main__,
    so its pyperf Runner block does not run."""
    path = os.path.join(benchmarks_dir(), "bm_" + directory, "run_benchmark.py")
    if not os.path.exists(path):
        raise ImportError(f"pyperformance has no benchmark bm_{directory} ({path})")
    name = "pyperf_bm_" + directory
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _CapturingRunner:
    """Stands in for pyperf.Runner where a benchmark builds its data inside a
    function that takes the runner: keeps the function and arguments handed to
    bench_func instead of running them."""

    def __init__(self):
        self.metadata = {}
        self.calls = []

    def bench_func(self, name, func, *args, **kwargs):
        self.calls.append((func, args))


def prepare(name):
    """Import benchmark NAME and do its set-up; return a zero-argument callable
    that runs its fixed amount of work."""
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    directory, work, _, setup = BENCHMARKS[name]
    return setup(_load_benchmark_module(directory), work)


def _repeat(func, loops, *args):
    def run():
        for _ in range(loops):
            func(*args)
    return run


@_benchmark("async_tree", 2, "asyncio.gather over a tree of 6^5 coroutines that do nothing (the 'none' variant, "
            "one level less than pyperformance's 6)")
def _async_tree(bm, loops):
    import asyncio

    tree = bm.NoneAsyncTree()
    return _repeat(lambda: asyncio.run(tree.recurse_with_gather(bm.NUM_RECURSE_LEVELS - 1)), loops)


@_benchmark("chaos", 2, "chaos game fractal on splines, pure-Python floats")
def _chaos(bm, loops):
    runner = _CapturingRunner()
    bm.main(runner, argparse.Namespace(thickness=bm.DEFAULT_THICKNESS, width=bm.DEFAULT_WIDTH,
                                       height=bm.DEFAULT_HEIGHT, iterations=bm.DEFAULT_ITERATIONS,
                                       filename=None, rng_seed=bm.DEFAULT_RNG_SEED))
    (func, args), = runner.calls
    return _repeat(func, loops, *args)


@_benchmark("deepcopy", 1, "copy.deepcopy of dicts and a dataclass, plus its reduce and memo variants")
def _deepcopy(bm, loops):
    def run():
        bm.benchmark(300 * loops)
        bm.benchmark_reduce(20000 * loops)
        bm.benchmark_memo(1000 * loops)
    return run


@_benchmark("deltablue", 40, "one-way constraint solver, chain and projection tests of 100 variables")
def _deltablue(bm, loops):
    return _repeat(bm.delta_blue, loops, 100)


@_benchmark("docutils", 1, "reStructuredText to HTML5 with docutils, on the api/ and howto/ parts of "
            "docutils' own documentation (9 files, 68 KB)")
def _docutils(bm, loops):
    parts = [bm.DOC_ROOT / "api", bm.DOC_ROOT / "howto"]

    def run():
        for _ in range(loops):
            for part in parts:
                bm.build_html(part)
    return run


@_benchmark("fannkuch", 1, "fannkuch(9): permutations of small lists")
def _fannkuch(bm, loops):
    return _repeat(bm.fannkuch, loops, bm.DEFAULT_ARG)


@_benchmark("go", 1, "Monte-Carlo tree search Go player on a 9x9 board")
def _go(bm, loops):
    return _repeat(bm.versus_cpu, loops)


@_benchmark("json_dumps", 12, "json.dumps of small, nested and huge documents")
def _json_dumps(bm, loops):
    data = [(obj, range(count)) for obj, count in (getattr(bm, case) for case in bm.CASES)]
    return _repeat(bm.bench_json_dumps, loops, data)


@_benchmark("json_loads", 400, "json.loads of a dict, a tuple and a list of dicts, 20 times each")
def _json_loads(bm, loops):
    import json

    objs = (json.dumps(bm.DICT), json.dumps(bm.TUPLE), json.dumps(bm.DICT_GROUP))
    return _repeat(bm.bench_json_loads, loops, objs)


@_benchmark("nbody", 2, "n-body simulation of the Jovian planets, pure-Python floats")
def _nbody(bm, loops):
    return lambda: bm.bench_nbody(loops, bm.DEFAULT_REFERENCE, bm.DEFAULT_ITERATIONS)


@_benchmark("pickle_pure_python", 28, "pickle.dumps of dicts and tuples with the pure-Python pickle module",
            directory="pickle")
def _pickle_pure_python(bm, loops):
    # The pure-Python pickle is a second copy of the module imported with its
    # accelerator hidden; the process's own pickle module is left as it was.
    saved = {name: sys.modules.pop(name, None) for name in ("pickle", "_pickle")}
    sys.modules["_pickle"] = None
    try:
        import pickle as pure_pickle
    finally:
        for name, module in saved.items():
            sys.modules.pop(name, None)
            if module is not None:
                sys.modules[name] = module
    if pure_pickle.Pickler.__module__ != "pickle":
        raise RuntimeError("the pure-Python pickle module still uses its C accelerator")
    options = argparse.Namespace(protocol=pure_pickle.HIGHEST_PROTOCOL)
    return lambda: bm.bench_pickle(loops, pure_pickle, options)


@_benchmark("pprint", 12000, "pprint.pformat of a list of 12,000 small tuples (pyperformance: 100,000)")
def _pprint(bm, items):
    return _repeat(bm.p.pformat, 1, bm.printable[:items])


@_benchmark("raytrace", 70, "ray tracer of spheres on a checkerboard, 70x70 pixels (pyperformance: 100x100)")
def _raytrace(bm, side):
    return lambda: bm.bench_raytrace(1, side, side, None)


@_benchmark("richards", 4, "Richards operating-system scheduler simulation")
def _richards(bm, loops):
    return lambda: bm.Richards().run(loops)


@_benchmark("sqlite_synth", 80000, "SQLite in memory: inserts, a Python function and a Python aggregate")
def _sqlite_synth(bm, loops):
    return lambda: bm.bench_sqlite(loops)


@_benchmark("sympy", 1, "SymPy: integrate and str(expand(...)), cache cleared before each")
def _sympy(bm, loops):
    funcs = [bm.bench_integrate, bm.bench_str]

    def run():
        # pyperformance runs this benchmark with the cycle collector disabled.
        gc.disable()
        try:
            for func in funcs:
                bm.bench_sympy(loops, func)
        finally:
            gc.enable()
    return run


@_benchmark("xml_etree", 1, "xml.etree.ElementTree (C accelerator): parse, then process")
def _xml_etree(bm, loops):
    import xml.etree.ElementTree as etree

    steps = [bm.bench_parse, bm.bench_process]

    def run():
        for step in steps:
            bm.bench_etree(loops, etree, step)
    return run
