"""IPython and Jupyter magics: ``%load_ext heapscope``, then

* ``%%heapscope_flamegraph [options]``: profiles the cell and shows the HTML
  flame graph of its peak (or of what it leaked, ``--leaks``; of its
  temporary allocations, ``--temporary-allocations``; over time,
  ``--temporal``) inline, in an ``<iframe srcdoc>`` that holds the whole
  page, so that it still shows in a saved or exported notebook. The page is
  also written to ``heapscope-results/<dir>/flamegraph.html``. The options
  are ``heapscope flamegraph``'s.
* ``%%heapscope_top [--limit N]``: profiles the cell and prints the lines
  that still hold the most memory when it ends, and the cell's peak.

The cell runs as IPython runs any cell (its last value is shown, its magics
work) under a ``heapscope.Tracker``. A cell that raises still shows its
report, then its exception is raised again, so IPython shows it as usual and
a notebook run stops there; ``%debug`` and ``sys.last_value`` see the cell's
own exception. Reports leave out heapscope's and IPython's frames: stacks
start at the cell.

memray's ``%%memray_flamegraph`` differs in that it shows the page in an
iframe that loads the file (``IFrame(path)``), which only a live Jupyter
server can serve, and indents the cell's text into a ``with`` block (which
changes multi-line strings in it); docs/jupyter.md compares them.
"""

import argparse
import html
import os
import shlex
import sys
import tempfile

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class

from heapscope.tracker import _remove_quietly as _remove

__all__ = ["load_ipython_extension", "HeapscopeMagics", "RESULTS_DIR"]

RESULTS_DIR = "heapscope-results"
_HERE = os.path.normcase(os.path.abspath(__file__))
_FRAMEWORK_PACKAGES = ("IPython", "ipykernel")


def load_ipython_extension(ipython):
    """``%load_ext heapscope`` (through ``heapscope.load_ipython_extension``)."""
    ipython.register_magics(HeapscopeMagics)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting the kernel."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().strip()}")

    def exit(self, status=0, message=None):
        if status:
            raise UsageError(message or f"{self.prog}: bad arguments")
        raise UsageError(self.format_help())  # -h: the help, and the cell is not run


def flamegraph_parser():
    from heapscope.cli._capture import add_page_arguments, add_view_arguments

    parser = _Parser(prog="%%heapscope_flamegraph",
                     description="Profile the cell and show the flame graph of the memory it held at its peak.")
    add_view_arguments(parser)
    add_page_arguments(parser)
    parser.add_argument("--native", action="store_true", help="record and show native (C/C++) frames too")
    parser.add_argument("--trace-python-allocators", action="store_true",
                        help="record every block of Python's own allocator (pymalloc), not only its arenas")
    parser.add_argument("--height", type=int, default=600, help="the height of the inline page in pixels")
    return parser


def top_parser():
    from heapscope.cli._program import positive_int

    parser = _Parser(prog="%%heapscope_top",
                     description="Profile the cell and show the lines holding the most memory when it ends.")
    parser.add_argument("--limit", type=positive_int, default=10, help="lines shown (default: %(default)s)")
    parser.add_argument("--native", action="store_true",
                        help="record native frames too (a line is then the innermost frame, native or not)")
    parser.add_argument("--trace-python-allocators", action="store_true",
                        help="record every block of Python's own allocator (pymalloc), not only its arenas")
    return parser


class _Outcome:
    """How the cell ran: IPython's ExecutionResult, and the exception whose
    display was held back until the report was shown."""

    def __init__(self):
        self.result = None
        self.held = None  # (type, value, traceback) of the cell's error

    @property
    def error(self):
        if self.result is None:
            return None
        return self.result.error_before_exec or self.result.error_in_exec

    @property
    def ran(self):
        return self.result is not None and self.result.error_before_exec is None


