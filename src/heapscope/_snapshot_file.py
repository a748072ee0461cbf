"""heapscope's own on-disk snapshot format (``Snapshot.dump`` / ``Snapshot.load``).

The stdlib ``tracemalloc`` pickles snapshots, which means loading one runs
whatever code the file asks for.  heapscope writes a plain binary format
instead; reading it never executes anything and every malformed input is
reported as :class:`SnapshotFileError` (a :class:`ValueError` subclass).

The layout is documented in :func:`write_snapshot`.
"""

import os
import struct
import sys
import zlib
from array import array
from operator import itemgetter

from heapscope._private_files import PRIVATE_MODE, make_private

__all__ = ["SnapshotFileError", "write_snapshot", "read_snapshot",
           "MAGIC", "FORMAT_VERSION"]

MAGIC = b"HEAPSCOPE-SNAPSHOT\n"
# Version 2 adds the trace_count column (sampled snapshots), version 3 the
# snapshot's extra attributes, each flagged in the header; a file is written
# with the lowest version that holds what it has, so version 1 stays the
# usual one and older readers still read it.
FORMAT_VERSION = 3

# magic, version, flags, traceback_limit, n_strings, n_frames,
# n_tracebacks, n_frame_refs, n_traces, body_size, body_crc32
_HEADER = struct.Struct("<%dsHHq6QI" % len(MAGIC))
_HEADER_CRC = struct.Struct("<I")
_VERSION = struct.Struct("<H")
_PREFIX_SIZE = _HEADER.size + _HEADER_CRC.size

_FLAG_LIMIT_IS_NONE = 0x1
_FLAG_COUNTS = 0x2   # version 2: a trace_count column follows trace_nframe
_FLAG_ATTRIBUTES = 0x4   # version 3: the body starts with the attributes block
_KNOWN_FLAGS = _FLAG_LIMIT_IS_NONE | _FLAG_COUNTS | _FLAG_ATTRIBUTES

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_U32_MAX = (1 << 32) - 1
# total_nframe=None is stored as this value; it is refused as a real value.
_NFRAME_NONE = _I64_MIN

_COMPRESS_LEVEL = 1   # the column layout compresses well even at level 1


def _find_u32_typecode():
    for code in ("I", "L", "H"):
        if array(code).itemsize == 4:
            return code
    raise ImportError("heapscope snapshot files need a 4-byte array typecode")


_U32 = _find_u32_typecode()
_I64 = "q"
_SWAP = sys.byteorder != "little"   # the file is always little-endian


class SnapshotFileError(ValueError):
    """A file given to ``Snapshot.load`` is not a readable heapscope snapshot.

    ``filename`` is the file that was being read and ``problem`` says what is
    wrong with it (not a snapshot, truncated, corrupted, newer version...).
    """

    def __init__(self, filename, problem):
        self.filename = filename
        self.problem = problem
        super().__init__("cannot load heapscope snapshot %r: %s"
                         % (filename, problem))

    def __reduce__(self):
        return (type(self), (self.filename, self.problem))


def _display_name(filename):
    try:
        return os.fsdecode(filename)
    except TypeError:
        return filename


# ---------------------------------------------------------------------------
# Attributes: plain data only, in a tagged encoding (no pickle)
# ---------------------------------------------------------------------------

_U32_STRUCT = struct.Struct("<I")
_U64_STRUCT = struct.Struct("<Q")
_F64_STRUCT = struct.Struct("<d")
# Containers nest at most this deep (a list holding itself is refused too).
_MAX_DEPTH = 100
_ATTRIBUTE_TYPES = ("None, bool, int, float, str, bytes, and tuples, lists "
                    "and dicts of these")


