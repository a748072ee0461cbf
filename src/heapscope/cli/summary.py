"""``heapscope summary FILE``: the locations holding the most memory at the peak (or at the end)."""

from heapscope.cli._capture import add_file_argument, finish, guarded, open_capture, positive_int, write_report


def register(commands):
    parser = commands.add_parser(
        "summary",
        help="the lines holding the most memory at the high-water mark of a capture",
        description="Show the locations holding the most memory when the heap was at its highest "
                    "(or, with --leaks, when tracking stopped), headed by what ran, for how long, "
                    "its peak and its totals.",
    )
    add_file_argument(parser)
    parser.add_argument("-n", "--rows", type=positive_int, default=10,
                        help="locations shown (default: %(default)s)")
    parser.add_argument("--leaks", action="store_true",
                        help="memory still allocated when tracking stopped, instead of at the peak")
    parser.set_defaults(handler=guarded(run))


def run(parser, options):
    from heapscope.reports.adapters import CAPTURE_VIEWS, profile_from_capture
    from heapscope.reports.capture_text import summary_report

    reader = open_capture(options.file)
    which = "leaks" if options.leaks else "peak"
    profile = profile_from_capture(reader, which)
    profile.source = options.file
    write_report(summary_report(reader, profile, options.rows, CAPTURE_VIEWS[which].lower()))
    return finish(reader)
