"""The HTML reports (heapscope.reports.html) in a real browser: Debian's
chromium driven by Playwright. Each page must load with no console error and
no network request, show exactly the bytes of the profile it was given, react
to clicks, search and hovering, and show hostile names as text. The
screenshots in docs/images come from scripts/make_screenshots.py, run here
end to end."""

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import report_profiles as rp
from capture_helpers import python_env
from heapscope.reports.html import KINDS, embed_json, render_html
from heapscope.reports.model import Frame, Profile, Sample, diff_profiles

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None

CHROMIUM = shutil.which("chromium")

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None or os.environ.get("HEAPSCOPE_BROWSER_TESTS") == "0",
    reason="needs Debian's chromium (apt-get install chromium) and playwright (pip install .[test]); "
           "HEAPSCOPE_BROWSER_TESTS=0 (the other interpreters' runs) leaves the pages to the main run")


# ---- without a browser


def test_embedded_json_cannot_close_its_script():
    value = {"name": "</script><!-- & \u2028\u2029 >", "lone": "\udcff"}
    text = embed_json(value)
    for character in "<>&\u2028\u2029":
        assert character not in text
    text.encode("utf-8")  # the lone surrogate is escaped too
    import json

    assert json.loads(text) == value


def test_render_checks_its_arguments():
    with pytest.raises(ValueError, match="unknown HTML report kind"):
        render_html(rp.ground_truth(), "pie")
    with pytest.raises(ValueError, match="difference"):
        render_html(rp.ground_truth(), "diff")
    with pytest.raises(ValueError, match="timeline"):
        render_html(rp.ground_truth(), "temporal")
    page = render_html(rp.ground_truth(), "table", title="Peak <of> run")
    assert "<title>heapscope table: Peak &lt;of&gt; run</title>" in page
    assert '"title":"Peak \\u003cof\\u003e run"' in page


@pytest.mark.parametrize("kind", KINDS)
def test_page_is_self_contained(kind):
    page = render_html(rp.hostile(is_diff=kind == "diff"), kind)
    assert "<img" not in page and "<svg" not in page
    assert page.count("<script") == 3  # options, data, the script
    page = render_html(_realistic(kind), kind)
    for reference in (" src=", " href=", "http://", "https://", "@import", "url("):
        assert reference not in page, reference


# ---- in the browser


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM)
        yield instance
        instance.close()


class Report:
    """A report opened in a new page, with what the page logged, fetched and
    alerted."""

    def __init__(self, browser, path, width=1280, height=900):
        self.path = Path(path)
        self.page = page = browser.new_page(viewport={"width": width, "height": height})
        self.console, self.errors, self.requests, self.dialogs = [], [], [], []
        page.on("console", lambda message: self.console.append((message.type, message.text)))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("dialog", self._dialog)
        page.goto(self.path.as_uri())
        page.wait_for_selector("html[data-ready]", state="attached", timeout=10_000)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def frames(self):
        return self.page.evaluate("heapscopeReport.frames()")

    def frame(self, function):
        """The widest frame drawn for this function."""
        found = [frame for frame in self.frames() if frame["function"] == function]
        assert found, (function, self.functions())
        return max(found, key=lambda frame: frame["width"])

    def functions(self):
        return {frame["function"] for frame in self.frames()}

    def state(self):
        return self.page.evaluate("heapscopeReport.state()")

    def point(self, function):
        """The middle of a drawn frame, in the window's coordinates."""
        self.page.locator("canvas.flame-canvas").scroll_into_view_if_needed()
        box = self.page.locator("canvas.flame-canvas").bounding_box()
        frame = self.frame(function)
        return box["x"] + frame["x"] + frame["width"] / 2, box["y"] + frame["y"] + frame["height"] / 2

    def hover(self, function):
        self.page.mouse.move(*self.point(function))
        tooltip = self.page.locator(".tooltip")
        tooltip.wait_for(state="visible")
        return tooltip.inner_text()

    def click(self, function):
        self.page.mouse.click(*self.point(function))

    def pixel(self, function):
        """The colour (r, g, b) on screen near the right end of a frame, at
        its top (away from its label)."""
        from PIL import Image

        x, y = self.point(function)
        frame = self.frame(function)
        clip = {"x": x + frame["width"] / 2 - 4, "y": y - frame["height"] / 2 + 1, "width": 1, "height": 1}
        self.page.mouse.move(1, 1)  # no tooltip over the frame
        image = Image.open(io.BytesIO(self.page.screenshot(clip=clip))).convert("RGB")
        return image.getpixel((0, 0))

    def assert_clean(self):
        assert self.errors == []
        assert [m for m in self.console if m[0] in ("error", "warning")] == []
        assert self.requests == [self.path.as_uri()]
        assert self.dialogs == []


