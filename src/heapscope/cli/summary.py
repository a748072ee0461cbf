"""``heapscope summary FILE``: the locations holding the most memory at the peak (or at the end)."""

from heapscope.cli._capture import add_files_argument, finish_all, guarded, open_captures, positive_int, write_report


def register(commands):
    parser = commands.add_parser(
        "summary",
        help="the lines holding the most memory at the high-water mark of a capture",
        description="Show the locations holding the most memory when the heap was at its highest "
                    "(or, with --leaks, when tracking stopped), headed by what ran, for how long, "
                    "its peak and its totals.",
    )
    add_files_argument(parser)
    parser.add_argument("-n", "--rows", type=positive_int, default=10,
                        help="locations shown (default: %(default)s)")
    parser.add_argument("--leaks", action="store_true",
                        help="memory still allocated when tracking stopped, instead of at the peak")
    parser.set_defaults(handler=guarded(run))


def run(parser, options):
    from heapscope.reports.adapters import CAPTURE_VIEWS
    from heapscope.reports.capture_text import merged_summary_report, summary_report
    from heapscope.reports.merge import profile_from_readers

    which = "leaks" if options.leaks else "peak"
    with open_captures(options) as captures:
        profile = profile_from_readers(captures.readers, which, native=False, sources=captures.sources)
        if len(captures.readers) == 1:
            report = summary_report(captures.readers[0], profile, options.rows, CAPTURE_VIEWS[which].lower())
        else:
            report = merged_summary_report(captures.readers, captures.sources, profile, options.rows,
                                           CAPTURE_VIEWS[which].lower())
        write_report(report)
        return finish_all(captures)
