"""``heapscope stats FILE``: size histogram, allocator counts, top locations by bytes and by count."""

from heapscope.cli._capture import add_file_argument, finish, guarded, open_capture, positive_int, write_report


def register(commands):
    parser = commands.add_parser(
        "stats",
        help="statistics of every allocation in a capture",
        description="Statistics over every allocation of a capture (freed or not): a histogram of sizes, "
                    "the count per allocation function, and the top locations by bytes and by count. "
                    "Needs a capture of every allocation (not --aggregate).",
    )
    add_file_argument(parser)
    parser.add_argument("--json", action="store_true", help="write the statistics as JSON to stdout")
    parser.add_argument("-n", "--top", type=positive_int, default=5,
                        help="locations shown in each top list (default: %(default)s)")
    parser.set_defaults(handler=guarded(run))


def run(parser, options):
    from heapscope.reports.capture_text import stats_json, stats_report

    reader = open_capture(options.file)
    stats = reader.stats(top=options.top)
    render = stats_json if options.json else stats_report
    write_report(render(reader, options.file, stats))
    return finish(reader)
