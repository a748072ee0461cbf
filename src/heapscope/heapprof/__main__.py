"""``python -m heapscope.heapprof [-m profile|stats] [-o FILEBASE] [--sample DICT] script.py [args]``:
heapprof's command line. Runs the script as ``python`` would (its output and
exit code are its own) under heapscope.heapprof, then stops the profiler.
"""

import argparse
import ast
import os
import sys

from heapscope.cli._program import (ProgramSpec, die_like_python_if_interrupted, flush_program_output,
                                    run_program)


def _sampling_rate(text):
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"expected a dict such as '{{128: 1e-4, 8192: 0.1}}', got {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a dict such as '{{128: 1e-4, 8192: 0.1}}', got {text!r}")
    return value


def main(argv=None):
    import heapscope.heapprof as heapprof

    parser = argparse.ArgumentParser(
        prog="python -m heapscope.heapprof",
        description="Run a Python script under heapscope.heapprof: profile mode writes FILEBASE.hpm and "
                    "FILEBASE.hpd (read them with heapscope.heapprof.read(FILEBASE)); stats mode prints the "
                    "size distribution of allocations at the end.")
    parser.add_argument("-m", "--mode", choices=("profile", "stats"), default="profile",
                        help="profiler mode (default: %(default)s)")
    parser.add_argument("-o", "--output", default="hprof", metavar="FILEBASE",
                        help="output file base (default: %(default)s)")
    parser.add_argument("--sample", type=_sampling_rate, metavar="DICT",
                        help="sampling rates, a dict from size upper bound to probability "
                             "(default: {128: 1e-4, 8192: 0.1})")
    parser.add_argument("script", help="the Python script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    options = parser.parse_args(argv)
    if not os.path.isfile(options.script):
        parser.error(f"cannot open script {options.script!r}: no such file")
    if options.mode == "stats" and options.sample is not None:
        parser.error("--sample applies to profile mode only")
    program = ProgramSpec("script", options.script, options.args)
    try:
        if options.mode == "profile":
            heapprof.start(options.output, options.sample)
        else:
            heapprof.gatherStats()
    except (TypeError, ValueError, RuntimeError, OSError) as error:
        print(f"heapprof: error: {error}", file=sys.stderr)
        return 2
    try:
        ran = run_program(program)
    finally:
        flush_program_output()
        heapprof.stop()
    if options.mode == "profile":
        print(f"heapprof: wrote {options.output}.hpm and {options.output}.hpd; read them with "
              f"heapscope.heapprof.read({options.output!r})", file=sys.stderr)
    die_like_python_if_interrupted(ran)
    return ran.exit_code


if __name__ == "__main__":
    sys.exit(main())
