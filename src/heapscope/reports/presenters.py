"""Presenters behind one interface: each turns a report-model Profile into
one format. ``PRESENTERS`` lists them by name; ``render`` and ``write`` go
through it, so every door's Profile can be shown in every format.

A presenter is ``render(profile, **options) -> str | bytes``; ``binary``
says which. Options a presenter does not take are refused by it.
"""

import importlib
import json
from dataclasses import dataclass

__all__ = ["Presenter", "PRESENTERS", "render", "write", "names"]


@dataclass(frozen=True)
class Presenter:
    name: str
    description: str
    module: str  # where `function` lives: imported on first use
    function: str
    binary: bool = False
    suffix: str = ".txt"

    def render(self, profile, **options):
        return getattr(importlib.import_module(self.module), self.function)(profile, **options)


def _table(profile, rows=10):
    from heapscope.reports.capture_text import location_table
    from heapscope.reports.text import format_bytes

    locations = profile.locations()
    head = (f"{profile.title}: {format_bytes(sum(row.bytes for row in locations))} in "
            f"{sum(row.blocks for row in locations)} blocks")
    return "\n".join([head] + location_table(locations, rows))


def _json(profile):
    """The profile as JSON: the page's document (page_data), which names every field."""
    from heapscope.reports.page_data import page_data

    return json.dumps(page_data(profile, with_sources=False), separators=(",", ":"))


PRESENTERS = {presenter.name: presenter for presenter in (
    Presenter("table", "text table of the locations holding the most", __name__, "_table"),
    Presenter("tree", "text call tree, biggest branch first", "heapscope.reports.capture_text", "tree_report"),
    Presenter("json", "the profile as JSON (frames, stack trie, samples, timeline)", __name__, "_json",
              suffix=".json"),
    Presenter("collapsed", "collapsed stacks (frame;frame;frame bytes), for flamegraph.pl and speedscope",
              "heapscope.reports.exports", "collapsed_text", suffix=".txt"),
    Presenter("csv", "one row per stack: function, file, line, bytes, blocks, allocator, thread, stack",
              "heapscope.reports.exports", "csv_text", suffix=".csv"),
    Presenter("pprof", "gzipped profile.proto, for go tool pprof", "heapscope.reports.exports", "pprof_bytes",
              binary=True, suffix=".pb.gz"),
    Presenter("speedscope", "speedscope's file format (JSON)", "heapscope.reports.exports", "speedscope_text",
              suffix=".speedscope.json"),
    Presenter("html", "an interactive page: flame graph, temporal, table or diff", "heapscope.reports.html",
              "render_html", suffix=".html"),
    Presenter("dot", "flow graph of lines of code, for Graphviz (dot -Tsvg)", "heapscope.reports.flowgraph",
              "flowgraph_dot", suffix=".dot"),
    Presenter("timeplot", "PNG: memory over time and the largest stacks (needs matplotlib)",
              "heapscope.reports.timeplot", "timeplot_png", binary=True, suffix=".png"),
)}


def names():
    return sorted(PRESENTERS)


def _presenter(name):
    try:
        return PRESENTERS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}: choose one of {', '.join(names())}") from None


def render(profile, name, **options):
    """*profile* in format *name*: str, or bytes for a binary format."""
    return _presenter(name).render(profile, **options)


def write(profile, name, path, **options):
    """*profile* in format *name*, written to *path* (replaced if it exists)."""
    presenter = _presenter(name)
    output = presenter.render(profile, **options)
    if presenter.binary:
        with open(path, "wb") as out:
            out.write(output)
    else:
        with open(path, "w", encoding="utf-8") as out:
            out.write(output if output.endswith("\n") else output + "\n")
    return path
