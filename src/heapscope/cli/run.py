"""``heapscope run``: run a program under heapscope.Tracker and write a capture file.

The program runs the way ``python`` runs it (script, ``-m module`` or ``-c
code``), with its own output and exit code; the capture is written even when
it raises or calls sys.exit. Afterwards heapscope says, on stderr, where the
capture is and how to look at it.

It runs in a child of ``heapscope run``, which waits for it: when the program
dies by a signal (SIGKILL, the OOM killer), its capture holds every event it
recorded (the journal), and the waiting ``heapscope run`` adds how it ended
(``exit_signal``), says so, and dies by the same signal.
"""

import os
import shlex
import signal
import sys

from heapscope.cli._capture import print_error
from heapscope.cli._program import (add_program_arguments, add_sample_argument, die_like_python_if_interrupted,
                                    flush_program_output,
                                    int_argument, port_number, program_from_arguments, run_program)
from heapscope.reports.text import format_bytes, safe_text


def register(commands):
    parser = commands.add_parser(
        "run",
        help="run a program and write a capture file of its allocations",
        description="Run a program (script, -m module or -c code) under heapscope.Tracker and write a capture "
                    "file of its allocations. The program keeps its output and exit code.",
    )
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="the capture file (default: heapscope-<script>.<pid>.hscap)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite the capture file if it exists")
    parser.add_argument("--native", action="store_true",
                        help="record the native (C/C++) frames of each allocation too")
    parser.add_argument("--trace-python-allocators", action="store_true",
                        help="record every block of Python's own allocator (pymalloc), not only its arenas")
    parser.add_argument("--aggregate", action="store_true",
                        help="write per-location totals (peak and leaks) instead of every allocation: "
                             "much smaller; no stats, no temporary allocations")
    parser.add_argument("--follow-fork", action="store_true",
                        help="child processes write their own captures, <FILE>.<child pid>: forked ones, and "
                             "multiprocessing's spawn and forkserver children")
    parser.add_argument("--follow-exec", action="store_true",
                        help="with or without --follow-fork: any child process running this same Python "
                             "(subprocess) writes its own capture too, <FILE>.<child pid>")
    parser.add_argument("--no-compress", action="store_true", help="store the capture's chunks uncompressed")
    parser.add_argument("--live-port", type=port_number, metavar="PORT",
                        help="serve the capture on this port instead of writing a file; the program waits "
                             "until `heapscope live PORT` connects")
    parser.add_argument("--live-address", default="127.0.0.1", metavar="ADDRESS",
                        help="with --live-port: the address to listen on (default: %(default)s, this machine only)")
    parser.add_argument("--memory-interval-ms", type=int_argument(1, what="a whole number of milliseconds"), default=10, metavar="MS",
                        help="how often resident and heap size are recorded (default: %(default)s)")
    parser.add_argument("--checkpoint-interval", type=int_argument(1, 2 ** 31 - 1, what="a whole number of milliseconds"),
                        default=1000, metavar="MS", dest="checkpoint_interval",
                        help="--aggregate: how often the profile so far is written, in milliseconds (default: "
                             "%(default)s); a killed program loses at most this much")
    add_sample_argument(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="say nothing on stderr after the run")
    add_program_arguments(parser)
    parser.set_defaults(handler=run)


def default_output(program):
    name = {"script": os.path.basename(program.target), "module": program.target, "code": "c"}[program.kind]
    return f"heapscope-{name}.{os.getpid()}.hscap"


def _make_tracker(options, output):
    from heapscope.tracker import FileDestination, FileFormat, SocketDestination, Tracker

    if options.live_port is not None:
        destination = SocketDestination(server_port=options.live_port, address=options.live_address)
    else:
        destination = FileDestination(output, overwrite=options.force, compress_on_exit=not options.no_compress)
    return Tracker(
        destination=destination,
        native_traces=options.native,
        trace_python_allocators=options.trace_python_allocators,
        follow_fork=options.follow_fork,
        memory_interval_ms=options.memory_interval_ms,
        checkpoint_interval_ms=options.checkpoint_interval,
        file_format=FileFormat.AGGREGATED_ALLOCATIONS if options.aggregate else FileFormat.ALL_ALLOCATIONS,
        sampling=options.sample,
    )


def run(parser, options):
    if options.live_port is not None:
        for flag, given in (("-o", options.output), ("--aggregate", options.aggregate),
                            ("--follow-fork", options.follow_fork), ("--follow-exec", options.follow_exec)):
            if given:
                parser.error(f"--live-port cannot be combined with {flag}")
    program = program_from_arguments(parser, options)
    output = None if options.live_port is not None else (options.output or default_output(program))
    flush_program_output()
    child = os.fork()
    if child:
        return _supervise(child, output, options)
    return _run_child(program, output, options)


