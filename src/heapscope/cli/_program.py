"""Running the user's program the way ``python`` would: a script, ``-m module`` or ``-c code``."""

import argparse
import builtins
import io
import os
import runpy
import sys
import threading
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


def int_argument(low, high=None, what=None):
    """An argparse type: an int from *low* to *high* (no upper bound if None),
    refused with a message that names what was expected."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what or 'a whole number'}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"in {low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected {what or 'a number'} {bounds}, got {value}")
        return value
    return parse


positive_int = int_argument(1)


def bare_sample_flags(argv, parser):
    """Rewrites a ``--sample`` that a non-number follows (the program) as
    ``--sample=DEFAULT``, among the options before the program only: argparse
    would otherwise take the script's name as the flag's optional value.
    *parser* is the subcommand's parser (to know which options take values)."""
    from heapscope._sampling import DEFAULT_SAMPLING_INTERVAL

    out = list(argv)
    takes_value = {option for action in parser._actions if action.nargs != 0 and action.option_strings
                   for option in action.option_strings}
    i = 0
    while i < len(out):
        token = out[i]
        if token == "--":
            break
        if token == "--sample":
            following = out[i + 1] if i + 1 < len(out) else None
            if following is None or not following.isdigit():
                out[i] = f"--sample={DEFAULT_SAMPLING_INTERVAL}"
            i += 1
            continue
        if not token.startswith("-") or token in ("-m", "-c"):
            break  # the program starts here: its own arguments are not ours
        if token in takes_value and "=" not in token:
            i += 1  # skip the option's value
        i += 1
    return out


def add_sample_argument(parser):
    """``--sample [BYTES]``: Poisson byte sampling, at the default mean
    interval when no value is given (docs/sampling.md). The command's main()
    passes its arguments through :func:`bare_sample_flags` first, so that
    ``--sample prog.py`` does not read the script as the interval."""
    from heapscope._sampling import DEFAULT_SAMPLING_INTERVAL, MAX_SAMPLING_INTERVAL

    parser.add_argument("--sample", nargs="?", const=DEFAULT_SAMPLING_INTERVAL, default=None, metavar="BYTES",
                        type=int_argument(1, MAX_SAMPLING_INTERVAL, what="a mean sampling interval in bytes"),
                        help="record a Poisson sample of the allocations, one per BYTES allocated on average "
                             f"(default {DEFAULT_SAMPLING_INTERVAL}); reports then show unbiased estimates")
port_number = int_argument(1, 65535, what="a port number")


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


class ProgramRun:
    """How the program ended: ``exit_code`` as python would give it, the
    program's global namespace (kept alive for the report), and whether it
    was interrupted by SIGINT (then the caller should die by that signal too)."""

    def __init__(self, exit_code, namespace, interrupted=False):
        self.exit_code = exit_code
        self.namespace = namespace
        self.interrupted = interrupted


def flush_program_output():
    """Flush what the program left in sys.stdout and sys.stderr, whatever it did to them."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (ValueError, OSError):  # closed or broken by the program
            pass


def die_like_python_if_interrupted(ran):
    """End by SIGINT, as python does on an uncaught KeyboardInterrupt, if the program was interrupted."""
    if ran.interrupted:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)


def run_program(spec):
    """Runs the program in this process as ``__main__``, the way ``python`` does.

    An uncaught exception goes to ``sys.excepthook`` (without this function's
    frame) and gives exit code 1; ``sys.exit(n)`` gives n. Non-daemon threads
    are waited for, as at interpreter exit. The program's module stays
    ``sys.modules["__main__"]`` (its atexit handlers may need it); sys.argv
    and sys.path[0] are restored.
    """
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv = [spec.argv0, *spec.args]
    namespace = {}
    try:
        if spec.kind == "module":
            sys.path[0] = os.getcwd()
            namespace = runpy.run_module(spec.target, run_name="__main__", alter_sys=True)
        else:
            main_module = types.ModuleType("__main__")
            namespace = main_module.__dict__
            namespace.update(__builtins__=builtins, __cached__=None)
            if spec.kind == "script":
                path = os.path.abspath(spec.target)  # as python 3.9+ sets __file__
                sys.path[0] = os.path.dirname(os.path.realpath(spec.target))
                namespace["__file__"] = path
                with io.open_code(path) as source_file:
                    code = compile(source_file.read(), path, "exec")
            else:
                sys.path[0] = ""
                code = compile(spec.target, "<string>", "exec")
            sys.modules["__main__"] = main_module
            exec(code, namespace)
        result = ProgramRun(0, namespace)
    except SystemExit as exit_request:
        result = ProgramRun(_exit_code(exit_request.code), namespace)
    except KeyboardInterrupt:
        _report_exception()
        result = ProgramRun(130, namespace, interrupted=True)
    except BaseException:  # the program's own failure: report it like python does
        _report_exception()
        result = ProgramRun(1, namespace)
    finally:
        sys.argv = saved_argv
        if saved_path0 is not None:
            sys.path[0] = saved_path0
    _join_non_daemon_threads()
    return result


def _report_exception():
    kind, value, tb = sys.exc_info()
    # Drop run_program's own frame: the traceback starts in the program. The
    # exception carries it too, since excepthook prints value.__traceback__.
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
        value = value.with_traceback(tb)
    sys.excepthook(kind, value, tb)


def _join_non_daemon_threads():
    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main and not thread.daemon and thread is not threading.current_thread():
            thread.join()


def _exit_code(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
