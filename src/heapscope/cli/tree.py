"""``heapscope tree FILE``: the call tree of the memory held at the peak (or leaked, or temporary)."""

import sys

from heapscope.cli._capture import add_file_argument, finish, guarded, non_negative_int, open_capture, write_report


def register(commands):
    parser = commands.add_parser(
        "tree",
        help="a call tree of the memory held at the high-water mark of a capture",
        description="Show, as a call tree (outermost call first, biggest branch first), the memory held "
                    "at the high-water mark, or leaked (--leaks), or allocated and freed again soon "
                    "after (--temporary). Branches under 1%% of the total are folded.",
    )
    add_file_argument(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--leaks", action="store_true", help="memory still allocated when tracking stopped")
    which.add_argument("--temporary", action="store_true",
                       help="blocks freed within --threshold allocations after their own")
    parser.add_argument("--threshold", type=non_negative_int, default=None,
                        help="with --temporary: how many other allocations may come between a block's "
                             "allocation and its free (default: 1; 0: freed at once)")
    parser.add_argument("--native", action="store_true",
                        help="show native frames too (captures made with --native)")
    parser.set_defaults(handler=guarded(run))


def run(parser, options):
    from heapscope.reports.adapters import profile_from_capture
    from heapscope.reports.capture_text import tree_report

    if options.threshold is not None and not options.temporary:
        parser.error("--threshold goes with --temporary")
    reader = open_capture(options.file)
    which = "leaks" if options.leaks else "temporary" if options.temporary else "peak"
    threshold = 1 if options.threshold is None else options.threshold
    profile = profile_from_capture(reader, which, threshold=threshold, native=options.native)
    write_report(tree_report(profile))
    if options.native and not reader.metadata.has_native_traces:
        print("heapscope: note: this capture has no native traces (record it with --native)",
              file=sys.stderr)
    return finish(reader)
