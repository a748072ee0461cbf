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

