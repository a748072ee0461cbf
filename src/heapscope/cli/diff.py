"""``heapscope diff BEFORE AFTER``: what grew and what shrank between two captures or two snapshot files."""

import sys

from heapscope.cli._capture import (CommandError, add_output_arguments, guarded, output_path, size_argument,
                                    write_report, wrote)


def register(commands):
    parser = commands.add_parser(
        "diff",
        help="what grew and what shrank between two captures (or two tracemalloc snapshot files)",
        description="Compare the memory held at the high-water mark (or leaked, --leaks) of two captures, "
                    "or two heapscope.tracemalloc snapshots written by Snapshot.dump: print the locations "
                    "that changed most, and write a differential flame graph (growth red, shrinkage blue). "
                    "With --fail-on-growth, exit 1 when the total grew by more than SIZE: a gate for CI.",
    )
    parser.add_argument("before", metavar="BEFORE", help="the earlier capture or snapshot file")
    parser.add_argument("file", metavar="AFTER", help="the later capture or snapshot file")
    add_output_arguments(parser, "differential flame graph")
    parser.add_argument("--leaks", action="store_true",
                        help="compare what was still held when tracking stopped, not the peaks")
    parser.add_argument("--fail-on-growth", metavar="SIZE", type=size_argument, default=None,
                        help="exit 1 when the total grew by more than SIZE (bytes, or 512KiB, 10MB, ...)")
    parser.add_argument("-n", "--rows", type=int, default=10, help="changed locations printed (default: 10)")
    parser.add_argument("--no-html", action="store_true", help="print the table only, write no page")
    parser.set_defaults(handler=guarded(run))


def _load(path, which):
    from heapscope.reports.adapters import load_profile

    try:
        return load_profile(path, which)
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise CommandError(str(error)) from None


def diff_table(profile, rows):
    """The locations whose bytes changed most, as text."""
    from heapscope.reports.text import format_bytes, safe_text, table

    def signed(size):
        return ("+" if size > 0 else "-" if size < 0 else "") + format_bytes(abs(size))

    changes = [row for row in profile.locations() if row.bytes != row.before_bytes]
    changes.sort(key=lambda row: (-abs(row.bytes - row.before_bytes), row.frame.filename, row.frame.lineno))
    before, after = profile.total_before_bytes, profile.total_bytes
    lines = [f"heapscope diff: {safe_text(profile.source)}",
             f"  total     {format_bytes(before)} -> {format_bytes(after)} ({signed(after - before)})", ""]
    if not changes:
        lines.append("  (no location changed)")
        return "\n".join(lines)
    cells = [[safe_text(row.frame.function), f"{safe_text(row.frame.filename)}:{row.frame.lineno}",
              format_bytes(row.before_bytes), format_bytes(row.bytes), signed(row.bytes - row.before_bytes),
              f"{row.blocks - row.before_blocks:+d}"] for row in changes[:rows]]
    lines.append(table(["function", "location", "before", "after", "change", "blocks"], cells,
                       ["<", "<", ">", ">", ">", ">"]))
    if len(changes) > rows:
        lines.append(f"\n  ... and {len(changes) - rows} more locations changed")
    return "\n".join(lines)


def run(parser, options):
    from heapscope.reports import presenters
    from heapscope.reports.model import diff_profiles
    from heapscope.reports.text import format_bytes

    if options.rows < 1:
        parser.error("--rows must be at least 1")
    which = "leaks" if options.leaks else "peak"
    path = None if options.no_html else output_path(options, "diff", ".html")
    before = _load(options.before, which)
    after = _load(options.file, which)
    profile = diff_profiles(before, after)
    write_report(diff_table(profile, options.rows))
    if path is not None:
        presenters.write(profile, "html", path, kind="diff")
        wrote(path, "the differential flame graph")
    growth = profile.total_bytes - profile.total_before_bytes
    if options.fail_on_growth is not None and growth > options.fail_on_growth:
        print(f"heapscope: memory grew by {format_bytes(growth)} ({growth} B), more than the "
              f"{format_bytes(options.fail_on_growth)} allowed by --fail-on-growth", file=sys.stderr)
        return 1
    return 0
