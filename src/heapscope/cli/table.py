"""``heapscope table FILE``: an HTML table of a capture's locations (memray's command and options)."""

from heapscope.cli._capture import (add_files_argument, add_output_arguments, add_view_arguments, finish_all,
                                    guarded, open_captures, output_path, view_of, wrote)


def register(commands):
    parser = commands.add_parser(
        "table",
        help="an HTML table of the locations holding memory at the high-water mark of a capture",
        description="Write one self-contained HTML page with a sortable, filterable table of location, "
                    "function, bytes, blocks, allocator and thread: at the high-water mark, or leaked "
                    "(--leaks), or allocated and soon freed (--temporary-allocations).",
    )
    add_files_argument(parser)
    add_output_arguments(parser, "page")
    add_view_arguments(parser)
    parser.add_argument("--native", action="store_true",
                        help="locations in native code too (captures made with --native)")
    parser.set_defaults(handler=guarded(run))


def run(parser, options):
    from heapscope.reports import presenters

    which, threshold = view_of(parser, options)
    from heapscope.reports.merge import profile_from_readers

    with open_captures(options) as captures:
        path = output_path(options, "table", ".html")
        profile = profile_from_readers(captures.readers, which, threshold=threshold, native=bool(options.native),
                                       merge_threads=False, sources=captures.sources)
        presenters.write(profile, "html", path, kind="table")
        wrote(path, "the table")
        return finish_all(captures)
