"""``heapscope parse FILE``: every record of a capture as the file holds it (memray's ``parse``)."""

import sys

from heapscope.cli._capture import add_file_argument, finish, guarded, open_capture


def register(commands):
    parser = commands.add_parser(
        "parse",
        help="print every record of a capture, as the file holds it",
        description="Every record of a capture, one line each, as the file holds it: the file header, then "
                    "TYPE name=value ... (threads, code, stack nodes, loaded objects, allocations and "
                    "deallocations, memory records, checkpoints, metadata). For debugging captures; "
                    "docs/capture-format.md says what each field means.",
    )
    add_file_argument(parser)
    parser.set_defaults(handler=guarded(run))


def run(parser, options):
    from heapscope.reader import write_records

    reader = open_capture(options.file)
    write_records(reader, sys.stdout)
    sys.stdout.flush()
    return finish(reader)