# Signals sent to `heapscope run` itself are passed on to the program.
_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _supervise(child, output, options):
    """Waits for the program; the exit code to give. When it was killed by a
    signal, notes that in its capture and dies by the same signal."""
    # Signals sent to this process go on to the program. Ctrl-C from the
    # terminal reaches the program itself (the same process group): a SIGINT
    # the kernel sent is not passed on again.
    waited = {signal.SIGCHLD, signal.SIGINT, *_FORWARDED}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    while True:
        try:
            pid, status = os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            return 1
        if pid:
            break
        info = signal.sigtimedwait(waited, 1.0)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_signo == signal.SIGINT and info.si_code == _SI_KERNEL:
            continue
        _forward(child, info.si_signo)
    if not os.WIFSIGNALED(status):
        return os.waitstatus_to_exitcode(status)
    number = os.WTERMSIG(status)
    name = _signal_name(number)
    noted = "complete"
    if output is not None:
        from heapscope import _heapscope

        try:
            noted = _heapscope.capture_append_metadata(output, [("exit_signal", str(number)),
                                                                ("exit_signal_name", name)])
        except OSError as error:
            noted = error.strerror or str(error)
    if noted != "complete" and not options.quiet:
        where = ""
        if output is not None:
            quoted = safe_text(shlex.quote(output))
            where = (f"; {safe_text(output)} holds what it recorded until then (heapscope summary {quoted})"
                     if noted == "appended" else f"; {safe_text(output)} could not be completed: {noted}")
        _say(sys.stderr.fileno(), f"heapscope: the program was killed by {name}{where}")
    # Die the same way (SIGKILL, SIGINT, ...), as a shell expects of the program.
    if number not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {number})
    os.kill(os.getpid(), number)
    return 128 + number  # a signal whose default is not to end (SIGCHLD...)


_SI_KERNEL = 0x80  # siginfo's si_code for a signal the kernel sent (a terminal's Ctrl-C)


def _forward(child, number):
    try:
        os.kill(child, number)
    except ProcessLookupError:
        pass


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _run_child(program, output, options):
    # heapscope's own messages go where stderr pointed when we started,
    # whatever the program does to sys.stderr or to file descriptor 2.
    message_fd = os.dup(sys.stderr.fileno())
    try:
        tracker = _make_tracker(options, output)
        tracker._command_line = program.describe()
        tracker._end_metadata = [("exit_code", "0")]  # the program's, set below
        # The `heapscope` console script's frame sits outside heapscope's own at
        # the outer end of every stack: reports leave it out with them.
        tracker._launcher = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else None
        if options.live_port is not None:
            _say(message_fd, f"heapscope: waiting for a viewer on {options.live_address}:{options.live_port} "
                             f"(run: heapscope live {options.live_port})")
        tracker.__enter__()  # before anything of the program runs: refusals come first
        if options.follow_fork or options.follow_exec:
            from heapscope._follow import follow_children

            follow_children(output, tracker, options.follow_exec)
    except (OSError, RuntimeError, TypeError, ValueError) as error:
        os.close(message_fd)
        print_error(error)
        return 1

    parent = os.getpid()
    failure = None
    try:
        ran = run_program(program)
        tracker._end_metadata = [("exit_code", str(ran.exit_code))]
    finally:
        try:
            tracker.__exit__(None, None, None)
        except OSError as error:  # writing the capture failed (disk full...): the program's run still counts
            failure = error
    del ran.namespace
    flush_program_output()
    if os.getpid() != parent:  # a forked child that ran on to the end of the program
        os.close(message_fd)
        return ran.exit_code

    exit_code = ran.exit_code
    if failure is not None:
        _say(message_fd, f"heapscope: error: writing the capture failed: {failure.strerror or failure}")
        exit_code = exit_code or 1
    elif not options.quiet and not tracker.viewer_left:  # (a viewer that left was warned of)
        _say(message_fd, _done_message(options, output, tracker.totals or {}))
    os.close(message_fd)
    die_like_python_if_interrupted(ran)
    return exit_code


def _done_message(options, output, totals):
    allocations = totals.get("allocations", 0)
    peak = totals.get("peak_memory", 0)
    if output is None:
        return (f"heapscope: sent {allocations} allocations to the viewer on port {options.live_port} "
                f"(peak {format_bytes(peak)})")
    size = totals.get("bytes_written")
    if size is None:
        try:
            size = os.path.getsize(output)
        except OSError:
            size = 0
    quoted = safe_text(shlex.quote(output))
    lines = [f"heapscope: wrote {safe_text(output)} ({format_bytes(size)}, {allocations} allocations, "
             f"peak {format_bytes(peak)})"]
    if options.follow_fork or options.follow_exec:
        lines.append(f"heapscope: child processes wrote {safe_text(output)}.<pid> (the reports of "
                     f"{safe_text(output)} include them)")
    lines.append(f"heapscope: look at it with: heapscope summary {quoted}   (also: tree, "
                 f"{'' if options.aggregate else 'stats, '}summary --leaks)")
    return "\n".join(lines)


def _say(fd, text):
    try:
        os.write(fd, (text + "\n").encode("utf-8", "backslashreplace"))
    except OSError:
        pass


