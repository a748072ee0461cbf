"""heapscope's IPython magics (heapscope.ipython), run the way a user runs them:
a real notebook executed in a real Jupyter kernel (ipykernel, driven by
nbclient) that runs this interpreter, with a kernelspec of our own in a
temporary directory. The outputs must hold the flame graph page with the
cell's functions and sizes, the top table's lines, and, for a cell that
raises, its report and then its error."""

import html
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs nbformat (pip install .[test])")
nbclient = pytest.importorskip("nbclient", reason="needs nbclient (pip install .[test])")
pytest.importorskip("ipykernel", reason="needs ipykernel (pip install .[test])")

from jupyter_client import KernelManager  # noqa: E402 (installed with nbclient)
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402

TIMEOUT = 120  # seconds for each cell, and for the kernel to start
MiB = 1024 * 1024
TOP_HELD = 5 * MiB + 4321  # bytearray(TOP_HELD) holds TOP_HELD + 1 bytes
BIG = 12_345_678

CELLS = [
    # 0
    "%load_ext heapscope",
    # 1
    "def make_buffer(n):\n"
    "    return bytearray(n)\n"
    "\n"
    "kept = []",
    # 2: the peak of a cell that calls a function of its own and one of an earlier cell
    "%%heapscope_flamegraph\n"
    "def build_in_cell(n):\n"
    "    return make_buffer(n)\n"
    "\n"
    f"big = build_in_cell({BIG})\n"
    "del big\n"
    "kept.append(make_buffer(1024 * 1024))\n"
    "'last value shown'",
    # 3
    "%%heapscope_top\n"
    f"kept.append(make_buffer({TOP_HELD}))\n"
    "scratch = make_buffer(7 * 1024 * 1024)\n"
    "del scratch",
    # 4: a cell that raises still shows its report, then its error
    "%%heapscope_flamegraph --leaks\n"
    "def leak_then_fail():\n"
    "    kept.append(make_buffer(3 * 1024 * 1024))\n"
    "    raise ValueError('boom from the cell')\n"
    "\n"
    "leak_then_fail()",
    # 5
    "%%heapscope_top --limit 3\n"
    "kept.append(make_buffer(2 * 1024 * 1024))\n"
    "1 / 0",
    # 6: the kept exception is the cell's own (what %debug would debug)
    "import sys\n"
    "print('last error:', type(sys.last_value).__name__, sys.last_value)",
    # 7
    "%%heapscope_flamegraph --temporal\n"
    "for _ in range(3):\n"
    "    block = make_buffer(2 * 1024 * 1024)\n"
    "del block",
    # 8
    "%%heapscope_flamegraph --temporary-allocations\n"
    "for _ in range(4):\n"
    "    make_buffer(3 * 1024 * 1024)",
    # 9
    "%%heapscope_flamegraph --bogus\n"
    "x = 1",
    # 10
    "%%heapscope_top\n"
    "x = (",
    # 11
    "%%heapscope_flamegraph\n"
    "import asyncio\n"
    "await asyncio.sleep(0)",
    # 12
    "print('still running')",
]


def _kernel_manager(directory):
    """A KernelManager for a kernelspec (in *directory*) that runs this
    interpreter, whatever kernels the machine has installed."""
    spec = directory / "kernels" / "heapscope-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "heapscope test kernel", "language": "python"}))
    return KernelManager(kernel_name="heapscope-test",
                         kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(directory / "kernels")]))


