"""HTML reports: one self-contained page per report, for a browser.

:func:`render_html` turns a :class:`~heapscope.reports.model.Profile` into a
page that works offline from ``file://``: its data (the document of
:func:`heapscope.reports.page_data.page_data`) and every line of its script
and style are inside the file; it loads nothing (a Content-Security-Policy
says so to the browser too). The script and style are package data in
``heapscope/reports/html_assets``.

Kinds of page (docs/reports.md shows each):

* ``flamegraph``: an icicle graph of the call tree (click to zoom, search,
  tooltips, thread selector, inverted, hide import machinery);
* ``temporal``: memory over time above the flame graph; a click or a dragged
  window picks the moment whose heap the flame graph shows;
* ``table``: a sortable, filterable table of locations (innermost frame,
  thread, allocator);
* ``diff``: a differential flame graph of a difference (``Profile.is_diff``)
  and the table of changes.

Names from the program never become markup: the data is escaped so that
nothing in it can close its ``<script>`` element, and the page's script
writes every name with ``textContent`` or canvas ``fillText``.
"""

import base64
import hashlib
import html
import json
import re
from importlib import resources

from heapscope.reports.page_data import page_data

__all__ = ["KINDS", "render_html", "embed_json"]

KINDS = ("flamegraph", "temporal", "table", "diff")

# The page's script, in the order they are joined (one scope).
_SCRIPTS = ("util.js", "view.js", "flame.js", "chart.js", "table.js", "main.js")
_STYLES = ("report.css",)

# Characters that could end a <script> element or a JS line when they are
# inside a JSON string; lone surrogates (names decoded with surrogateescape)
# cannot be written as UTF-8 and are escaped too.
_UNSAFE = re.compile("[<>&\u2028\u2029\ud800-\udfff]")


def embed_json(value):
    """*value* as JSON text that is safe inside ``<script
    type="application/json">``: ``<``, ``>``, ``&``, U+2028, U+2029 and lone
    surrogates are written as ``\\uXXXX`` escapes (they only occur inside
    strings, where JSON.parse reads them back)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _UNSAFE.sub(lambda match: "\\u%04x" % ord(match.group()), text)


def _asset(name):
    return resources.files("heapscope.reports").joinpath("html_assets", name).read_text(encoding="utf-8")


def _script():
    body = "\n".join(f"// ---- {name}\n{_asset(name)}" for name in _SCRIPTS)
    script = f'(function () {{\n"use strict";\n{body}\n}}());\n'
    if "</script" in script.lower() or "<!--" in script:
        raise AssertionError("an HTML asset would end its <script> element")
    return script


def _sha256(text):
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def render_html(profile, kind, *, inverted=False, split_threads=False, title=None):
    """The page of *kind* (one of :data:`KINDS`) for *profile*, as text (write
    it as UTF-8).

    *inverted*: the flame graph starts inverted (allocating frames at the
    top). *split_threads*: it starts with one subtree per thread. *title*
    replaces the profile's title. ``temporal`` needs a profile with a
    timeline or temporal snapshots; ``diff`` a difference
    (:func:`heapscope.reports.model.diff_profiles`).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown HTML report kind {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "diff" and not profile.is_diff:
        raise ValueError("a diff report needs a difference of two profiles (diff_profiles)")
    if kind == "temporal" and profile.timeline is None and not profile.temporal:
        raise ValueError("a temporal report needs a profile with a timeline (temporal_profile_from_capture)")
    document = page_data(profile)
    if title is not None:
        document["title"] = title
    options = {"kind": kind, "inverted": bool(inverted), "split_threads": bool(split_threads)}
    script = _script()
    style = "\n".join(_asset(name) for name in _STYLES)
    policy = (f"default-src 'none'; script-src '{_sha256(script)}'; style-src 'unsafe-inline'; "
              "img-src 'none'; connect-src 'none'; font-src 'none'; form-action 'none'; base-uri 'none'")
    page_title = f"heapscope {kind}: {document['title']}"
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        f"<title>{html.escape(page_title)}</title>\n",
        f"<style>\n{style}\n</style>\n</head>\n<body>\n",
        '<noscript>This heapscope report needs JavaScript.</noscript>\n',
        '<div id="app"></div>\n',
        f'<script type="application/json" id="heapscope-options">{embed_json(options)}</script>\n',
        f'<script type="application/json" id="heapscope-data">{embed_json(document)}</script>\n',
        f"<script>{script}</script>\n</body>\n</html>\n",
    ])