def _encode_value(value, out, where, depth):
    """Append the tagged encoding of *value* to the bytearray *out*."""
    kind = type(value)
    if value is None:
        out += b"N"
    elif kind is bool:
        out += b"T" if value else b"F"
    elif kind is int:
        data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        out += b"i" + _U32_STRUCT.pack(len(data)) + data
    elif kind is float:
        out += b"f" + _F64_STRUCT.pack(value)
    elif kind is str or kind is bytes:
        data = value.encode("utf-8", "surrogatepass") if kind is str else value
        out += (b"s" if kind is str else b"b") + _U32_STRUCT.pack(len(data)) + data
    elif kind is tuple or kind is list or kind is dict:
        if depth >= _MAX_DEPTH:
            raise ValueError("cannot dump snapshot: attribute %s nests containers "
                             "more than %d deep (or holds itself)" % (where, _MAX_DEPTH))
        out += {tuple: b"t", list: b"l", dict: b"d"}[kind] + _U32_STRUCT.pack(len(value))
        if kind is dict:
            for key, item in value.items():
                _encode_value(key, out, "%s (a key)" % where, depth + 1)
                _encode_value(item, out, "%s[%r]" % (where, key), depth + 1)
        else:
            for index, item in enumerate(value):
                _encode_value(item, out, "%s[%d]" % (where, index), depth + 1)
    else:
        raise TypeError("cannot dump snapshot: attribute %s is a %s; a snapshot "
                        "file stores only %s" % (where, kind.__name__, _ATTRIBUTE_TYPES))


def _encode_attributes(attributes):
    """The attributes block: a u32 count, then each name (u32 length, UTF-8)
    and its tagged value."""
    out = bytearray(_U32_STRUCT.pack(len(attributes)))
    for name, value in attributes.items():
        if type(name) is not str:
            raise TypeError("cannot dump snapshot: attribute name %r is not a str" % (name,))
        data = name.encode("utf-8", "surrogatepass")
        out += _U32_STRUCT.pack(len(data)) + data
        _encode_value(value, out, repr(name), 0)
    return bytes(out)


