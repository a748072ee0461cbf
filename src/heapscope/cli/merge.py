"""``heapscope merge FILE... -o OUT``: several captures as one file, which every command reads like a capture."""

from heapscope.cli._capture import CommandError, add_files_argument, guarded, open_captures, wrote


def register(commands):
    parser = commands.add_parser(
        "merge",
        help="write several captures (processes) into one file that every report reads like a capture",
        description="Write the captures given (and, unless --no-children, those their child processes "
                    "wrote beside them, FILE.<pid>) into one file. The captures are copied as they are; "
                    "the reports of the merged file show each process under a root frame of its own.",
    )
    add_files_argument(parser)
    parser.add_argument("-o", "--output", metavar="FILE", required=True, help="the merged file to write")
    parser.add_argument("-f", "--force", action="store_true", help="replace the output file if it exists")
    parser.set_defaults(handler=guarded(run))


def run(parser, options):
    import os

    from heapscope.reports.merge import expand_captures, write_merged

    if os.path.exists(options.output) and not options.force:
        raise CommandError(f"{options.output} already exists: use --force to replace it, or -o to choose another file")
    paths = expand_captures(options.files, children=not options.no_children)
    if any(os.path.realpath(path) == os.path.realpath(options.output) for path in paths):
        raise CommandError(f"{options.output} is one of the captures to merge: choose another output file")
    with open_captures(options):  # each must be a capture: one clear line otherwise
        pass
    write_merged(paths, options.output)
    wrote(options.output, f"{len(paths)} captures merged")
    return 0