def execute(directory, sources, allow_errors=True):
    """Runs a notebook of *sources* in a fresh kernel whose working directory
    is *directory*; returns the notebook with its outputs."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    client = nbclient.NotebookClient(notebook, km=_kernel_manager(directory), timeout=TIMEOUT,
                                     startup_timeout=TIMEOUT, allow_errors=allow_errors,
                                     resources={"metadata": {"path": str(directory)}})
    client.execute()
    return notebook


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    directory = tmp_path_factory.mktemp("notebook")
    return directory, execute(directory, CELLS)


def outputs(notebook, index):
    return notebook[1].cells[index].outputs


def text_of(cell_outputs, name="stdout"):
    return "".join(output.get("text", "") for output in cell_outputs
                   if output.output_type == "stream" and output.name == name)


def flamegraph_output(cell_outputs):
    shown = [output for output in cell_outputs if output.output_type == "display_data"]
    assert len(shown) == 1, cell_outputs
    return shown[0].data


def page_of(data):
    """The page inside the iframe's srcdoc."""
    match = re.search(r'srcdoc="([^"]*)"', data["text/html"])
    assert match, data["text/html"][:300]
    return html.unescape(match.group(1))


def page_data(page):
    """The JSON document the page embeds (heapscope.reports.page_data)."""
    match = re.search(r'<script type="application/json" id="heapscope-data">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


def frame_functions(document):
    return {row[0] for row in document["frames"]}


def test_load_ext_keeps_import_heapscope_light():
    result = subprocess.run([sys.executable, "-c", "import heapscope, sys; print('IPython' in sys.modules)"],
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


def test_flamegraph_shows_the_cells_functions_and_sizes(notebook):
    directory, _ = notebook
    cell_outputs = outputs(notebook, 2)
    results = [output for output in cell_outputs if output.output_type == "execute_result"]
    assert results and results[0].data["text/plain"] == "'last value shown'"  # the cell ran as a cell
    data = flamegraph_output(cell_outputs)
    # The text beside the page, and the page itself.
    summary = data["text/plain"]
    assert summary.startswith("heapscope: memory held at the high-water mark: 11.8 MiB in ")
    # The cell's peak counts everything traced meanwhile (IPython's own work too, which differs by version).
    peak = re.search(r"the cell's peak was ([0-9.]+) MiB", summary)
    assert peak and float(peak.group(1)) >= 11.8, summary
    assert '<iframe srcdoc="' in data["text/html"] and 'sandbox="allow-scripts"' in data["text/html"]
    page = page_of(data)
    assert page.startswith("<!DOCTYPE html>")
    document = page_data(page)
    functions = frame_functions(document)
    assert {"build_in_cell", "make_buffer", "<module>"} <= functions
    # Stacks start at the cell: no frame of the kernel, IPython or heapscope.
    assert not functions & {"run_cell", "run_cell_magic", "run_code", "heapscope_flamegraph", "_profile"}
    assert not any("site-packages/IPython" in row[1] or "heapscope/ipython.py" in row[1]
                   for row in document["frames"])
    sizes = document["samples"][3::document["sample_stride"]]
    assert BIG + 1 in sizes  # the buffer, to the byte
    # The same page is kept in heapscope-results, as memray keeps its own in memray-results.
    saved = summary.rsplit("Flame graph saved to ", 1)[1]
    assert saved.startswith("heapscope-results" + os.sep) and saved.endswith("flamegraph.html")
    assert (directory / saved).read_text(encoding="utf-8") == page


def test_top_shows_the_lines_held_at_the_end_and_the_peak(notebook):
    text = text_of(outputs(notebook, 3))
    lines = text.splitlines()
    assert lines[0] == "heapscope top: the cell"
    assert lines[1].startswith("  memory still held when the cell ended: 5.0 MiB in ")
    assert lines[2].startswith("  peak while it ran: 12.0 MiB in ")
    assert re.search(r"^rank +size +share +blocks +function +where$", text, re.M), text
    # The 5 MiB still held, made by make_buffer (defined in cell In[2], line 2).
    assert re.search(r"^#1 +5\.0 MiB +\d+\.\d% +1 +make_buffer +Cell In\[2\]:2$", text, re.M), text
    assert "interactiveshell.py" not in text and "ipykernel" not in text


def test_a_cell_that_raises_shows_its_report_then_its_error(notebook):
    cell_outputs = outputs(notebook, 4)
    kinds = [output.output_type for output in cell_outputs]
    assert kinds == ["display_data", "error"], kinds
    data = flamegraph_output(cell_outputs)
    assert data["text/plain"].startswith("heapscope: memory still held when tracking stopped: 3.0 MiB in 1 block;")
    functions = frame_functions(page_data(page_of(data)))
    assert {"leak_then_fail", "make_buffer"} <= functions
    error = cell_outputs[1]
    assert (error.ename, error.evalue) == ("ValueError", "boom from the cell")
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback))
    # The cell's own number (IPython's line numbering of a magic's cell differs between versions).
    assert re.search(r"Cell In\[5\], line \d+", traceback), traceback
    assert "leak_then_fail" in traceback and "raise ValueError('boom from the cell')" in traceback

    cell_outputs = outputs(notebook, 5)
    assert [output.output_type for output in cell_outputs] == ["stream", "error"]
    text = text_of(cell_outputs)
    assert text.startswith("heapscope top: the cell (which raised)\n")
    assert "  memory still held when the cell ended: 2.0 MiB in " in text
    assert re.search(r"^#1 +2\.0 MiB .* make_buffer +Cell In\[2\]:2$", text, re.M), text
    assert cell_outputs[1].ename == "ZeroDivisionError"

    assert text_of(outputs(notebook, 6)) == "last error: ZeroDivisionError division by zero\n"


