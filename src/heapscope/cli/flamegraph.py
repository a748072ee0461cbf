"""``heapscope flamegraph FILE...``: an HTML flame graph of a capture, or of several merged (memray's command and options)."""

from heapscope.cli._capture import (add_files_argument, add_output_arguments, add_page_arguments, add_view_arguments,
                                    finish_all, guarded, open_captures, output_path, view_of, wrote)


def register(commands):
    parser = commands.add_parser(
        "flamegraph",
        help="an HTML flame graph of the memory held at the high-water mark of a capture",
        description="Write one self-contained HTML page (it works offline) with the flame graph of the "
                    "memory held at the high-water mark, or leaked (--leaks), or allocated and soon freed "
                    "(--temporary-allocations). --temporal adds a chart of memory over time: drag across "
                    "it to see the peak within a window, click to see the heap at a moment. Several "
                    "captures (or a parent's, with its children's beside it) make one graph with a root "
                    "frame per process; peaks are each process's own, summed.",
    )
    add_files_argument(parser)
    add_output_arguments(parser, "page")
    add_view_arguments(parser)
    add_page_arguments(parser)
    parser.add_argument("--native", action="store_true",
                        help="native frames too (captures made with --native; on by default when present)")
    parser.set_defaults(handler=guarded(run))


def run(parser, options):
    from heapscope.reports import presenters

    which, threshold = view_of(parser, options)
    if options.temporal and which != "peak":
        parser.error("--temporal shows the heap over time: it goes with neither --leaks nor "
                     "--temporary-allocations")
    from heapscope.reports.merge import profile_from_readers

    with open_captures(options) as captures:
        path = output_path(options, "flamegraph", ".html")
        profile = profile_from_readers(captures.readers, which, threshold=threshold,
                                       native=True if options.native else None,
                                       merge_threads=not options.split_threads, temporal=options.temporal,
                                       sources=captures.sources)
        presenters.write(profile, "html", path, kind="temporal" if options.temporal else "flamegraph",
                         inverted=options.inverted, split_threads=options.split_threads)
        wrote(path, "the flame graph")
        return finish_all(captures)
