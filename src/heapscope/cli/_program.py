"""Running the user's program the way ``python`` would: a script, ``-m module`` or ``-c code``."""

import argparse
import builtins
import io
import os
import runpy
import sys
import traceback
import types


class ProgramSpec:
    """What to run: ``kind`` is "script", "module" or "code"; ``args`` become sys.argv[1:]."""

    def __init__(self, kind, target, args):
        self.kind = kind
        self.target = target
        self.args = list(args)

    @property
    def argv0(self):
        return {"script": self.target, "module": self.target, "code": "-c"}[self.kind]

    def describe(self):
        head = {"script": self.target, "module": f"-m {self.target}", "code": "-c ..."}[self.kind]
        return " ".join([head, *self.args])


def add_program_arguments(parser):
    """Adds ``script.py [args] | -m module [args] | -c code [args]`` to an argparse parser.

    Everything after the script, module or code belongs to the program, options included.
    """
    parser.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE ...",
                        help="run a library module as a script")
    parser.add_argument("-c", dest="code", nargs=argparse.REMAINDER, metavar="CODE ...",
                        help="run a program passed in as a string")
    parser.add_argument("script", nargs=argparse.REMAINDER, metavar="script.py ...",
                        help="the Python script to run, and its arguments")


def program_from_arguments(parser, options):
    given = [(kind, value) for kind, value in
             (("module", options.module), ("code", options.code), ("script", options.script)) if value]
    if not given:
        parser.error("nothing to run: give script.py, -m module or -c code")
    kind, words = given[0]
    if kind == "script" and words[0].startswith("-"):
        parser.error(f"unrecognized option {words[0]!r} before the program")
    spec = ProgramSpec(kind, words[0], words[1:])
    if kind == "script" and not os.path.isfile(spec.target):
        parser.error(f"cannot open script {spec.target!r}: no such file")
    return spec


def run_program(spec):
    """Runs the program in this process as ``__main__``; returns ``(exit_code, namespace)``.

    Like ``python`` itself: an uncaught exception prints its traceback on stderr
    and gives exit code 1; ``sys.exit(n)`` gives n. The program's global
    namespace is returned, alive, so that a report taken afterwards still sees
    what the program held at its end (module-level caches, for instance). The
    caller's sys.argv, sys.path[0] and sys.modules["__main__"] are restored.
    """
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    saved_main = sys.modules.get("__main__")
    sys.argv = [spec.argv0, *spec.args]
    namespace = {}
    try:
        if spec.kind == "module":
            sys.path[0] = os.getcwd()
            namespace = runpy.run_module(spec.target, run_name="__main__", alter_sys=True)
        else:
            main_module = types.ModuleType("__main__")
            namespace = main_module.__dict__
            namespace["__builtins__"] = builtins
            if spec.kind == "script":
                path = os.path.abspath(spec.target)
                sys.path[0] = os.path.dirname(path)
                namespace["__file__"] = spec.target
                with io.open_code(path) as source_file:
                    code = compile(source_file.read(), spec.target, "exec")
            else:
                sys.path[0] = ""
                code = compile(spec.target, "<string>", "exec")
            sys.modules["__main__"] = main_module
            exec(code, namespace)
        return 0, namespace
    except SystemExit as exit_request:
        return _exit_code(exit_request.code), namespace
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130, namespace
    except BaseException:  # the program's own failure: report it like python does
        traceback.print_exc()
        return 1, namespace
    finally:
        sys.argv = saved_argv
        if saved_path0 is not None:
            sys.path[0] = saved_path0
        if saved_main is not None:
            sys.modules["__main__"] = saved_main


def _exit_code(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
