"""What the commands that read a capture share: opening it, one-line errors,
the warning for a damaged or unfinished file, and the report's output."""

import os
import sys

from heapscope.cli._program import int_argument, positive_int  # noqa: F401 (positive_int: for the commands)


class CommandError(Exception):
    """Ends a command with one line on stderr and ``exit_code``."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


def error_line(message):
    from heapscope.reports.text import safe_text

    return f"heapscope: error: {safe_text(' '.join(str(message).split()))}"


def print_error(message):
    try:
        print(error_line(message), file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


non_negative_int = int_argument(0)


def open_capture(path):
    """A FileReader on *path*, or CommandError with one clear line."""
    from heapscope.reader import CaptureFileError, FileReader

    try:
        return FileReader(path, report_progress=_stderr_is_tty())
    except CaptureFileError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise CommandError(f"cannot read {path}: {reason}") from None


def _stderr_is_tty():
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def guarded(handler):
    """Wraps a command: expected failures (a bad or damaged file, an
    unsupported report for the file's format) become one line on stderr."""

    def run(parser, options):
        from heapscope.reader import CaptureFileError

        try:
            return handler(parser, options)
        except CommandError as error:
            print_error(error)
            return error.exit_code
        except (CaptureFileError, NotImplementedError) as error:
            print_error(error)
            return 1
        except ValueError as error:  # the engine's reader met bytes it cannot read mid-pass
            print_error(f"{getattr(options, 'file', '')}: {error}")
            return 1
        except OSError as error:
            if isinstance(error, BrokenPipeError):
                raise
            print_error(f"{getattr(error, 'filename', None) or getattr(options, 'file', '')}: "
                        f"{error.strerror or error}")
            return 1

    return run


def write_report(text):
    """The report to stdout, in one write."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def finish(reader):
    """The exit code for a report made from *reader*, after a one-line
    warning when the file is damaged (2) or unfinished (0)."""
    metadata = reader.metadata
    if metadata.damage:
        _warn(f"{reader.path} is damaged: {metadata.damage}; the report covers what was read before it")
        return 2
    if not metadata.complete:
        signal_number = metadata.exit_signal
        if signal_number:
            import signal

            try:
                name = signal.Signals(signal_number).name
            except ValueError:
                name = f"signal {signal_number}"
            _warn(f"{reader.path} was not finished: the program was killed by {name}; "
                  f"the report covers what it recorded until then")
        else:
            _warn(f"{reader.path} was not finished (was the program killed?); "
                  f"the report covers what was written")
    return 0


def _warn(message):
    from heapscope.reports.text import safe_text

    try:
        print(f"heapscope: warning: {safe_text(' '.join(message.split()))}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def add_file_argument(parser):
    parser.add_argument("file", metavar="FILE", help="a capture written by heapscope run or heapscope.Tracker")



def add_files_argument(parser):
    """FILE...: one capture or several (merged: one root frame per process),
    and --no-children."""
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="captures written by heapscope run or heapscope.Tracker, or by heapscope merge; "
                             "several make one report, each process under a root frame of its own, and the "
                             "captures a capture's child processes wrote beside it (FILE.<pid>) are added")
    parser.add_argument("--no-children", action="store_true",
                        help="leave out the captures of child processes found beside FILE (FILE.<pid>)")


def open_captures(options):
    """Open readers on what add_files_argument's options name
    (heapscope.reports.merge.CaptureSet), or CommandError with one clear
    line. Sets ``options.file`` to the first file: default output names
    and messages go by it."""
    from heapscope.reports.merge import CaptureSet

    options.file = options.files[0]
    return CaptureSet(options.files, children=not options.no_children, open_reader=open_capture)


def finish_all(captures):
    """finish() for every capture of a CaptureSet: the worst exit code."""
    return max(finish(reader) for reader in captures.readers)


def add_output_arguments(parser, what):
    parser.add_argument("-o", "--output", metavar="FILE",
                        help=f"where to write the {what} (default: heapscope-<command>-<capture name> beside "
                             f"the capture)")
    parser.add_argument("-f", "--force", action="store_true", help="replace the output file if it exists")


def output_path(options, command, suffix):
    """The output file for a command that writes one (memray's rules: a
    default name beside the capture; an existing file is refused without
    --force)."""
    path = options.output
    if path is None:
        capture = options.file
        base = os.path.basename(capture)
        for ending in (".hscap", ".bin"):
            if base.endswith(ending):
                base = base[:-len(ending)]
        path = os.path.join(os.path.dirname(capture), f"heapscope-{command}-{base}{suffix}")
    if os.path.exists(path) and not options.force:
        raise CommandError(f"{path} already exists: use --force to replace it, or -o to choose another file")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CommandError(f"cannot write {path}: no directory {directory}")
    return path


def add_view_arguments(parser):
    """--leaks, --temporary-allocations and --temporary-allocation-threshold (memray's names)."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--leaks", action="store_true", help="memory still allocated when tracking stopped")
    which.add_argument("--temporary-allocations", action="store_true",
                       help="blocks freed soon after their allocation (see --temporary-allocation-threshold)")
    parser.add_argument("--temporary-allocation-threshold", metavar="N", type=non_negative_int, default=None,
                        help="with --temporary-allocations: how many other allocations may come between a "
                             "block's allocation and its free (default: 1; 0: freed before the next one)")


def add_page_arguments(parser):
    """--temporal, --inverted and --split-threads: how a flame graph page
    starts (``heapscope flamegraph``, ``%%heapscope_flamegraph``)."""
    parser.add_argument("--temporal", action="store_true",
                        help="memory over time above the flame graph, with the heap at any moment")
    parser.add_argument("--inverted", action="store_true",
                        help="the allocating functions at the root, their callers above them")
    parser.add_argument("--split-threads", action="store_true", help="start with one thread shown at a time")


def view_of(parser, options):
    """("peak" | "leaks" | "temporary", threshold) from add_view_arguments' options."""
    threshold = options.temporary_allocation_threshold
    if threshold is not None and not options.temporary_allocations:
        parser.error("--temporary-allocation-threshold goes with --temporary-allocations")
    which = "leaks" if options.leaks else "temporary" if options.temporary_allocations else "peak"
    return which, 1 if threshold is None else threshold


def wrote(path, what):
    """Tells the user where the output went, and how to look at it."""
    from heapscope.reports.text import safe_text

    print(f"heapscope: wrote {what} to {safe_text(path)}", file=sys.stderr)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000 ** 2, "mb": 1000 ** 2,
               "mib": 1024 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3}


def size_argument(text):
    """An argparse type: a size in bytes, with an optional unit: 1048576,
    512KiB, 10MB, 1.5GiB (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    import argparse
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match and match.group(2).lower()
    if not match or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"expected a size such as 1048576, 512KiB or 10MB, got {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])
