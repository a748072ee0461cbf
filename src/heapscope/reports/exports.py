"""Export presenters: a report-model Profile in the formats other tools open.

* **pprof** (:func:`pprof_bytes`, :func:`write_pprof`): a gzipped
  ``perftools.profiles.Profile`` message (pprof's ``profile.proto``),
  encoded here by hand, for ``go tool pprof``. Sample types
  ``inuse_space`` (bytes) and ``inuse_objects`` (count), the names of Go's
  heap profiles, so pprof's ``-inuse_space``/``-inuse_objects`` and
  ``-sample_index=inuse_space`` work; ``inuse_space`` is the default. One
  Location per distinct frame (function, file, line), one Function per
  function and file; sample stacks innermost first; the thread, its name,
  the allocator and the domain as labels. A difference writes after minus
  before (negative where memory went away).
* **speedscope** (:func:`speedscope_text`, :func:`write_speedscope`):
  speedscope's JSON file format: shared frames (name, file, line) and
  "sampled" profiles in bytes: all threads merged first, then one per
  thread when there are several. A difference (speedscope refuses negative
  weights) has the after side and the before side as two profiles each.
* **collapsed** (:func:`collapsed_text`, :func:`write_collapsed`): one line
  per distinct stack, ``frame;frame;frame bytes``, outermost first, largest
  first, threads and allocators merged; for flamegraph.pl and speedscope.
  A frame is ``function (file:line)``; ``%``, ``;`` and every character
  that ends a line (``str.splitlines``) are written %XX (UTF-8, as in URLs:
  ``;`` is ``%3B``, a line break ``%0A``), so each line parses. A
  difference writes flamegraph.pl's differential form, ``stack before
  after`` (speedscope reads only one count).
* **csv** (:func:`csv_text`, :func:`write_csv`): one row per sample of the
  Profile (a stack with its thread, allocator and domain), largest first, after a
  header row: ``function, file, line, native, bytes, blocks, allocator,
  thread, thread_name, domain, stack`` (+ ``before_bytes, before_blocks``
  in a difference). function, file and line are the innermost frame's;
  stack is the collapsed format's line without its count.

``EXPORTS`` maps each format's name to its writer; :func:`write_export`
writes one by name. Writers build the whole file before opening *path*, and
raise :class:`ExportError` (an OSError) naming the file when it cannot be
written; an unknown format is a ValueError listing the known ones.
"""

import csv
import gzip
import io
import json
import os
from urllib.parse import quote

from heapscope.reports.model import UNKNOWN_FRAME

__all__ = ["EXPORTS", "ExportError", "write_export", "pprof_bytes", "write_pprof", "speedscope_text",
           "write_speedscope", "collapsed_text", "write_collapsed", "csv_text", "write_csv", "frame_label",
           "escape_frame_label", "CSV_COLUMNS", "SPEEDSCOPE_SCHEMA", "PPROF_SAMPLE_TYPES"]


class ExportError(OSError):
    """An export could not be written to its file."""


def _clean(text):
    """*text* as a str that encodes to UTF-8: lone surrogates (names decoded
    with surrogateescape) are written as backslash escapes."""
    text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _stack(sample):
    return sample.stack or (UNKNOWN_FRAME,)


def _largest_first(samples):
    """Samples sorted largest first (either side of a difference); ties keep their order."""
    return sorted(samples, key=lambda s: (-max(s.bytes, s.before_bytes), -max(s.blocks, s.before_blocks)))


def _write(path, data, what):
    """*data* (bytes) written to *path*, replacing it; ExportError if that fails."""
    try:
        with open(path, "wb") as out:
            out.write(data)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ExportError(f"cannot write the {what} to {os.fspath(path)}: {reason}") from error
    return path


# -- collapsed stacks -------------------------------------------------------------------------------------------

# What would split a line for some reader: every character str.splitlines() breaks at.
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_ESCAPES = {ord(ch): quote(ch, safe="") for ch in "%;" + _LINE_BREAKS}


def escape_frame_label(label):
    """*label* safe in a collapsed line: ``%``, ``;`` and line breaks as %XX."""
    return _clean(label).translate(_ESCAPES)


def frame_label(frame):
    """A frame as the collapsed format names it: ``function (file:line)``."""
    return frame.describe()


def _collapsed_stack(stack, frame_name):
    return ";".join(escape_frame_label(frame_name(frame)) for frame in stack)


def collapsed_text(profile, *, frame_name=frame_label, sort=True):
    """*profile* as collapsed stacks (see the module's doc). *frame_name*
    names a frame (before escaping); *sort* False keeps the samples' order
    (equal stacks at the first one)."""
    totals = {}
    for sample in profile.samples:
        text = _collapsed_stack(_stack(sample), frame_name)
        before, after = totals.get(text, (0, 0))
        totals[text] = (before + sample.before_bytes, after + sample.bytes)
    items = list(totals.items())
    if sort:
        items.sort(key=lambda item: (-max(item[1]), item[0]))
    if profile.is_diff:
        lines = [f"{text} {int(before)} {int(after)}\n" for text, (before, after) in items]
    else:
        lines = [f"{text} {int(after)}\n" for text, (_before, after) in items]
    return "".join(lines)


