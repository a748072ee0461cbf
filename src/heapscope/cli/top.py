"""``heapscope top``: run a program under heapscope.tracemalloc and show where its memory is.

The report is taken when the program ends (normally, by sys.exit, or by an
uncaught exception): the memory still allocated then, grouped by line or by
stack, and the peak seen while it ran.
"""

import os
import sys
import time

from heapscope.cli._program import (add_program_arguments, add_sample_argument, die_like_python_if_interrupted,
                                    flush_program_output, positive_int, program_from_arguments, run_program)
from heapscope.reader import is_launch_frame
from heapscope.reports.text import format_bytes, safe_text, table


def register(commands):
    parser = commands.add_parser(
        "top",
        help="run a program and show the lines holding the most memory at its end",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--nframe", type=positive_int, default=32,
                        help="frames kept per allocation (default: %(default)s)")
    parser.add_argument("--limit", type=positive_int, default=10,
                        help="entries shown (default: %(default)s)")
    parser.add_argument("--group-by", choices=("lineno", "filename", "traceback"), default="lineno",
                        help="how allocations are grouped (default: %(default)s)")
    parser.add_argument("--cumulative", action="store_true",
                        help="count each allocation for every frame of its stack, not only the innermost")
    add_sample_argument(parser)
    add_program_arguments(parser)
    parser.set_defaults(handler=run)


def run(parser, options):
    from heapscope import tracemalloc

    if options.cumulative and options.group_by == "traceback":
        parser.error("--cumulative works with --group-by lineno or filename")
    if options.nframe > 65535:
        parser.error("--nframe must be at most 65535")
    program = program_from_arguments(parser, options)

    # The report goes where stdout pointed when we started, whatever the
    # program does to sys.stdout or to file descriptor 1.
    sys.stdout.flush()
    report_fd = os.dup(sys.stdout.fileno())
    started = time.perf_counter()
    tracemalloc.start(options.nframe, sampling=options.sample)
    try:
        ran = run_program(program)
        snapshot = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        own = tracemalloc.get_tracemalloc_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    del ran.namespace  # held until the snapshot was taken
    flush_program_output()

    with os.fdopen(report_fd, "w", encoding="utf-8", errors="backslashreplace") as out:
        try:
            _write_report(out, options, program, ran.exit_code, elapsed, _program_only(snapshot, tracemalloc),
                          current, peak, own)
            out.flush()
        except BrokenPipeError:  # `heapscope top ... | head`: the program's exit code still stands
            _silence(out)
    die_like_python_if_interrupted(ran)
    return ran.exit_code


def _silence(stream):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)


_PACKAGE_PREFIX = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _is_ours(filename):
    """heapscope's frames and the runpy frames that started it are not the program's."""
    return is_launch_frame(filename, _PACKAGE_PREFIX)


def _program_only(snapshot, tracemalloc):
    """The snapshot with heapscope's own frames cut from every stack, and the
    blocks that heapscope itself made dropped."""
    trimmed = {}
    traces = []
    for trace in snapshot.traces._traces:
        frames = trace[2]
        kept = trimmed.get(id(frames))
        if kept is None:
            kept = trimmed[id(frames)] = (frames, tuple(f for f in frames if not _is_ours(f[0])))
        if kept[1]:
            traces.append(trace[:2] + (kept[1],) + trace[3:])  # a sampled trace keeps its count
    return tracemalloc.Snapshot(traces, snapshot.traceback_limit)


def _write_report(out, options, program, exit_code, elapsed, snapshot, current, peak, own):
    stats = snapshot.statistics(options.group_by, cumulative=options.cumulative)
    print(file=out)
    print(f"heapscope top: {safe_text(program.describe())}", file=out)
    print(f"  exit code {exit_code}, ran {elapsed:.2f} s", file=out)
    if options.sample:
        print(f"  sampled, 1 sample per {format_bytes(options.sample)} on average: sizes and counts are "
              f"unbiased estimates", file=out)
        blocks = sum(stat.count for stat in snapshot.statistics("filename"))
        print(f"  traced memory at exit {format_bytes(current)}, peak {format_bytes(peak)}, "
              f"in about {blocks} blocks; heapscope's own memory {format_bytes(own)}", file=out)
    else:
        print(f"  traced memory at exit {format_bytes(current)}, peak {format_bytes(peak)}, "
              f"in {len(snapshot.traces)} blocks; heapscope's own memory {format_bytes(own)}", file=out)
    print(file=out)
    if not stats:
        print("  no traced memory left at exit", file=out)
        return
    shown = stats[:options.limit]
    # Shares of the memory held, each block counted once (cumulative
    # statistics count a block once for every frame of its stack).
    total = sum(trace.size for trace in snapshot.traces) or 1
    if options.group_by == "traceback":
        for rank, stat in enumerate(shown, 1):
            print(f"#{rank}: {format_bytes(stat.size)} in {stat.count} blocks "
                  f"({100 * stat.size / total:.1f}%)", file=out)
            for line in stat.traceback.format(most_recent_first=True):
                print(safe_text(line), file=out)
            print(file=out)
    else:
        rows = []
        for rank, stat in enumerate(shown, 1):
            frame = stat.traceback[0]
            where = frame.filename if options.group_by == "filename" else f"{frame.filename}:{frame.lineno}"
            rows.append([f"#{rank}", format_bytes(stat.size), f"{100 * stat.size / total:.1f}%", stat.count,
                         safe_text(where)])
        print(table(["rank", "size", "share", "blocks", "where"], rows, ["<", ">", ">", ">", "<"]), file=out)
    rest = stats[options.limit:]
    if rest and not options.cumulative:
        print(f"\n  ... and {len(rest)} more, holding {format_bytes(sum(s.size for s in rest))}", file=out)
    elif rest:
        print(f"\n  ... and {len(rest)} more", file=out)
