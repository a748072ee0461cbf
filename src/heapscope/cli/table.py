"""``heapscope table FILE``: an HTML table of a capture's locations (memray's command and options)."""

from heapscope.cli._capture import (add_file_argument, add_output_arguments, add_view_arguments, finish, guarded,
                                    open_capture, output_path, view_of, wrote)


def register(commands):
    parser = commands.add_parser(
        "table",
        help="an HTML table of the locations holding memory at the high-water mark of a capture",
        description="Write one self-contained HTML page with a sortable, filterable table of location, "
                    "function, bytes, blocks, allocator and thread: at the high-water mark, or leaked "
                    "(--leaks), or allocated and soon freed (--temporary-allocations).",
    )
    add_file_argument(parser)
    add_output_arguments(parser, "page")
    add_view_arguments(parser)
    parser.add_argument("--native", action="store_true",
                        help="locations in native code too (captures made with --native)")
    parser.set_defaults(handler=guarded(run))


def run(parser, options):
    from heapscope.reports import adapters, presenters

    which, threshold = view_of(parser, options)
    path = output_path(options, "table", ".html")
    reader = open_capture(options.file)
    profile = adapters.profile_from_capture(reader, which, threshold=threshold, native=options.native,
                                            merge_threads=False)
    presenters.write(profile, "html", path, kind="table")
    wrote(path, "the table")
    return finish(reader)