@magics_class
class HeapscopeMagics(Magics):
    """The cell magics ``%%heapscope_flamegraph`` and ``%%heapscope_top``."""

    @cell_magic
    def heapscope_flamegraph(self, line, cell):
        """Profile the cell and show the flame graph of its memory (see the options with -h)."""
        __tracebackhide__ = True
        options = flamegraph_parser().parse_args(shlex.split(line))
        from heapscope.cli._capture import view_of
        from heapscope.tracker import FileFormat

        which, threshold = view_of(_ParserProxy("%%heapscope_flamegraph"), options)
        if options.temporal and which == "temporary":
            raise UsageError("%%heapscope_flamegraph: --temporal goes with the peak or --leaks, not with "
                             "--temporary-allocations")
        # Temporary allocations and the heap over time need every event.
        everything = options.temporal or which == "temporary"
        directory = _results_directory()
        capture = os.path.join(directory, "capture.hscap")
        try:
            outcome = self._profile(cell, capture, native_traces=options.native,
                                    trace_python_allocators=options.trace_python_allocators,
                                    file_format=FileFormat.ALL_ALLOCATIONS if everything
                                    else FileFormat.AGGREGATED_ALLOCATIONS)
        except BaseException:
            _remove(capture)
            _remove_directory(directory)  # the Tracker could not start: nothing to keep
            raise
        try:
            if outcome.ran:
                page_path = os.path.join(directory, "flamegraph.html")
                self._show_flamegraph(capture, page_path, which, threshold, options)
        finally:
            _remove(capture)
        _raise_held(outcome)

    @cell_magic
    def heapscope_top(self, line, cell):
        """Profile the cell and show the lines holding the most memory when it ends, and its peak."""
        __tracebackhide__ = True
        options = top_parser().parse_args(shlex.split(line))
        from heapscope.tracker import FileFormat

        capture = os.path.join(tempfile.mkdtemp(prefix="heapscope-top-"), "capture.hscap")
        try:
            outcome = self._profile(cell, capture, native_traces=options.native,
                                    trace_python_allocators=options.trace_python_allocators,
                                    file_format=FileFormat.AGGREGATED_ALLOCATIONS)
            if outcome.ran:
                print(self._top_text(capture, options, outcome))
        finally:
            _remove(capture)
            _remove_directory(os.path.dirname(capture))
        _raise_held(outcome)

    # -- running the cell -------------------------------------------------------------------------------------

    def _profile(self, cell, capture, **tracker_options):
        """Runs *cell* as IPython runs a cell, under a Tracker writing
        *capture*. The display of the cell's error is held back (its report
        comes first): the caller raises it again afterwards."""
        if self.shell is None:
            raise UsageError("heapscope's magics need an IPython shell")
        from heapscope.tracker import Tracker

        shell = self.shell
        _refuse_top_level_await(shell, cell)
        outcome = _Outcome()

        def hold_traceback(*args, **kwargs):
            if outcome.held is None:
                outcome.held = sys.exc_info()

        tracker = Tracker(capture, **tracker_options)
        saved = {name: shell.__dict__[name] for name in ("showtraceback", "showsyntaxerror")
                 if name in shell.__dict__}
        cells_before = dict(self._cell_files())
        shell.showtraceback = shell.showsyntaxerror = hold_traceback
        try:
            with tracker:
                outcome.result = shell.run_cell(cell, store_history=False)
        finally:
            for name in ("showtraceback", "showsyntaxerror"):
                if name in saved:
                    setattr(shell, name, saved[name])
                else:
                    delattr(shell, name)
            self._number_as_this_cell(cells_before)
        return outcome

    def _number_as_this_cell(self, cells_before):
        """IPython numbers the code it runs inside a cell as the next cell
        (In[n+1]): the cell's code is numbered as the cell itself, in
        tracebacks and in heapscope's tables."""
        cells = self._cell_files()
        count = getattr(self.shell, "execution_count", None)
        if not isinstance(count, int) or count < 2:
            return
        for name, number in list(cells.items()):
            if number == count and cells_before.get(name) != number:
                cells[name] = count - 1

    def _cell_files(self):
        """The file names IPython gave the cells it compiled."""
        compiler = getattr(self.shell, "compile", None)
        return getattr(compiler, "_filename_map", {})

    def _is_cell_frame(self, frame, cells):
        return not frame.native and (frame.filename in cells or frame.filename.startswith("<ipython-input-"))

    def _cell_part(self, stack, cells):
        """*stack* (outermost first) cut to start at the cell, or None when it
        is not the cell's. The magic's own frame entered the Tracker: stacks
        start at it, and the reader leaves it out with heapscope's other
        frames, so they start with IPython running the cell. A stack that
        reaches no frame of a cell there is IPython at work (reading,
        compiling the cell), as is a stack of IPython's or the kernel's own
        threads; threads the cell started keep their stacks."""
        magic = next((index for index, frame in enumerate(stack)
                      if not frame.native and os.path.normcase(os.path.abspath(frame.filename)) == _HERE), None)
        inner = stack[magic + 1:] if magic is not None else stack
        first = next((index for index, frame in enumerate(inner) if self._is_cell_frame(frame, cells)), None)
        outside = [frame for frame in inner[:first] if not frame.native]
        if magic is not None or any(_in_packages(frame.filename, _FRAMEWORK_PACKAGES) for frame in outside):
            return None if first is None else inner[first:]
        return stack

    def _cell_samples(self, samples):
        cells = self._cell_files()
        kept = []
        for sample in samples:
            stack = self._cell_part(sample.stack, cells)
            if stack is not None:
                sample.stack = stack
                kept.append(sample)
        return kept

    def _profile_of(self, reader, which, threshold, native, split_threads, temporal=False):
        from heapscope.reports import adapters

        native = native and reader.metadata.has_native_traces
        if temporal:
            profile = adapters.temporal_profile_from_capture(reader, native=native, merge_threads=not split_threads)
            # Stacks cut alike become one; those that are not the cell's go.
            cells = self._cell_files()
            merged, where = [], {}
            index_of = {}
            for index, stack in enumerate(profile.temporal_stacks):
                cut = self._cell_part(stack, cells)
                if cut is not None:
                    index_of[index] = where.setdefault(cut, len(merged))
                    if index_of[index] == len(merged):
                        merged.append(cut)
            profile.temporal_stacks = merged
            for moment in profile.temporal:
                totals = {}
                for index, (size, blocks) in moment.samples.items():
                    if index in index_of:
                        old_size, old_blocks = totals.get(index_of[index], (0, 0))
                        totals[index_of[index]] = (old_size + size, old_blocks + blocks)
                moment.samples = totals
        else:
            profile = adapters.profile_from_capture(reader, which, threshold=threshold, native=native,
                                                    merge_threads=not split_threads)
        profile.samples = self._cell_samples(profile.samples)
        return profile

    # -- the reports ----------------------------------------------------------------------------------------------

    def _show_flamegraph(self, capture, page_path, which, threshold, options):
        from IPython.display import display

        from heapscope.reader import FileReader
        from heapscope.reports.html import render_html
        from heapscope.reports.text import format_bytes

        with FileReader(capture) as reader:
            profile = self._profile_of(reader, which, threshold, options.native, options.split_threads,
                                       temporal=options.temporal)
            peak = _peak(reader)
        profile.source = f"an IPython cell ({page_path})"
        page = render_html(profile, "temporal" if options.temporal else "flamegraph", inverted=options.inverted,
                           split_threads=options.split_threads)
        with open(page_path, "w", encoding="utf-8") as out:
            out.write(page)
        summary = (f"heapscope: {profile.title.lower()}: {format_bytes(profile.total_bytes)} in "
                   f"{_blocks(profile.total_blocks)}; the cell's peak was {format_bytes(peak)}. "
                   f"Flame graph saved to {page_path}")
        markup = (f'<div class="heapscope-flamegraph"><p>{html.escape(summary)}</p>'
                  f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" width="100%" '
                  f'height="{max(options.height, 100)}" style="border: 1px solid #ccc"></iframe></div>')
        display({"text/html": markup, "text/plain": summary}, raw=True)

    def _top_text(self, capture, options, outcome):
        from heapscope.reader import FileReader
        from heapscope.reports.text import format_bytes, safe_text, table

        with FileReader(capture) as reader:
            profile = self._profile_of(reader, "leaks", 1, options.native, False)
            peak_profile = self._profile_of(reader, "peak", 1, options.native, False)
        rows = profile.locations()
        total = profile.total_bytes
        lines = [f"heapscope top: the cell{' (which raised)' if outcome.error is not None else ''}",
                 f"  memory still held when the cell ended: {format_bytes(total)} in "
                 f"{_blocks(profile.total_blocks)}",
                 f"  peak while it ran: {format_bytes(peak_profile.total_bytes)} in "
                 f"{_blocks(peak_profile.total_blocks)}", ""]
        if not rows:
            lines.append("  no memory allocated by the cell was still held when it ended")
            return "\n".join(lines)
        cells = self._cell_files()
        shown = rows[:options.limit]
        table_rows = []
        for rank, row in enumerate(shown, 1):
            frame = row.frame
            label = f"Cell In[{cells[frame.filename]}]" if frame.filename in cells else frame.filename
            where = f"{safe_text(label)}:{frame.lineno}" if frame.lineno else safe_text(label)
            table_rows.append([f"#{rank}", format_bytes(row.bytes), f"{100 * row.bytes / total:.1f}%" if total
                               else "0.0%", row.blocks, safe_text(frame.function), where])
        lines.append(table(["rank", "size", "share", "blocks", "function", "where"], table_rows,
                           ["<", ">", ">", ">", "<", "<"]))
        rest = rows[options.limit:]
        if rest:
            lines.append(f"\n  ... and {len(rest)} more, holding {format_bytes(sum(row.bytes for row in rest))}")
        return "\n".join(lines)


