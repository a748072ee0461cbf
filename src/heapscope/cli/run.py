"""``heapscope run``: run a program under heapscope.Tracker and write a capture file.

The program runs in this process the way ``python`` runs it (script, ``-m
module`` or ``-c code``), with its own output and exit code; the capture is
written even when it raises or calls sys.exit. Afterwards heapscope says, on
stderr, where the capture is and how to look at it.
"""

import os
import shlex
import sys

from heapscope._sampling import DEFAULT_SAMPLING_INTERVAL, MAX_SAMPLING_INTERVAL
from heapscope.cli._capture import print_error
from heapscope.cli._program import (add_program_arguments, die_like_python_if_interrupted, flush_program_output,
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
                        help="a forked child writes its own capture, <FILE>.<child pid>")
    parser.add_argument("--no-compress", action="store_true", help="store the capture's chunks uncompressed")
    parser.add_argument("--live-port", type=port_number, metavar="PORT",
                        help="serve the capture on this port instead of writing a file; the program waits "
                             "until `heapscope live PORT` connects")
    parser.add_argument("--memory-interval-ms", type=int_argument(1, what="a whole number of milliseconds"), default=10, metavar="MS",
                        help="how often resident and heap size are recorded (default: %(default)s)")
    parser.add_argument("--sample", nargs="?", const=DEFAULT_SAMPLING_INTERVAL, default=None, metavar="BYTES",
                        type=int_argument(1, MAX_SAMPLING_INTERVAL, what="a mean sampling interval in bytes"),
                        help="record a Poisson sample of the allocations, one per BYTES allocated on average "
                             f"(default {DEFAULT_SAMPLING_INTERVAL}); reports then show unbiased estimates")
    parser.add_argument("-q", "--quiet", action="store_true", help="say nothing on stderr after the run")
    add_program_arguments(parser)
    parser.set_defaults(handler=run)


def default_output(program):
    name = {"script": os.path.basename(program.target), "module": program.target, "code": "c"}[program.kind]
    return f"heapscope-{name}.{os.getpid()}.hscap"


def _make_tracker(options, output):
    from heapscope.tracker import FileDestination, FileFormat, SocketDestination, Tracker

    if options.live_port is not None:
        destination = SocketDestination(server_port=options.live_port)
    else:
        destination = FileDestination(output, overwrite=options.force, compress_on_exit=not options.no_compress)
    return Tracker(
        destination=destination,
        native_traces=options.native,
        trace_python_allocators=options.trace_python_allocators,
        follow_fork=options.follow_fork,
        memory_interval_ms=options.memory_interval_ms,
        file_format=FileFormat.AGGREGATED_ALLOCATIONS if options.aggregate else FileFormat.ALL_ALLOCATIONS,
        sampling=options.sample,
    )


def run(parser, options):
    if options.live_port is not None:
        for flag, given in (("-o", options.output), ("--aggregate", options.aggregate),
                            ("--follow-fork", options.follow_fork)):
            if given:
                parser.error(f"--live-port cannot be combined with {flag}")
    program = program_from_arguments(parser, options)
    output = None if options.live_port is not None else (options.output or default_output(program))

    # heapscope's own messages go where stderr pointed when we started,
    # whatever the program does to sys.stderr or to file descriptor 2.
    message_fd = os.dup(sys.stderr.fileno())
    try:
        tracker = _make_tracker(options, output)
        tracker._command_line = program.describe()
        # The `heapscope` console script's frame sits outside heapscope's own at
        # the outer end of every stack: reports leave it out with them.
        tracker._launcher = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else None
        if options.live_port is not None:
            _say(message_fd, f"heapscope: waiting for a viewer on 127.0.0.1:{options.live_port} "
                             f"(run: heapscope live {options.live_port})")
        tracker.__enter__()  # before anything of the program runs: refusals come first
    except (OSError, RuntimeError, TypeError, ValueError) as error:
        os.close(message_fd)
        print_error(error)
        return 1

    parent = os.getpid()
    failure = None
    try:
        ran = run_program(program)
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
    elif not options.quiet:
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
    if options.follow_fork:
        lines.append(f"heapscope: forked children wrote {safe_text(output)}.<pid>")
    lines.append(f"heapscope: look at it with: heapscope summary {quoted}   (also: tree, "
                 f"{'' if options.aggregate else 'stats, '}summary --leaks)")
    return "\n".join(lines)


def _say(fd, text):
    try:
        os.write(fd, (text + "\n").encode("utf-8", "backslashreplace"))
    except OSError:
        pass


