"""``heapscope transform --format F FILE -o OUT``: a capture in a format other tools open (memray's command)."""

from heapscope.cli._capture import (add_file_argument, add_output_arguments, add_view_arguments, finish, guarded,
                                    open_capture, output_path, view_of, wrote)

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
    add_file_argument(parser)
    add_output_arguments(parser, "output")
    add_view_arguments(parser)
    parser.add_argument("--native", action="store_true", help="native frames too (captures made with --native)")
    parser.add_argument("--split-threads", action="store_true", help="keep threads apart (pprof labels, "
                                                                        "speedscope profiles, CSV rows)")
    parser.set_defaults(handler=guarded(run))


def run(parser, options):
    from heapscope.reports import adapters, presenters

    which, threshold = view_of(parser, options)
    path = output_path(options, f"{options.format}", presenters.PRESENTERS[options.format].suffix)
    reader = open_capture(options.file)
    profile = adapters.profile_from_capture(reader, which, threshold=threshold, native=options.native,
                                            merge_threads=not options.split_threads)
    presenters.write(profile, options.format, path)
    wrote(path, f"the {options.format} file")
    return finish(reader)
