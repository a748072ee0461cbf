"""``heapscope flamegraph FILE``: an HTML flame graph of a capture (memray's command and options)."""

from heapscope.cli._capture import (add_file_argument, add_output_arguments, add_page_arguments, add_view_arguments,
                                    finish, guarded, open_capture, output_path, view_of, wrote)


def register(commands):
    parser = commands.add_parser(
        "flamegraph",
        help="an HTML flame graph of the memory held at the high-water mark of a capture",
        description="Write one self-contained HTML page (it works offline) with the flame graph of the "
                    "memory held at the high-water mark, or leaked (--leaks), or allocated and soon freed "
                    "(--temporary-allocations). --temporal adds a chart of memory over time: drag across "
                    "it to see the peak within a window, click to see the heap at a moment.",
    )
    add_file_argument(parser)
    add_output_arguments(parser, "page")
    add_view_arguments(parser)
    add_page_arguments(parser)
    parser.add_argument("--native", action="store_true",
                        help="native frames too (captures made with --native; on by default when present)")
    parser.set_defaults(handler=guarded(run))


def run(parser, options):
    from heapscope.reports import adapters, presenters

    which, threshold = view_of(parser, options)
    if options.temporal and which != "peak":
        parser.error("--temporal shows the heap over time: it goes with neither --leaks nor "
                     "--temporary-allocations")
    path = output_path(options, "flamegraph", ".html")
    reader = open_capture(options.file)
    native = options.native or reader.metadata.has_native_traces
    merge = not options.split_threads
    if options.temporal:
        profile = adapters.temporal_profile_from_capture(reader, native=native, merge_threads=merge)
    else:
        profile = adapters.profile_from_capture(reader, which, threshold=threshold, native=native,
                                                merge_threads=merge)
    presenters.write(profile, "html", path, kind="temporal" if options.temporal else "flamegraph",
                     inverted=options.inverted, split_threads=options.split_threads)
    wrote(path, "the flame graph")
    return finish(reader)