def write_collapsed(profile, path, **options):
    """collapsed_text(profile, **options) written to *path* in UTF-8."""
    return _write(path, collapsed_text(profile, **options).encode("utf-8"), "collapsed stacks")


# -- CSV ----------------------------------------------------------------------------------------------------------

CSV_COLUMNS = ("function", "file", "line", "native", "bytes", "blocks", "allocator", "thread", "thread_name",
               "domain", "stack")


def csv_text(profile):
    """*profile* as CSV (see the module's doc), quoted by the csv module,
    lines ending in CRLF (RFC 4180)."""
    out = io.StringIO()
    writer = csv.writer(out)
    columns = CSV_COLUMNS + (("before_bytes", "before_blocks") if profile.is_diff else ())
    writer.writerow(columns)
    for sample in _largest_first(profile.samples):
        stack = _stack(sample)
        inner = stack[-1]
        row = [_clean(inner.function), _clean(inner.filename), inner.lineno, int(inner.native), sample.bytes,
               sample.blocks, _clean(sample.allocator), sample.thread,
               _clean(profile.threads.get(sample.thread, "")), sample.domain, _collapsed_stack(stack, frame_label)]
        if profile.is_diff:
            row += [sample.before_bytes, sample.before_blocks]
        writer.writerow(row)
    return out.getvalue()


def write_csv(profile, path):
    """csv_text(profile) written to *path* in UTF-8."""
    return _write(path, csv_text(profile).encode("utf-8"), "CSV table")


# -- speedscope ---------------------------------------------------------------------------------------------------

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def _exporter():
    try:
        from importlib.metadata import version

        return f"heapscope {version('heapscope')}"
    except Exception:  # not installed (a source checkout)
        return "heapscope"


def speedscope_text(profile):
    """*profile* in speedscope's file format (see the module's doc), as JSON
    text; ``<`` is written ``\\u003c`` so the text can sit in an HTML page."""
    frames = []
    index = {}

    def frame_index(frame):
        position = index.get(frame)
        if position is None:
            position = index[frame] = len(frames)
            entry = {"name": _clean(frame.function)}
            if frame.filename:
                entry["file"] = _clean(frame.filename)
            if frame.lineno > 0:
                entry["line"] = frame.lineno
            frames.append(entry)
        return position

    threads = sorted({sample.thread for sample in profile.samples})
    groups = [("all threads", None)]
    if len(threads) > 1:
        groups += [(_thread_name(profile, thread), thread) for thread in threads]
    sides = [("after: ", "bytes"), ("before: ", "before_bytes")] if profile.is_diff else [("", "bytes")]
    profiles = []
    for prefix, attribute in sides:
        for name, thread in groups:
            weights = {}
            for sample in profile.samples:
                weight = getattr(sample, attribute)
                if (thread is None or sample.thread == thread) and weight:
                    stack = tuple(frame_index(frame) for frame in _stack(sample))
                    weights[stack] = weights.get(stack, 0) + weight
            stacks = sorted(weights, key=lambda stack: -weights[stack])
            total = sum(weights.values())
            profiles.append({"type": "sampled", "name": prefix + name, "unit": "bytes", "startValue": 0,
                             "endValue": total, "samples": [list(stack) for stack in stacks],
                             "weights": [weights[stack] for stack in stacks]})
    document = {
        "$schema": SPEEDSCOPE_SCHEMA,
        "name": _clean(f"{profile.title}: {profile.source}" if profile.source else profile.title),
        "exporter": _exporter(),
        "activeProfileIndex": 0,
        "shared": {"frames": frames},
        "profiles": profiles,
    }
    return json.dumps(document, separators=(",", ":")).replace("<", "\\u003c")


def _thread_name(profile, thread):
    name = profile.threads.get(thread)
    if thread == 0:
        return "thread unknown"
    return _clean(f"thread {thread} ({name})" if name else f"thread {thread}")


def write_speedscope(profile, path):
    """speedscope_text(profile) written to *path* in UTF-8."""
    return _write(path, speedscope_text(profile).encode("utf-8"), "speedscope profile")


# -- pprof --------------------------------------------------------------------------------------------------------

# (type, unit) of the two values of every sample: Go's heap-profile names.
PPROF_SAMPLE_TYPES = (("inuse_space", "bytes"), ("inuse_objects", "count"))


def _varint(value):
    """Protocol buffers' base-128 varint; a negative int64 as its 64-bit two's complement."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int(field, value):
    """A varint field (wire type 0); proto3 leaves zero out."""
    return _varint(field << 3) + _varint(value) if value else b""


def _bytes(field, payload):
    """A length-delimited field (wire type 2): a string, a message or a packed list."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _packed(field, values):
    return _bytes(field, b"".join(_varint(v) for v in values)) if values else b""