class _ParserProxy:
    """view_of reports a misuse through parser.error."""

    def __init__(self, prog):
        self.prog = prog

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def _refuse_top_level_await(shell, cell):
    """A cell with top-level ``await`` cannot run inside another cell while
    the kernel's event loop runs it (IPython would fail with "This event
    loop is already running"): refused before anything runs."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop running (a terminal IPython): IPython runs the cell in one of its own
    try:
        is_async = shell.should_run_async(cell, transformed_cell=shell.transform_cell(cell),
                                          preprocessing_exc_tuple=None)
    except Exception:  # an IPython without this method, or a cell it cannot read: run_cell will say
        return
    if is_async:
        raise UsageError("heapscope cannot profile a cell with top-level await: IPython cannot run it inside "
                         "another cell while the kernel's event loop is running (the cell was not run)")


def _raise_held(outcome):
    """Raises the cell's error again (after its report), as the cell's own."""
    __tracebackhide__ = True
    if outcome.held is not None and outcome.held[1] is not None:
        error = outcome.held[1]
    else:
        error = outcome.error
    if error is None:
        return
    if outcome.result is not None and error is outcome.result.error_before_exec:
        raise error.with_traceback(None)  # the cell did not run: IPython's frames that parsed it say nothing
    traceback = error.__traceback__
    # The traceback starts in IPython's run_code: show it from the cell on.
    while traceback is not None and _in_packages(traceback.tb_frame.f_code.co_filename, _FRAMEWORK_PACKAGES):
        traceback = traceback.tb_next
    if traceback is not None:
        error = error.with_traceback(traceback)
    raise error


def _blocks(count):
    return f"{count} block{'' if count == 1 else 's'}"


def _in_packages(filename, packages):
    """True for a file of one of the (imported) *packages*."""
    path = os.path.normcase(os.path.abspath(filename))
    for name in packages:
        module = sys.modules.get(name)
        location = getattr(module, "__file__", None)
        if location and path.startswith(os.path.normcase(os.path.dirname(os.path.abspath(location))) + os.sep):
            return True
    return False


def _peak(reader):
    """The bytes held at the capture's high-water mark, heapscope's own left out."""
    return sum(record.size for record in reader.get_high_watermark_allocation_records()
               if not reader.is_heapscope_own(record.stack_id))


def _results_directory():
    """A new directory under ./heapscope-results for one cell's files (as
    memray's magic keeps its under ./memray-results)."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    directory = tempfile.mkdtemp(dir=RESULTS_DIR)
    return os.path.relpath(directory) if os.path.isabs(directory) else directory


def _remove_directory(path):
    try:
        os.rmdir(path)
    except OSError:
        pass
