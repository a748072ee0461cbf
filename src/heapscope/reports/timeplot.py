"""Time plots: memory over time, and chosen lines of code (or the largest
stacks) beside it, drawn with matplotlib.

* :func:`usage_at_lines`: the bytes at chosen lines of code in a set of
  stacks, cumulative (stacks that contain the line) or local (stacks that
  end at it), and the total;
* :func:`draw_time_plot`: the drawing, on a matplotlib Figure: the total
  over time; with series, also each series' bytes and its share of the
  total (three panels sharing the time axis);
* :func:`timeplot_png`: the presenter, a Profile's heap over time
  (``Profile.temporal``, or its ``timeline``) as a PNG;
* :func:`show_time_plot`: the same drawing in a pyplot window.

matplotlib is needed (``pip install 'heapscope[plots]'``).
"""

import io
import math
import numbers
import os

__all__ = ["usage_at_lines", "draw_time_plot", "timeplot_png", "show_time_plot"]

_NEEDS_MATPLOTLIB = "time plots need matplotlib: pip install 'heapscope[plots]'"


def usage_at_lines(weighted_stacks, lines, cumulative=True):
    """``(bytes per line, total)``: for each of *lines* ((filename, lineno)
    pairs), the bytes of the *weighted_stacks* ((stack, bytes) pairs, a
    stack being (filename, lineno) pairs outermost first, or None) that
    contain it (*cumulative*) or end at it; the total counts every stack."""
    lines = tuple(lines)
    found = dict.fromkeys(lines, 0)
    total = 0
    for stack, size in weighted_stacks:
        total += size
        if not stack:
            continue
        if cumulative:
            for line in found.keys() & set(stack):
                found[line] += size
        elif stack[-1] in found:
            found[stack[-1]] += size
    return tuple(found[line] for line in lines), total


def check_scale(scale):
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a number, not {type(scale).__name__}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    return float(scale)


def _scale_name(scale):
    return {1: "bytes", 1 << 10: "KiB", 1 << 20: "MiB", 1 << 30: "GiB"}.get(scale, f"{scale:g} bytes")


def plot_text(text):
    """*text* shown literally by matplotlib: `$` would start mathematics, control characters are escaped."""
    from heapscope.reports.text import safe_text

    return safe_text(text).replace("$", r"\$")


def draw_time_plot(figure, times, totals, series=(), labels=(), scale=1 << 20, title=None):
    """Draws on *figure*: *totals* (bytes) over *times* (seconds); with
    *series* (lists of bytes parallel to *times*, named by *labels*), a
    second panel with each series and a third with its share of the total."""
    scale = check_scale(scale)
    unit = _scale_name(scale)
    series = [list(values) for values in series]
    labels = [plot_text(label) for label in labels]
    if series:
        total_axes, series_axes, share_axes = figure.subplots(3, 1, sharex=True)
        for values, label in zip(series, labels):
            series_axes.plot(times, [value / scale for value in values], label=label)
            share_axes.plot(times, [value / total if total else 0.0 for value, total in zip(values, totals)],
                            label=label)
        series_axes.set_ylabel(f"selected ({unit})")
        share_axes.set_ylabel("share of the total")
        series_axes.legend(loc="upper left", fontsize="small")
        bottom = share_axes
    else:
        total_axes = bottom = figure.subplots(1, 1)
    total_axes.plot(times, [total / scale for total in totals], color="black")
    total_axes.set_ylabel(f"total ({unit})")
    if title:
        total_axes.set_title(plot_text(title))
    bottom.set_xlabel("seconds since the start")
    for axes in figure.axes:
        axes.margins(x=0)
    figure.tight_layout()
    return figure


def _figure_size(series):
    return (10, 8) if series else (10, 5)


def _temporal_series(profile, lines, top):
    """(times, totals, series, labels) of a Profile's heap over time."""
    from heapscope.reports.model import UNKNOWN_FRAME

    moments = profile.temporal
    if not moments:
        timeline = profile.timeline
        if timeline is None or not len(timeline):
            raise ValueError(f"{profile.title or 'this profile'}: no memory over time to plot")
        if lines:
            raise ValueError(f"{profile.title or 'this profile'}: no stacks over time, so no lines to plot")
        return list(timeline.times), list(timeline.heap), [], []
    times = [moment.time for moment in moments]
    totals = [moment.heap for moment in moments]
    if lines:
        labels = sorted(lines)
        keys = [tuple(lines[label]) for label in labels]
        stacks = [tuple((frame.filename, frame.lineno) for frame in stack) for stack in profile.temporal_stacks]
        columns = [usage_at_lines(((stacks[index], size) for index, (size, _blocks) in moment.samples.items()),
                                  keys)[0] for moment in moments]
        return times, totals, [list(column) for column in zip(*columns)] if columns else [[] for _ in keys], labels
    peaks = {}
    for moment in moments:
        for index, (size, _blocks) in moment.samples.items():
            peaks[index] = max(peaks.get(index, 0), size)
    chosen = [index for index, peak in sorted(peaks.items(), key=lambda item: (-item[1], item[0])) if peak > 0][:top]
    series = [[moment.samples.get(index, (0, 0))[0] for moment in moments] for index in chosen]
    labels = []
    for index in chosen:
        stack = profile.temporal_stacks[index]
        inner = stack[-1] if stack else UNKNOWN_FRAME
        label = f"{inner.function} ({os.path.basename(inner.filename)}:{inner.lineno})" if inner.filename \
            else inner.function
        labels.append(label if len(label) <= 70 else label[:67] + "...")
    return times, totals, series, labels


def timeplot_png(profile, *, lines=None, top=5, scale=1 << 20):
    """The presenter: *profile*'s heap over time as a PNG (bytes). With
    *lines* ({label: (filename, lineno)}), the cumulative bytes at each of
    those lines; else the *top* stacks that peak highest (0: the total
    only). A Profile with a timeline but no stacks over time plots its heap."""
    if isinstance(top, bool) or not isinstance(top, numbers.Integral) or top < 0:
        raise ValueError(f"top must be a whole number >= 0, got {top!r}")
    scale = check_scale(scale)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(_NEEDS_MATPLOTLIB) from None
    times, totals, series, labels = _temporal_series(profile, lines, int(top))
    figure = Figure(figsize=_figure_size(series), dpi=100)
    FigureCanvasAgg(figure)
    draw_time_plot(figure, times, totals, series, labels, scale, profile.title)
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def show_time_plot(times, totals, series=(), labels=(), scale=1 << 20, title=None):
    """draw_time_plot in a new pyplot figure, then ``pyplot.show()``."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(_NEEDS_MATPLOTLIB) from None
    series = list(series)
    figure = plt.figure(figsize=_figure_size(series))
    draw_time_plot(figure, times, totals, series, labels, scale, title)
    plt.show()
    return figure