@pytest.fixture
def open_report(browser, tmp_path):
    opened = []

    def open_(profile, kind, **options):
        """Opens the page of *kind* for *profile*, or (kind None) the page at
        the path *profile*."""
        path = profile
        if kind is not None:
            path = tmp_path / f"{kind}.html"
            path.write_text(render_html(profile, kind, **options), encoding="utf-8")
        report = Report(browser, path)
        opened.append(report)
        return report

    yield open_
    for report in opened:
        report.page.close()


def _realistic(kind):
    return {"flamegraph": rp.realistic, "temporal": rp.realistic_temporal,
            "table": lambda: rp.realistic(native=False), "diff": rp.realistic_diff}[kind]()


@needs_browser
@pytest.mark.parametrize("kind", KINDS)
def test_loads_offline_without_errors(open_report, kind):
    report = open_report(_realistic(kind), kind)
    report.assert_clean()
    assert report.page.evaluate("heapscopeReport.kind") == kind
    assert report.page.locator("h1").inner_text() == _realistic(kind).title
    if kind != "table":
        assert len(report.frames()) > 20


@needs_browser
def test_flamegraph_shows_the_bytes_of_each_function(open_report, tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("\n" * 9 + "    data = bytearray(1_000_000)  # what f holds\n")
    report = open_report(rp.ground_truth(f_file=str(source)), "flamegraph")
    frames = {frame["function"]: frame for frame in report.frames()}
    assert set(frames) == {"all", "main", "f", "g"}
    assert (frames["f"]["bytes"], frames["f"]["blocks"]) == (1_000_000, 2)
    assert (frames["g"]["bytes"], frames["g"]["blocks"]) == (250_000, 3)
    assert (frames["main"]["bytes"], frames["main"]["blocks"]) == (1_250_000, 5)
    assert frames["all"]["bytes"] == 1_250_000
    assert (frames["f"]["filename"], frames["f"]["lineno"], frames["f"]["depth"]) == (str(source), 10, 2)
    assert frames["f"]["width"] / frames["g"]["width"] == pytest.approx(4, rel=1e-6)
    assert report.page.locator(".totals").inner_text() == "Total 1.2 MiB (1,250,000 B) in 5 blocks"

    tip = report.hover("f")
    for text in (f"{source}:10", "976.6 KiB (1,000,000 B)", "blocks\t2", "80.0% of 1.2 MiB",
                 "data = bytearray(1_000_000)  # what f holds"):
        assert text in tip, (text, tip)
    assert tip.splitlines()[0] == "f"
    tip_g = report.hover("g")
    assert "244.1 KiB (250,000 B)" in tip_g and "20.0% of 1.2 MiB" in tip_g and "/app/mod.py:20" in tip_g
    report.page.mouse.move(2, 2)
    assert report.page.locator(".tooltip").is_hidden()
    report.assert_clean()


@needs_browser
def test_click_zooms_and_escape_resets(open_report):
    report = open_report(rp.ground_truth(), "flamegraph")
    width = report.frame("all")["width"]
    assert report.frame("g")["width"] == pytest.approx(width / 5)
    report.click("g")
    assert report.state()["focus"] == "g"
    assert report.functions() == {"all", "main", "g"}
    assert report.frame("g")["width"] == pytest.approx(width) and report.frame("g")["x"] == 0
    assert report.page.locator(".crumbs").inner_text().split() == ["all", "\u203a", "main", "\u203a", "g"]
    report.page.keyboard.press("Escape")
    assert report.state()["focus"] is None and "f" in report.functions()
    report.click("g")
    report.page.locator("button.crumb", has_text="main").click()
    assert report.state()["focus"] == "main" and "f" in report.functions()
    report.page.locator("button.reset").click()
    assert report.state()["focus"] is None
    assert report.page.locator("button.reset").is_disabled()
    report.assert_clean()


@needs_browser
def test_search_highlights_and_totals_matches(open_report):
    report = open_report(rp.ground_truth(), "flamegraph")
    python_colour = report.pixel("f")
    report.page.fill("input.search", "g")
    assert report.page.locator(".found").inner_text() == "matched 244.1 KiB, 20.0% of 1.2 MiB"
    matched = {frame["function"]: frame["matched"] for frame in report.frames()}
    assert matched == {"all": False, "main": False, "f": False, "g": True}
    assert report.pixel("f") != python_colour  # faded
    # A match inside a match counts once: main holds f and g.
    report.page.fill("input.search", "MAIN")
    assert report.page.locator(".found").inner_text() == "matched 1.2 MiB, 100.0% of 1.2 MiB"
    report.page.fill("input.search", "nothing like this")
    assert report.page.locator(".found").inner_text() == "no frame matches"
    report.page.locator("input.search").press("Escape")
    assert report.page.locator(".found").inner_text() == "" and report.pixel("f") == python_colour
    report.assert_clean()


@needs_browser
def test_thread_selector_and_split_threads(open_report):
    report = open_report(rp.ground_truth(), "flamegraph")
    report.page.select_option("select.threads", label="Thread: worker")
    assert report.functions() == {"all", "main", "g"} and report.state()["total"] == 250_000
    report.page.select_option("select.threads", label="All threads, one subtree each")
    by_depth = {(frame["depth"], frame["function"]): frame["bytes"] for frame in report.frames()}
    assert by_depth[(1, "MainThread")] == 1_000_000 and by_depth[(1, "worker")] == 250_000
    assert by_depth[(3, "f")] == 1_000_000
    split = open_report(rp.ground_truth(), "flamegraph", split_threads=True)
    assert split.state()["threads"] == "split"
    assert {f["function"] for f in split.frames() if f["depth"] == 1} == {"MainThread", "worker"}
    report.assert_clean()


@needs_browser
def test_inverted_puts_allocating_frames_on_top(open_report):
    report = open_report(rp.ground_truth(), "flamegraph", inverted=True)
    assert report.page.locator("label", has_text="Inverted").locator("input").is_checked()
    drawn = sorted((frame["depth"], frame["function"], frame["bytes"]) for frame in report.frames())
    assert drawn == [(0, "all", 1_250_000), (1, "f", 1_000_000), (1, "g", 250_000),
                     (2, "main", 250_000), (2, "main", 1_000_000)]
    report.page.locator("label", has_text="Inverted").locator("input").uncheck()
    assert {(f["depth"], f["function"]) for f in report.frames()} == {(0, "all"), (1, "main"), (2, "f"), (2, "g")}


@needs_browser
def test_hide_import_machinery_and_native_colours(open_report):
    load = Frame("_find_and_load", "<frozen importlib._bootstrap>", 1360)
    ours = Frame("main", "/usr/lib/python3/site-packages/heapscope/cli/run.py", 88)
    native = Frame("malloc", "libc.so.6", 0, native=True)
    profile = Profile("hidden", [Sample((ours, rp.MAIN, load, rp.F), 600_000, 1),
                                 Sample((ours, rp.MAIN, rp.G, native), 300_000, 1),
                                 Sample((ours, load), 100_000, 1)])
    report = open_report(profile, "flamegraph")
    functions = {(f["depth"], f["function"]) for f in report.frames()}
    assert functions == {(0, "all"), (1, "main"), (2, "f"), (2, "g"), (3, "malloc"),
                         (1, "[import machinery and heapscope frames]")}
    assert all(not frame["hidden"] for frame in report.frames())
    assert report.frame("f")["bytes"] == 600_000 and report.frame("malloc")["bytes"] == 300_000
    red, green, blue = report.pixel("malloc")
    assert blue > red  # native: blue
    red, green, blue = report.pixel("f")
    assert red > blue  # Python: warm
    report.page.locator("label", has_text="Hide import machinery").locator("input").uncheck()
    hidden = sorted((frame["function"], frame["bytes"]) for frame in report.frames() if frame["hidden"])
    assert hidden == [("_find_and_load", 100_000), ("_find_and_load", 600_000), ("main", 1_000_000)]
    assert [f["filename"] for f in report.frames() if f["depth"] == 1] == [ours.filename]
    report.assert_clean()


def _drag(report, t0, t1):
    page = report.page
    start = page.evaluate("t => heapscopeReport.chartPoint(t)", t0)
    end = page.evaluate("t => heapscopeReport.chartPoint(t)", t1)
    page.mouse.move(start["x"], start["y"])
    page.mouse.down()
    page.mouse.move((start["x"] + end["x"]) / 2, end["y"], steps=3)
    page.mouse.move(end["x"], end["y"], steps=3)
    page.mouse.up()


def _bytes(report):
    return {frame["function"]: frame["bytes"] for frame in report.frames() if frame["depth"] == 2}


@needs_browser
def test_temporal_window_and_click_pick_the_moment(open_report):
    report = open_report(rp.temporal_ground_truth(), "temporal")
    assert _bytes(report) == {"f": 1_000_000, "g": 250_000}  # the profile's own samples
    _drag(report, 0.5, 1.6)  # moment 1.0 s: f alone
    state = report.state()
    assert state["momentTime"] == 1.0 and state["window"][0] == pytest.approx(0.5, abs=0.02)
    assert _bytes(report) == {"f": 1_000_000}
    assert "the heap at 1.00 s (the highest within 0.50 s" in report.page.locator(".moment").inner_text()
    assert report.page.locator("button.clear").is_visible()
    _drag(report, 0.5, 2.6)  # moments 1.0 and 2.0 s: the highest heap is at 2.0 s
    assert report.state()["momentTime"] == 2.0 and _bytes(report) == {"f": 1_000_000, "g": 250_000}
    point = report.page.evaluate("heapscopeReport.chartPoint(2.9)")
    report.page.mouse.click(point["x"], point["y"])  # a click: the nearest moment, 3.0 s
    state = report.state()
    assert state["momentTime"] == 3.0 and state["window"] is None and _bytes(report) == {"g": 250_000}
    assert "244.1 KiB (250,000 B)" in report.hover("g")
    report.page.locator("button.clear").click()
    assert report.state()["moment"] == -1 and _bytes(report) == {"f": 1_000_000, "g": 250_000}
    assert report.page.locator("button.clear").is_hidden()
    report.assert_clean()


def _rows(report):
    return report.page.evaluate("heapscopeReport.tableRows()")


def _cells(report):
    return [[cell.strip() for cell in row.split("\t")] for row in report.page.locator("tbody tr").all_inner_texts()]


@needs_browser
def test_table_sorts_filters_and_groups(open_report):
    profile = rp.ground_truth()
    profile.samples.append(Sample((rp.MAIN, rp.F), 4_000, 4, 2, "MALLOC"))  # f in another thread: its own row
    profile.samples.append(Sample((Frame("h", "/app/h.py", 1), rp.F), 1_000, 1, 1, "MALLOC"))  # same row as f
    report = open_report(profile, "table")
    assert _cells(report) == [
        ["/app/mod.py:10", "f", "977.5 KiB", "79.8%", "3", "MALLOC", "MainThread"],
        ["/app/mod.py:20", "g", "244.1 KiB", "19.9%", "3", "PYMALLOC_MALLOC", "worker"],
        ["/app/mod.py:10", "f", "3.9 KiB", "0.3%", "4", "MALLOC", "worker"]]
    assert [row["bytes"] for row in _rows(report)] == [1_001_000, 250_000, 4_000]
    assert report.page.locator("tbody tr td").nth(2).get_attribute("title") == "1,001,000 B"
    report.page.locator("th button", has_text="Blocks").click()
    assert [row["blocks"] for row in _rows(report)] == [4, 3, 3]
    report.page.locator("th button", has_text="Blocks").click()
    assert [row["blocks"] for row in _rows(report)] == [3, 3, 4]
    report.page.locator("th button", has_text="Function").click()
    assert [row["function"] for row in _rows(report)] == ["f", "f", "g"]
    report.page.fill("input.filter", "WORKER")
    assert [(row["function"], row["bytes"]) for row in _rows(report)] == [("f", 4_000), ("g", 250_000)]
    assert report.page.locator(".summary").inner_text() == "2 of 3 rows, 248.0 KiB (20.2% of 1.2 MiB)"
    report.page.fill("input.filter", "pymalloc")
    assert [row["function"] for row in _rows(report)] == ["g"]
    report.assert_clean()


def _diff_profile():
    before = Profile("before", [Sample((rp.MAIN, rp.F), 1_000_000, 2), Sample((rp.MAIN, rp.G), 250_000, 3)],
                     source="a.hscap")
    h = Frame("h", "/app/mod.py", 30)
    after = Profile("after", [Sample((rp.MAIN, rp.F), 1_500_000, 3), Sample((rp.MAIN, rp.G), 50_000, 1),
                              Sample((rp.MAIN, h), 100_000, 1)], source="b.hscap")
    return diff_profiles(before, after)


@needs_browser
def test_diff_colours_growth_and_shrinkage(open_report):
    report = open_report(_diff_profile(), "diff")
    frames = {frame["function"]: frame for frame in report.frames()}
    assert (frames["f"]["before"], frames["f"]["bytes"]) == (1_000_000, 1_500_000)
    assert (frames["g"]["before"], frames["g"]["bytes"]) == (250_000, 50_000)
    assert (frames["h"]["before"], frames["h"]["bytes"]) == (0, 100_000)
    # Widths: the larger of before and after, stack by stack.
    assert frames["g"]["width"] / frames["f"]["width"] == pytest.approx(250_000 / 1_500_000)
    assert frames["main"]["width"] == pytest.approx(frames["all"]["width"])
    red, green, blue = report.pixel("f")
    assert red > blue + 60
    red, green, blue = report.pixel("g")
    assert blue > red + 60
    tip = report.hover("f")
    for text in ("before\t976.6 KiB (1,000,000 B)", "after\t1.4 MiB (1,500,000 B)",
                 "change\t+488.3 KiB (+500,000 B, +50.0%)", "blocks\t2 \u2192 3"):
        assert text in tip, (text, tip)
    assert "change\t-195.3 KiB (-200,000 B, -80.0%)" in report.hover("g")
    assert report.page.locator(".totals").inner_text().endswith("change +390.6 KiB (+400,000 B)")
    # The table of changes, largest change first.
    assert [(row["function"], row["change"]) for row in _rows(report)] == [
        ("f", 500_000), ("g", -200_000), ("h", 100_000)]
    assert [cells[2:5] for cells in _cells(report)] == [
        ["976.6 KiB", "1.4 MiB", "+488.3 KiB"], ["244.1 KiB", "48.8 KiB", "-195.3 KiB"], ["0 B", "97.7 KiB", "+97.7 KiB"]]
    report.page.fill("input.search", "g")
    assert report.page.locator(".found").inner_text() == "matched 244.1 KiB \u2192 48.8 KiB, change -195.3 KiB"
    report.assert_clean()


@needs_browser
@pytest.mark.parametrize("kind", KINDS)
def test_hostile_names_are_text(open_report, kind):
    report = open_report(rp.hostile(is_diff=kind == "diff"), kind)
    page = report.page
    page.wait_for_timeout(200)  # an onerror or onload would have fired by now
    assert report.dialogs == []
    assert page.evaluate("document.querySelectorAll('img, svg, b, i, iframe').length") == 0
    assert page.evaluate("document.querySelectorAll('script').length") == 3
    assert page.locator("h1").inner_text() == rp.HOSTILE
    assert page.title() == f"heapscope {kind}: {rp.HOSTILE}"
    assert "<script>alert(4)</script>" in page.locator(".source").inner_text()
    if kind == "table":
        assert rp.HOSTILE in [row[1] for row in _cells(report)]
        assert "<img src=z onerror=alert(5)>" in page.locator("tbody").inner_text()
    else:
        tip = report.hover(rp.HOSTILE)
        assert tip.splitlines()[0] == rp.HOSTILE and "<img src=y onerror=alert(2)>.py:3" in tip
        assert page.locator("select.threads option", has_text="<img src=z").count() == 1
        report.click(rp.HOSTILE)
        assert rp.HOSTILE in page.locator(".crumbs").inner_text()
    page.wait_for_timeout(100)
    report.assert_clean()


@needs_browser
def test_pages_of_a_real_capture(open_report, tmp_path):
    """heapscope flamegraph / --temporal / table on a capture of a program
    that holds 3 x bytearray(1_000_000) in f and bytearray(250_000) in g at
    its peak (bytearray(n) holds n + 1 bytes)."""
    from capture_helpers import heapscope_cli, run_script, write_script
    from test_report_model import GROUND_TRUTH

    script = tmp_path / "truth.py"
    lines = write_script(script, GROUND_TRUTH)
    capture = tmp_path / "truth.hscap"
    run_script(script, capture, 3)
    pages = {}
    for name, args in (("flamegraph", ["flamegraph"]), ("temporal", ["flamegraph", "--temporal"]),
                       ("table", ["table"])):
        pages[name] = tmp_path / f"real-{name}.html"
        result = heapscope_cli(*args, capture, "-o", pages[name])
        assert result.returncode == 0, result.stderr

    def ours(report):
        return {frame["function"]: frame for frame in report.frames() if frame["filename"] == str(script)
                and frame["function"] in ("f", "g")}

    report = open_report(pages["flamegraph"], None)
    frames = ours(report)
    assert (frames["f"]["bytes"], frames["f"]["blocks"], frames["f"]["lineno"]) == (3_000_003, 3, lines["f"])
    assert (frames["g"]["bytes"], frames["g"]["blocks"]) == (250_001, 1)
    tip = report.hover("f")
    assert "2.9 MiB (3,000,003 B)" in tip and "keep.append(bytearray(1_000_000))   # @f" in tip
    report.assert_clean()

    temporal = open_report(pages["temporal"], None)
    assert temporal.page.evaluate("document.querySelector('.chart-canvas').height") > 0
    _drag(temporal, 0.0, 1e9)  # the whole run
    frames = ours(temporal)  # the highest heap of the whole run: the peak
    assert temporal.state()["moment"] >= 0
    assert frames["f"]["bytes"] == 3_000_003 and frames["g"]["bytes"] == 250_001
    temporal.assert_clean()

    table = open_report(pages["table"], None)
    rows = {row["function"]: row for row in _rows(table) if row["location"].startswith(str(script))}
    assert rows["f"]["location"] == f"{script}:{lines['f']}" and rows["f"]["bytes"] == 3_000_003
    assert rows["g"]["bytes"] == 250_001 and rows["g"]["thread"]
    table.assert_clean()


@needs_browser
def test_empty_profile(open_report):
    report = open_report(Profile("nothing held", []), "flamegraph")
    assert report.page.locator(".totals").inner_text() == "Total 0 B (0 B) in 0 blocks"
    report.assert_clean()


@needs_browser
def test_screenshots_of_real_captures(tmp_path):
    """scripts/make_screenshots.py (which makes docs/images) runs end to
    end: real captures of examples/order_pipeline.py, each page made by the
    command line and photographed in chromium."""
    from PIL import Image

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_screenshots.py"
    # The pages of order_pipeline.py; the merged Dask page (--only merged) runs a cluster: docs/multiprocess.md.
    only = [argument for kind in KINDS for argument in ("--only", kind)]
    result = subprocess.run([sys.executable, str(script), str(tmp_path), *only], capture_output=True, text=True,
                            timeout=240, env=python_env())
    assert result.returncode == 0, result.stderr
    for kind in KINDS:
        image = Image.open(tmp_path / f"{kind}.png").convert("RGB")
        assert image.size == (1280, 1100)
        assert len(image.resize((64, 64)).getcolors(64 * 64)) > 50, kind  # a picture, not a blank page