def test_flamegraph_options(notebook):
    temporal = flamegraph_output(outputs(notebook, 7))
    page = page_of(temporal)
    assert "<title>heapscope temporal:" in page
    document = page_data(page)
    assert document["temporal"] is not None and "make_buffer" in frame_functions(document)

    temporary = flamegraph_output(outputs(notebook, 8))
    assert temporary["text/plain"].startswith("heapscope: temporary allocations (at most 1 other allocation before "
                                              "their free): 12.0 MiB in 4 blocks;")

    usage = text_of(outputs(notebook, 9), "stderr")
    assert "UsageError: %%heapscope_flamegraph: unrecognized arguments: --bogus" in usage

    syntax = [output for output in outputs(notebook, 10) if output.output_type == "error"]
    # 3.13 names an unfinished statement _IncompleteInputError, a SyntaxError of its own.
    assert syntax and syntax[0].ename in ("SyntaxError", "_IncompleteInputError")
    # A cell with top-level await cannot run nested in a running kernel: refused, not run.
    assert "UsageError: heapscope cannot profile a cell with top-level await" in text_of(outputs(notebook, 11),
                                                                                        "stderr")
    assert text_of(outputs(notebook, 12)) == "still running\n"


def test_a_failing_cell_stops_the_notebook(tmp_path):
    """The cell's error is the cell's: a notebook run without allow_errors
    stops there, after the report was shown."""
    with pytest.raises(nbclient.exceptions.CellExecutionError) as failure:
        execute(tmp_path, ["%load_ext heapscope",
                           "%%heapscope_flamegraph\nkept = bytearray(1024 * 1024)\nraise KeyError('stop here')",
                           "print('never')"], allow_errors=False)
    assert "KeyError" in str(failure.value)


def test_the_page_draws_inside_its_iframe(notebook, tmp_path):
    """The notebook's output, opened in Debian's chromium: the page in the
    sandboxed iframe runs its script and draws the cell's frames."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    output = tmp_path / "output.html"
    output.write_text("<!DOCTYPE html><html><body>" + flamegraph_output(outputs(notebook, 2))["text/html"]
                      + "</body></html>", encoding="utf-8")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(output.as_uri())
            frame = page.frame_locator("iframe")
            frame.locator("html[data-ready]").wait_for(state="attached", timeout=20_000)
            inner = next(candidate for candidate in page.frames if candidate is not page.main_frame)
            drawn = {entry["function"] for entry in inner.evaluate("heapscopeReport.frames()")}
            assert {"build_in_cell", "make_buffer"} <= drawn
            assert errors == []
        finally:
            browser.close()