class _AttributeDecoder:
    """Reads an attributes block; any inconsistency raises ValueError."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, size):
        end = self.pos + size
        if end > len(self.data):
            raise ValueError("attributes run past their block")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def u32(self):
        return _U32_STRUCT.unpack(self.take(4))[0]

    def text(self):
        return str(self.take(self.u32()), "utf-8", "surrogatepass")

    def value(self, depth=0):
        tag = bytes(self.take(1))
        if tag in b"NTF":
            return {b"N": None, b"T": True, b"F": False}[tag]
        if tag == b"i":
            return int.from_bytes(self.take(self.u32()), "little", signed=True)
        if tag == b"f":
            return _F64_STRUCT.unpack(self.take(8))[0]
        if tag == b"s":
            return self.text()
        if tag == b"b":
            return bytes(self.take(self.u32()))
        if tag in (b"t", b"l", b"d"):
            if depth >= _MAX_DEPTH:
                raise ValueError("attributes nest too deep")
            count = self.u32()
            if count > len(self.data) - self.pos:   # each item takes a byte at least
                raise ValueError("a container holds more items than its block")
            if tag == b"d":
                return {self.value(depth + 1): self.value(depth + 1) for _ in range(count)}
            items = [self.value(depth + 1) for _ in range(count)]
            return tuple(items) if tag == b"t" else items
        raise ValueError("unknown attribute tag %r" % tag)

    def attributes(self):
        names_and_values = {}
        for _ in range(self.u32()):
            name = self.text()
            names_and_values[name] = self.value()
        if self.pos != len(self.data):
            raise ValueError("unexpected bytes after the attributes")
        return names_and_values


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

def _dump_error(index, message):
    where = "" if index is None else "trace #%d: " % index
    return "cannot dump snapshot: %s%s" % (where, message)


def _first_bad(values, is_ok):
    for i, value in enumerate(values):
        if not is_ok(value):
            return i, value
    return None, None


def _int64_column(values, what):
    """array('q') of *values*, or a TypeError/ValueError naming the trace."""
    try:
        return array(_I64, values)
    except (TypeError, OverflowError):
        pass

    def ok(v):
        try:
            array(_I64, (v,))
        except (TypeError, OverflowError):
            return False
        return True
    index, value = _first_bad(values, ok)
    try:
        array(_I64, (value,))
    except TypeError:
        raise TypeError(_dump_error(index, "%s must be an int, not %s"
                                    % (what, type(value).__name__))) from None
    except OverflowError:
        raise ValueError(_dump_error(index, "%s %r does not fit in a signed "
                                     "64-bit integer" % (what, value))) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _length(trace):
    try:
        return len(trace)
    except TypeError:
        return None


def _encode(traces, traceback_limit, attributes):
    """Validate and encode; return (header_fields, list_of_body_chunks)."""
    flags = 0
    chunks = []
    if attributes:
        block = _encode_attributes(attributes)
        chunks += [_U64_STRUCT.pack(len(block)), block]
        flags |= _FLAG_ATTRIBUTES
    if traceback_limit is None:
        flags |= _FLAG_LIMIT_IS_NONE
        limit = 0
    else:
        try:
            limit = array(_I64, (traceback_limit,))[0]
        except TypeError:
            raise TypeError("cannot dump snapshot: traceback_limit must be an "
                            "int or None, not %s"
                            % type(traceback_limit).__name__) from None
        except OverflowError:
            raise ValueError("cannot dump snapshot: traceback_limit %r does "
                             "not fit in 64 bits" % (traceback_limit,)) from None

    try:
        lengths = set(map(len, traces))
    except TypeError:
        lengths = None
    if lengths is not None and not (lengths <= {4} or lengths == {5}):
        lengths = None
    if lengths is None:
        expected = 5 if traces and _length(traces[0]) == 5 else 4
        for i, trace in enumerate(traces):
            if _length(trace) != expected:
                raise TypeError(_dump_error(
                    i, "expected a (domain, size, frames, total_nframe%s) "
                    "tuple, got %r" % (", count" if expected == 5 else "", trace)))
    weighted = bool(traces) and len(traces[0]) == 5
    if weighted:
        flags |= _FLAG_COUNTS

    domains = _int64_column(list(map(itemgetter(0), traces)), "domain")
    sizes = _int64_column(list(map(itemgetter(1), traces)), "size")

    nframes = list(map(itemgetter(3), traces))
    if _NFRAME_NONE in nframes:
        index = nframes.index(_NFRAME_NONE)
        raise ValueError(_dump_error(index, "total_nframe %r is out of range"
                                     % (_NFRAME_NONE,)))
    if None in nframes:
        nframes = [_NFRAME_NONE if v is None else v for v in nframes]
    nframes = _int64_column(nframes, "total_nframe")

    # Tracebacks: native snapshots share one tuple object per distinct stack,
    # so first collapse by identity (cheap, all in C), then by value.
    frames_col = list(map(itemgetter(2), traces))
    ids = list(map(id, frames_col))
    tb_by_value = {}
    index_by_id = {}
    for key, frames in dict(zip(ids, frames_col)).items():
        if type(frames) is not tuple:
            index = ids.index(key)
            raise TypeError(_dump_error(index, "frames must be a tuple of "
                                        "(filename, lineno) tuples, not %s"
                                        % type(frames).__name__))
        try:
            tb = tb_by_value.get(frames)
        except TypeError:
            raise TypeError(_dump_error(ids.index(key), "frames must be a "
                                        "tuple of (filename, lineno) tuples: "
                                        "%r" % (frames,))) from None
        if tb is None:
            tb = tb_by_value[frames] = len(tb_by_value)
        index_by_id[key] = tb
    trace_tb = array(_U32, map(index_by_id.__getitem__, ids))
    del ids, frames_col, index_by_id

    string_index = {}
    string_bytes = []
    string_lengths = array(_U32)
    frame_index = {}
    frame_filename = array(_U32)
    frame_lineno = array(_I64)
    tb_length = array(_U32)
    frame_refs = array(_U32)
    for frames in tb_by_value:
        refs = []
        for frame in frames:
            try:
                fi = frame_index.get(frame)
            except TypeError:   # unhashable: not a (str, int) tuple
                fi = None
            if fi is None:
                if (type(frame) is not tuple or len(frame) != 2
                        or not isinstance(frame[0], str)):
                    raise TypeError("cannot dump snapshot: a frame must be a "
                                    "(filename: str, lineno: int) tuple, "
                                    "got %r" % (frame,))
                filename, lineno = frame
                si = string_index.get(filename)
                if si is None:
                    data = filename.encode("utf-8", "surrogatepass")
                    si = string_index[filename] = len(string_index)
                    string_bytes.append(data)
                    string_lengths.append(len(data))
                try:
                    frame_lineno.append(lineno)
                except (TypeError, OverflowError):
                    raise TypeError("cannot dump snapshot: a frame must be a "
                                    "(filename: str, lineno: int) tuple with "
                                    "a 64-bit lineno, got %r"
                                    % (frame,)) from None
                fi = frame_index[frame] = len(frame_filename)
                frame_filename.append(si)
            refs.append(fi)
        tb_length.append(len(refs))
        frame_refs.extend(refs)

    for count, what in ((len(string_index), "filenames"),
                        (len(frame_filename), "frames"),
                        (len(tb_by_value), "tracebacks")):
        if count > _U32_MAX:  # pragma: no cover - needs > 4 G objects
            raise ValueError("cannot dump snapshot: too many distinct %s"
                             % what)

    chunks += [string_lengths, b"".join(string_bytes), frame_filename,
               frame_lineno, tb_length, frame_refs,
               domains, sizes, trace_tb, nframes]
    if weighted:
        chunks.append(_int64_column(list(map(itemgetter(4), traces)), "count"))
    if _SWAP:  # pragma: no cover - big-endian hosts
        for chunk in chunks:
            if isinstance(chunk, array):
                chunk.byteswap()
    body_size = sum(len(c) * (c.itemsize if isinstance(c, array) else 1)
                    for c in chunks)
    fields = (flags, limit, len(string_lengths), len(frame_filename),
              len(tb_length), len(frame_refs), len(traces), body_size)
    return fields, chunks


def write_snapshot(filename, traces, traceback_limit, attributes=None):
    """Write raw *traces*, *traceback_limit* and *attributes* to *filename*.

    *traces* is the raw trace list of a ``Snapshot``: tuples
    ``(domain, size, frames, total_nframe)`` where *frames* is a tuple of
    ``(filename, lineno)`` tuples, most recent first, and *total_nframe* is an
    int or None.  *attributes* maps the snapshot's other attribute names to
    plain data: None, bool, int, float, str, bytes, and tuples, lists and
    dicts of these (exactly these types, nested at most 100 deep); any other
    value raises TypeError naming the attribute.  Everything is validated
    before the file is opened, so a bad snapshot raises TypeError/ValueError
    without leaving a partial file.

    File layout, versions 1 to 3 (all integers little-endian)::

        offset size  field
        0      19    magic b"HEAPSCOPE-SNAPSHOT\\n"
        19     2     format version, u16: the lowest that holds the
                     content (1; 2 with trace counts; 3 with attributes)
        21     2     flags, u16: bit 0 = traceback_limit is None;
                     bit 1 = trace_count column (version 2 and later);
                     bit 2 = attributes block (version 3 and later);
                     other bits must be 0
        23     8     traceback_limit, i64 (0 when flag bit 0 is set)
        31     8     n_strings     u64   distinct filenames
        39     8     n_frames      u64   distinct (filename, lineno) pairs
        47     8     n_tracebacks  u64   distinct frame tuples
        55     8     n_frame_refs  u64   sum of all traceback lengths
        63     8     n_traces      u64
        71     8     body_size     u64   size of the uncompressed body
        79     4     body_crc32    u32   zlib.crc32 of the uncompressed body
        83     4     header_crc32  u32   zlib.crc32 of bytes [0, 83)
        87     ...   body, one zlib stream running to the end of the file

    The body is a sequence of columns (structure of arrays)::

        attributes_size u64                version 3, header flag bit 2:
        attributes      bytes              the attributes block (below)
        string_length   u32[n_strings]     UTF-8 byte length of each string
        string_data     bytes              the filenames, UTF-8 with
                                           "surrogatepass", concatenated
        frame_filename  u32[n_frames]      index into the string table
        frame_lineno    i64[n_frames]
        tb_length       u32[n_tracebacks]  frame count of each traceback
        tb_frames       u32[n_frame_refs]  frame table indices, tracebacks
                                           concatenated, most recent first
        trace_domain    i64[n_traces]
        trace_size      i64[n_traces]
        trace_traceback u32[n_traces]      index into the traceback table
        trace_nframe    i64[n_traces]      total_nframe; -2**63 means None
        trace_count     i64[n_traces]      version 2, header flag bit 1: the
                                           blocks each sampled trace stands
                                           for (its size is an estimate)

    The attributes block is a u32 count, then for each attribute its name
    (u32 byte length, UTF-8) and its value, a tag byte and what the tag
    says: ``N`` None, ``T`` True, ``F`` False; ``i`` an int (u32 byte
    length, two's complement little-endian); ``f`` a float (f64); ``s`` a
    str (u32 byte length, UTF-8 with "surrogatepass"); ``b`` bytes (u32
    length, the bytes); ``t``, ``l``, ``d`` a tuple, list or dict (u32 item
    count, then the items, a dict's as key, value, key, value...).

    Traces keep their order.  Identical filenames, frames and tracebacks are
    stored once; on load, traces with equal stacks share one frames tuple
    (like the native ``get_traces()``).  A reader rejects a version newer than
    it knows, so an incompatible layout change must bump FORMAT_VERSION.
    """
    fields, chunks = _encode(traces, traceback_limit, attributes)
    body_crc = 0
    for chunk in chunks:
        body_crc = zlib.crc32(chunk, body_crc)
    flags = fields[0]
    version = 3 if flags & _FLAG_ATTRIBUTES else 2 if flags & _FLAG_COUNTS else 1
    header = _HEADER.pack(MAGIC, version, *fields, body_crc)
    compressor = zlib.compressobj(_COMPRESS_LEVEL)
    fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_MODE)
    try:
        make_private(fd)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "wb") as fp:
        fp.write(header)
        fp.write(_HEADER_CRC.pack(zlib.crc32(header)))
        for chunk in chunks:
            fp.write(compressor.compress(chunk))
        fp.write(compressor.flush())


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

def read_snapshot(filename):
    """Read a file written by :func:`write_snapshot`.

    Return ``(traces, traceback_limit, attributes)``; *traces* is a list of
    raw trace tuples, *attributes* a dict (empty before version 3).  Raise :class:`SnapshotFileError` if the file is not a heapscope
    snapshot, is truncated or corrupted, or uses a newer format version.
    OSError (missing file, permissions...) propagates unchanged.
    """
    with open(filename, "rb") as fp:
        # The header first: a file that is not a snapshot (or an endless one,
        # like /dev/zero) is refused before its body is read.
        data = fp.read(_PREFIX_SIZE)
        if data.startswith(MAGIC) and len(data) == _PREFIX_SIZE:
            data += fp.read()
    name = _display_name(filename)
    try:
        return _decode(data, name)
    except SnapshotFileError:
        raise
    except (struct.error, IndexError, KeyError, ValueError, TypeError,
            OverflowError, zlib.error) as exc:
        # Every check below should make this unreachable; it is the safety
        # net that keeps internal exceptions from leaking out of load().
        raise SnapshotFileError(name, "file is corrupted (%s: %s)"
                                % (type(exc).__name__, exc)) from exc


def _header_checksum_ok(data):
    if len(data) < _PREFIX_SIZE:
        return False
    header_crc, = _HEADER_CRC.unpack_from(data, _HEADER.size)
    return zlib.crc32(memoryview(data)[:_HEADER.size]) == header_crc


def _decode(data, name):
    def fail(problem):
        return SnapshotFileError(name, problem)

    if not data:
        raise fail("the file is empty")
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise fail("file is truncated (inside the magic header)")
        hint = ""
        if data[:1] == b"\x80":
            hint = ("; it looks like a pickle (e.g. a stdlib tracemalloc "
                    "dump), which heapscope refuses to load because "
                    "unpickling can run arbitrary code")
        raise fail("not a heapscope snapshot file (bad magic header)" + hint)
    if len(data) < len(MAGIC) + _VERSION.size:
        raise fail("file is truncated (inside the header)")
    version, = _VERSION.unpack_from(data, len(MAGIC))
    if version > FORMAT_VERSION:
        # A newer header may have another layout, so its checksum cannot
        # tell a genuine newer file from a damaged version field: say both
        # unless the checksum vouches for it.
        if _header_checksum_ok(data):
            raise fail("snapshot format version %d is newer than this heapscope "
                       "supports (version %d); upgrade heapscope to read it"
                       % (version, FORMAT_VERSION))
        raise fail("snapshot format version %d is newer than this heapscope "
                   "supports (version %d), or the file is corrupted; "
                   "upgrade heapscope to read it if it is newer"
                   % (version, FORMAT_VERSION))
    if version < 1:
        raise fail("file is corrupted (invalid format version %d)" % version)
    if len(data) < _PREFIX_SIZE:
        raise fail("file is truncated (inside the header)")
    (_, _, flags, limit, n_strings, n_frames, n_tracebacks, n_refs,
     n_traces, body_size, body_crc) = _HEADER.unpack_from(data)
    header_crc, = _HEADER_CRC.unpack_from(data, _HEADER.size)
    if zlib.crc32(memoryview(data)[:_HEADER.size]) != header_crc:
        raise fail("file is corrupted (header checksum mismatch)")
    if flags & ~_KNOWN_FLAGS:
        raise fail("file is corrupted (unknown header flags 0x%x)" % flags)
    if (flags & _FLAG_COUNTS) and version < 2:
        raise fail("file is corrupted (count column flagged in a version 1 file)")
    if (flags & _FLAG_ATTRIBUTES) and version < 3:
        raise fail("file is corrupted (attributes flagged in a version %d file)" % version)
    fixed = (4 * n_strings + 12 * n_frames + 4 * n_tracebacks + 4 * n_refs
             + (36 if flags & _FLAG_COUNTS else 28) * n_traces
             + (8 if flags & _FLAG_ATTRIBUTES else 0))
    if fixed > body_size or body_size > sys.maxsize:
        raise fail("file is corrupted (table sizes do not match the body "
                   "size)")
    string_data_size = body_size - fixed

    decompressor = zlib.decompressobj()
    try:
        body = decompressor.decompress(memoryview(data)[_PREFIX_SIZE:],
                                       body_size + 1)
    except zlib.error as exc:
        raise fail("file is corrupted (bad compressed data: %s)" % exc) \
            from None
    if len(body) > body_size or decompressor.unconsumed_tail:
        raise fail("file is corrupted (body is larger than declared)")
    if not decompressor.eof:
        raise fail("file is truncated (compressed body ends early)")
    if len(body) != body_size:
        raise fail("file is corrupted (body is smaller than declared)")
    if decompressor.unused_data:
        raise fail("file is corrupted (unexpected data after the body)")
    if zlib.crc32(body) != body_crc:
        raise fail("file is corrupted (body checksum mismatch)")

    view = memoryview(body)
    pos = 0
    attributes = {}
    if flags & _FLAG_ATTRIBUTES:
        attributes_size, = _U64_STRUCT.unpack_from(body)
        if attributes_size > string_data_size:
            raise fail("file is corrupted (attributes larger than the body)")
        string_data_size -= attributes_size
        pos = 8 + attributes_size
        try:
            attributes = _AttributeDecoder(view[8:pos]).attributes()
        except (ValueError, TypeError) as exc:   # TypeError: an unhashable dict key
            raise fail("file is corrupted (bad attributes: %s)" % exc) from None

    def column(typecode, count):
        nonlocal pos
        arr = array(typecode)
        end = pos + count * arr.itemsize
        arr.frombytes(view[pos:end])
        pos = end
        if _SWAP:  # pragma: no cover - big-endian hosts
            arr.byteswap()
        return arr

    string_lengths = column(_U32, n_strings)
    if sum(string_lengths) != string_data_size:
        raise fail("file is corrupted (string table size mismatch)")
    strings = []
    append = strings.append
    offset = pos
    try:
        for length in string_lengths:
            append(str(view[offset:offset + length], "utf-8",
                       "surrogatepass"))
            offset += length
    except UnicodeDecodeError as exc:
        raise fail("file is corrupted (invalid UTF-8 in the string table: "
                   "%s)" % exc) from None
    pos = offset

    frame_filename = column(_U32, n_frames)
    frame_lineno = column(_I64, n_frames)
    tb_length = column(_U32, n_tracebacks)
    frame_refs = column(_U32, n_refs)
    domains = column(_I64, n_traces)
    sizes = column(_I64, n_traces)
    trace_tb = column(_U32, n_traces)
    nframes = column(_I64, n_traces)
    counts = column(_I64, n_traces) if flags & _FLAG_COUNTS else None

    if n_frames and max(frame_filename) >= n_strings:
        raise fail("file is corrupted (frame refers to a missing filename)")
    if sum(tb_length) != n_refs:
        raise fail("file is corrupted (traceback table size mismatch)")
    if n_refs and max(frame_refs) >= n_frames:
        raise fail("file is corrupted (traceback refers to a missing frame)")
    if n_traces and max(trace_tb) >= n_tracebacks:
        raise fail("file is corrupted (trace refers to a missing traceback)")

    frames = list(zip(map(strings.__getitem__, frame_filename), frame_lineno))
    tracebacks = []
    tb_append = tracebacks.append
    get_frame = frames.__getitem__
    start = 0
    for length in tb_length:
        end = start + length
        tb_append(tuple(map(get_frame, frame_refs[start:end])))
        start = end

    nframe_values = nframes.tolist()
    if _NFRAME_NONE in nframes:
        nframe_values = [None if v == _NFRAME_NONE else v
                         for v in nframe_values]
    columns = [domains.tolist(), sizes.tolist(),
               map(tracebacks.__getitem__, trace_tb), nframe_values]
    if counts is not None:
        columns.append(counts.tolist())
    traces = list(zip(*columns))
    traceback_limit = None if flags & _FLAG_LIMIT_IS_NONE else limit
    return traces, traceback_limit, attributes
