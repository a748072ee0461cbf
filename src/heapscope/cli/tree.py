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
    from heapscope.reports.capture_text import build_tree, tree_report

    if options.threshold is not None and not options.temporary:
        parser.error("--threshold goes with --temporary")
    reader = open_capture(options.file)
    if options.leaks:
        records, title = reader.get_leaked_allocation_records(), "Memory still held when tracking stopped"
    elif options.temporary:
        threshold = 1 if options.threshold is None else options.threshold
        records = reader.get_temporary_allocation_records(threshold=threshold)
        title = (f"Temporary allocations (at most {threshold} other allocation{'' if threshold == 1 else 's'} "
                 f"before their free)")
    else:
        records, title = reader.get_high_watermark_allocation_records(), "Memory held at the high-water mark"
    hybrid = options.native and reader.metadata.has_native_traces
    root = build_tree(reader, records, hybrid=hybrid)
    write_report(tree_report(root, title))
    if options.native and not reader.metadata.has_native_traces:
        print("heapscope: note: this capture has no native traces (record it with --native)",
              file=sys.stderr)
    return finish(reader)
