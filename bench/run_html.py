"""Benchmark of the HTML reports (heapscope.reports.html) on a large
synthetic profile: page size, build time, Chromium's paint time and the
redraw time of a zoom and of a search.

Targets (issue 11), for 100,000 distinct stacks: page <= 20 MB, built in
<= 10 s, painted in <= 2 s, a zoom or search redrawn in <= 100 ms.

    python bench/run_html.py [--stacks 100000] [--depth 24] [--kinds flamegraph table diff] [--keep DIR]

Needs Debian's chromium (apt-get install chromium) and playwright; the
browser is launched by path, never downloaded. Paint time is the page's own
``performance.now()`` when its first drawing is done (milliseconds since
navigation start: reading the file, parsing the HTML and JSON, building the
tree and drawing it), and the wall-clock time from ``goto`` to the next
animation frame after that. A redraw is timed twice: the synchronous work of
the event handler (what the page measures) and from dispatching the event to
the second animation frame after it (the frame on screen).
"""

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

from heapscope.reports.html import render_html
from heapscope.reports.model import Frame, Profile, Sample, diff_profiles


def synthetic_profile(stacks=100_000, depth=24, seed=1):
    """*stacks* distinct stacks about *depth* frames deep, over 4 threads and
    3 allocators, in a tree with four-way branching: each stack is a path of
    9 branch points (base-4 digits of its number) joined by chains of 1-4
    frames, so stacks share prefixes as a real program's do."""
    rng = random.Random(seed)
    files = [f"/srv/app/pkg{i % 40}/module_{i}.py" for i in range(400)]
    libraries = ["libc.so.6", "libpython3.12.so.1.0", "_multiarray_umath.so", "libz.so.1"]
    pool = []
    for i in range(20_000):
        if i % 6 == 5:
            pool.append(Frame(f"native_fn_{i}", libraries[i % 4], 0, True))
        else:
            pool.append(Frame(f"function_{i}", files[i % len(files)], 10 + (i * 7) % 500))
    lengths = max(1, round(2 * depth / 9 - 1))  # segments of 1..lengths frames: depth/9 on average
    cache = {}

    def segment(prefix, level):
        key = (prefix, level)
        frames = cache.get(key)
        if frames is None:
            h = hash(key) & 0xFFFFFFFF
            length = 1 + (h >> 3) % lengths
            frames = cache[key] = tuple(pool[(h + 7919 * k) % len(pool)] for k in range(length))
        return frames

    allocators = ["PYMALLOC_MALLOC", "MALLOC", "CALLOC"]
    samples = []
    for i in range(stacks):
        stack = ()
        for level in range(9):
            stack += segment(i // 4 ** (8 - level), level)
        size = int(rng.lognormvariate(9, 2)) + 16
        samples.append(Sample(stack, size, 1 + size // 4096, rng.randrange(1, 5), allocators[i % 3]))
    return Profile("Synthetic: 100,000 distinct stacks", samples, source="synthetic",
                   header=[f"{stacks} stacks, about {depth} frames deep"],
                   threads={1: "MainThread", 2: "worker-1", 3: "worker-2", 4: "worker-3"})


NEXT_FRAME = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def measure_page(browser, path, kind):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    start = time.perf_counter()
    page.goto(f"file://{path}")
    page.wait_for_selector("html[data-ready]", state="attached", timeout=60_000)
    page.evaluate(f"() => {NEXT_FRAME}")
    wall = time.perf_counter() - start
    timings = page.evaluate("heapscopeReport.timings")
    result = {"paint_ms": timings["ready"], "wall_ms": wall * 1000, "parse_ms": timings["parse"],
              "build_ms": timings["build"], "drawn": len(page.evaluate("heapscopeReport.frames()"))}
    if kind != "table":
        zooms, zoom_frames, searches, search_frames = [], [], [], []
        for _ in range(5):
            frames = [f for f in page.evaluate("heapscopeReport.frames()") if f["depth"] == 3]
            widest = max(frames, key=lambda f: f["width"])
            handler, frame = page.evaluate(
                """async ([x, y]) => {
                    const canvas = document.querySelector("canvas.flame-canvas");
                    const box = canvas.getBoundingClientRect();
                    const t0 = performance.now();
                    canvas.dispatchEvent(new MouseEvent("click", {clientX: box.left + x, clientY: box.top + y,
                                                                  bubbles: true}));
                    const t1 = performance.now();
                    await """ + NEXT_FRAME + """;
                    return [t1 - t0, performance.now() - t0];
                }""", [widest["x"] + widest["width"] / 2, widest["y"] + 5])
            zooms.append(handler)
            zoom_frames.append(frame)
            page.keyboard.press("Escape")
            for query in ("function_1", "module_3", ""):
                handler, frame = page.evaluate(
                    """async (query) => {
                        const input = document.querySelector("input.search");
                        const t0 = performance.now();
                        input.value = query;
                        input.dispatchEvent(new Event("input", {bubbles: true}));
                        const t1 = performance.now();
                        await """ + NEXT_FRAME + """;
                        return [t1 - t0, performance.now() - t0];
                    }""", query)
                searches.append(handler)
                search_frames.append(frame)
        result.update(zoom_ms=statistics.median(zooms), zoom_frame_ms=statistics.median(zoom_frames),
                      search_ms=statistics.median(searches), search_frame_ms=statistics.median(search_frames))
        # Rebuilding the tree: each switch on, timed, then off again.
        for label, selector in (("inverted_ms", "label:has-text('Inverted') input"),
                                ("hide_ms", "label:has-text('Hide import') input")):
            page.locator(selector).click()
            result[label] = page.evaluate("heapscopeReport.timings.lastAction")
            page.locator(selector).click()
        page.select_option("select.threads", "split")
        result["split_ms"] = page.evaluate("heapscopeReport.timings.lastAction")
        page.select_option("select.threads", "merged")
    if errors:
        raise RuntimeError(f"page errors: {errors}")
    page.close()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", type=int, default=100_000)
    parser.add_argument("--depth", type=int, default=24)
    parser.add_argument("--kinds", nargs="+", default=["flamegraph", "table", "diff"])
    parser.add_argument("--keep", help="write the pages to this directory (default: a temporary one)")
    options = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("run_html: needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    start = time.perf_counter()
    profile = synthetic_profile(options.stacks, options.depth)
    frames = len({frame for sample in profile.samples for frame in sample.stack})
    print(f"profile: {len(profile.samples):,} distinct stacks, {frames:,} distinct frames, "
          f"{sum(len(s.stack) for s in profile.samples) / len(profile.samples):.1f} frames deep on average "
          f"(made in {time.perf_counter() - start:.1f} s)")
    directory = options.keep or tempfile.mkdtemp(prefix="heapscope-html-bench-")
    os.makedirs(directory, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        for kind in options.kinds:
            subject = profile
            if kind == "diff":
                after = Profile(profile.title, [Sample(s.stack, s.bytes * (1 + (i % 3 == 0)), s.blocks, s.thread,
                                                       s.allocator) for i, s in enumerate(profile.samples)])
                subject = diff_profiles(profile, after)
            start = time.perf_counter()
            page = render_html(subject, kind)
            build = time.perf_counter() - start
            path = os.path.join(directory, f"{kind}.html")
            with open(path, "w", encoding="utf-8") as out:
                out.write(page)
            size = os.path.getsize(path)
            result = measure_page(browser, path, kind)
            line = (f"{kind:10} page {size / 1e6:5.1f} MB  built {build:4.1f} s  painted {result['paint_ms']:6.0f} ms "
                    f"(to screen {result['wall_ms']:5.0f} ms; JSON {result['parse_ms']:4.0f} ms, views "
                    f"{result['build_ms']:4.0f} ms)  {result['drawn']:,} frames drawn")
            if "zoom_ms" in result:
                line += (f"\n{'':10} zoom {result['zoom_ms']:5.1f} ms (on screen {result['zoom_frame_ms']:5.1f} ms)  "
                         f"search {result['search_ms']:5.1f} ms (on screen {result['search_frame_ms']:5.1f} ms)  "
                         f"inverted {result['inverted_ms']:4.0f} ms  hide {result['hide_ms']:4.0f} ms  "
                         f"split threads {result['split_ms']:4.0f} ms")
            print(line, flush=True)
        browser.close()
    if not options.keep:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