class _Strings:
    """The string table: "" first, each string once."""

    def __init__(self):
        self.table = [""]
        self.index = {"": 0}

    def __call__(self, text):
        text = _clean(text)
        position = self.index.get(text)
        if position is None:
            position = self.index[text] = len(self.table)
            self.table.append(text)
        return position


def pprof_bytes(profile):
    """*profile* as a gzipped pprof Profile message (see the module's doc)."""
    strings = _Strings()
    body = bytearray()
    for kind, unit in PPROF_SAMPLE_TYPES:  # Profile.sample_type = 1: ValueType{type = 1, unit = 2}
        body += _bytes(1, _int(1, strings(kind)) + _int(2, strings(unit)))

    functions = {}  # (name, file) -> id
    locations = {}  # frame -> id
    function_messages = []
    location_messages = []

    def location_id(frame):
        position = locations.get(frame)
        if position is None:
            key = (frame.function, frame.filename)
            function = functions.get(key)
            if function is None:
                function = functions[key] = len(functions) + 1
                # Function: id = 1, name = 2, filename = 4. No system_name (3): pprof
                # demangles a name equal to its system name, and would cut
                # "<module>" or "<listcomp>" out as C++ template arguments.
                function_messages.append(_int(1, function) + _int(2, strings(frame.function))
                                         + _int(4, strings(frame.filename)))
            position = locations[frame] = len(locations) + 1
            # Location: id = 1, mapping_id = 2, line = 4: Line{function_id = 1, line = 2}.
            location_messages.append(_int(1, position) + _int(2, 1)
                                     + _bytes(4, _int(1, function) + _int(2, frame.lineno)))
        return position

    for sample in profile.samples:
        ids = [location_id(frame) for frame in reversed(_stack(sample))]  # the leaf first
        if profile.is_diff:
            values = [sample.bytes - sample.before_bytes, sample.blocks - sample.before_blocks]
        else:
            values = [sample.bytes, sample.blocks]
        labels = []
        if sample.thread:  # Label: key = 1, str = 2, num = 3; the id as text: pprof shows it as it is
            labels.append(_int(1, strings("thread")) + _int(2, strings(str(sample.thread))))
            name = profile.threads.get(sample.thread)
            if name:
                labels.append(_int(1, strings("thread_name")) + _int(2, strings(name)))
        if sample.allocator:
            labels.append(_int(1, strings("allocator")) + _int(2, strings(sample.allocator)))
        if sample.domain:
            name = profile.domains.get(sample.domain)
            labels.append(_int(1, strings("domain")) + (_int(2, strings(name)) if name else _int(3, sample.domain)))
        # Profile.sample = 2: Sample{location_id = 1 (packed), value = 2 (packed), label = 3}.
        body += _bytes(2, _packed(1, ids) + _packed(2, values) + b"".join(_bytes(3, label) for label in labels))

    # Profile.mapping = 3: one mapping that says every location is symbolized
    # (id = 1, filename = 5, has_functions = 7, has_filenames = 8, has_line_numbers = 9),
    # so pprof does not try to symbolize addresses.
    body += _bytes(3, _int(1, 1) + _int(5, strings(profile.source or "python"))
                   + _int(7, 1) + _int(8, 1) + _int(9, 1))
    for message in location_messages:  # Profile.location = 4
        body += _bytes(4, message)
    for message in function_messages:  # Profile.function = 5
        body += _bytes(5, message)
    comments = [profile.title] + list(profile.header)
    if profile.sampled:
        comments.append("sampled: bytes and blocks are estimates")
    if profile.is_diff:
        comments.append("a difference: values are after minus before")
    comment_ids = [strings(text) for text in comments if text]
    default_type = strings(PPROF_SAMPLE_TYPES[0][0])
    for text in strings.table:  # Profile.string_table = 6
        body += _bytes(6, text.encode("utf-8"))
    body += _packed(13, comment_ids)  # Profile.comment = 13
    body += _int(14, default_type)  # Profile.default_sample_type = 14
    return gzip.compress(bytes(body), mtime=0)


def write_pprof(profile, path):
    """pprof_bytes(profile) written to *path* (by custom, ``NAME.pb.gz``)."""
    return _write(path, pprof_bytes(profile), "pprof profile")


# -- the registry -------------------------------------------------------------------------------------------------

EXPORTS = {
    "pprof": write_pprof,
    "speedscope": write_speedscope,
    "collapsed": write_collapsed,
    "csv": write_csv,
}


def write_export(profile, name, path):
    """*profile* written to *path* in the export format *name*."""
    try:
        writer = EXPORTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown export format {name!r}: choose one of {', '.join(sorted(EXPORTS))}") from None
    return writer(profile, path)
