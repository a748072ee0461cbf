#!/usr/bin/env python3
"""Makes the screenshots in docs/images from real captures.

Runs examples/order_pipeline.py twice under ``heapscope run`` (keeping one
customer history in 8, then one in 2), and examples/dask_tasks.py (two Dask
workers under heapscope.dask.profile: the merged flame graph), writes each
HTML report with the command line, opens it in Debian's chromium
(Playwright, the system binary) and saves a screenshot of it:

    python scripts/make_screenshots.py [OUTPUT_DIR] [--only NAME ...]   # default: docs/images, every page

Needs heapscope installed, numpy, playwright and chromium (the test setup
installs them). Prints each file written.
"""

import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
EXAMPLE = os.path.join(REPO, "examples", "order_pipeline.py")
DASK_EXAMPLE = os.path.join(REPO, "examples", "dask_tasks.py")


def heapscope(*args, cwd):
    subprocess.run([sys.executable, "-m", "heapscope", *map(str, args)], cwd=cwd, check=True, timeout=300,
                   stdout=subprocess.DEVNULL)


def capture(work, name, cache_every):
    path = os.path.join(work, f"{name}.hscap")
    heapscope("run", "--force", "--native", "--trace-python-allocators", "-o", path, EXAMPLE,
              "--cache-every", cache_every, cwd=work)
    return path


def hover(page, function):
    """Moves the mouse over the widest frame drawn for *function*."""
    frames = [frame for frame in page.evaluate("heapscopeReport.frames()") if frame["function"] == function]
    if not frames:
        return
    frame = max(frames, key=lambda f: f["width"])
    box = page.locator("canvas.flame-canvas").bounding_box()  # the page stays at its top
    page.mouse.move(box["x"] + frame["x"] + frame["width"] / 2, box["y"] + frame["y"] + frame["height"] / 2)
    page.locator(".tooltip").wait_for(state="visible")


def drag(page, t0, t1):
    start = page.evaluate("t => heapscopeReport.chartPoint(t)", t0)
    end = page.evaluate("t => heapscopeReport.chartPoint(t)", t1)
    page.mouse.move(start["x"], start["y"])
    page.mouse.down()
    page.mouse.move(end["x"], end["y"], steps=6)
    page.mouse.up()


def main(output_dir, only=()):
    from playwright.sync_api import sync_playwright

    os.makedirs(output_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="heapscope-screenshots-")
    try:
        pages = {}
        duration = 0.0
        if not only or set(only) - {"merged"}:
            before = capture(work, "orders-v1", 8)
            after = capture(work, "orders-v2", 2)
            pages = {
                "flamegraph": ["flamegraph", "-f", "-o", os.path.join(work, "flamegraph.html"), after],
                "temporal": ["flamegraph", "--temporal", "-f", "-o", os.path.join(work, "temporal.html"), after],
                "table": ["table", "-f", "-o", os.path.join(work, "table.html"), after],
                "diff": ["diff", "-f", "-o", os.path.join(work, "diff.html"), before, after],
            }
            import heapscope as hs

            with hs.FileReader(after) as reader:
                duration = (reader.metadata.end_time - reader.metadata.start_time).total_seconds()
        if not only or "merged" in only:
            # Two Dask workers, each a root frame, each task's memory under its prefix's label.
            subprocess.run([sys.executable, DASK_EXAMPLE, os.path.join(work, "dask")], cwd=work, check=True,
                           timeout=600, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            pages["merged"] = ["flamegraph", "-f", "-o", os.path.join(work, "merged.html"),
                               os.path.join(work, "dask", "merged.hscap")]
        pages = {kind: arguments for kind, arguments in pages.items() if not only or kind in only}
        for arguments in pages.values():
            heapscope(*arguments, cwd=work)
        written = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"))
            for kind in pages:
                page = browser.new_page(viewport={"width": 1280, "height": 1100})
                page.goto("file://" + os.path.join(work, f"{kind}.html"))
                page.wait_for_selector("html[data-ready]", state="attached", timeout=20_000)
                if kind == "temporal":
                    drag(page, 0.25 * duration, 0.6 * duration)
                if kind in ("flamegraph", "temporal", "diff"):
                    hover(page, "features" if kind != "diff" else "remember")
                if kind == "merged":
                    hover(page, "[label] parse-batch")
                path = os.path.join(output_dir, f"{kind}.png")
                page.screenshot(path=path)  # the first screenful: tables run long
                page.close()
                written.append(path)
            browser.close()
        for path in written:
            print(path)
        return written
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    names = []
    while "--only" in arguments:
        at = arguments.index("--only")
        names.append(arguments[at + 1])
        del arguments[at:at + 2]
    main(arguments[0] if arguments else os.path.join(REPO, "docs", "images"), names)
