"""``heapscope transform --format F FILE -o OUT``: a capture in a format other tools open (memray's command)."""

from heapscope.cli._capture import (add_files_argument, add_output_arguments, add_view_arguments, finish_all,
                                    guarded, open_captures, output_path, view_of, wrote)

EXPORT_FORMATS = ("pprof", "speedscope", "collapsed", "csv")


def register(commands):
    parser = commands.add_parser(
        "transform",
        help="convert a capture for other tools: pprof, speedscope, collapsed stacks, CSV",
        description="Write the memory held at the high-water mark (or leaked, or temporary) in a format "
                    "other tools open: pprof (go tool pprof), speedscope (speedscope.app), collapsed "
                    "stacks (flamegraph.pl) or CSV.",
    )
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="the output format")
    add_files_argument(parser)
    add_output_arguments(parser, "output")
    add_view_arguments(parser)
    parser.add_argument("--native", action="store_true", help="native frames too (captures made with --native)")
    parser.add_argument("--split-threads", action="store_true", help="keep threads apart (pprof labels, "
                                                                        "speedscope profiles, CSV rows)")
    parser.set_defaults(handler=guarded(run))


def run(parser, options):
    from heapscope.reports import presenters

    which, threshold = view_of(parser, options)
    from heapscope.reports.merge import profile_from_readers

    with open_captures(options) as captures:
        path = output_path(options, f"{options.format}", presenters.PRESENTERS[options.format].suffix)
        profile = profile_from_readers(captures.readers, which, threshold=threshold, native=bool(options.native),
                                       merge_threads=not options.split_threads, sources=captures.sources)
        presenters.write(profile, options.format, path)
        wrote(path, f"the {options.format} file")
        return finish_all(captures)
