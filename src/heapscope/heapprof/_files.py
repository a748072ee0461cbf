"""The two files heapscope.heapprof adds beside its capture: the metadata
(``.hpm``) and the digest (``.hpc``). docs/heapprof.md specifies both.

- ``.hpm``: one UTF-8 JSON object, written at start (so a killed run still
  has it) and again at stop with the stop time, each time through a
  temporary file and a rename, so it is never half-written.
- ``.hpc``: a 32-byte header (magic, version, CRC32 and length of the
  payload) and a zlib-compressed JSON payload. Also written through a
  rename.

Readers refuse what they cannot trust with :class:`HeapprofFileError` (a
ValueError) and say why: not this kind of file, a newer version, or damage.
"""

import json
import os
import struct
import zlib

from heapscope._private_files import PRIVATE_MODE

HPM_FORMAT = "heapscope.heapprof metadata"
HPM_VERSION = 1
HPC_MAGIC = b"HEAPSCOPE-DIGEST"  # 16 bytes
HPC_VERSION = 1
_HPC_HEADER = struct.Struct("<16sIIQ")  # magic, version, CRC32 of the payload, payload length


class HeapprofFileError(ValueError):
    """A heapprof file (.hpm, .hpd or .hpc) that is not one, is damaged, or
    was written by a newer heapscope."""


class DamagedDigest(HeapprofFileError):
    """A digest of ours that cannot be used (cut short, checksum mismatch,
    unreadable payload): read() builds it again."""


def write_atomically(path, data):
    """Writes *data* (bytes) to *path* through a temporary file in the same
    directory and a rename: readers see the old file or the new one, never
    a part. The file is private (mode 0600): it names the program's code."""
    directory = os.path.dirname(os.path.abspath(path))
    for _ in range(100):
        temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_MODE)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"could not create a temporary file beside {path}")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


# -- .hpm ----------------------------------------------------------------------------------------------------------

def write_metadata(path, fields):
    document = {"format": HPM_FORMAT, "version": HPM_VERSION, **fields}
    write_atomically(path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def read_metadata(path):
    """The .hpm's fields (a dict); OSError if it cannot be read."""
    with open(path, "rb") as source:
        data = source.read(1 << 20)
    if not data:
        raise HeapprofFileError(f"{path}: not a heapprof metadata file (empty file)")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        if not data.lstrip().startswith(b"{"):
            raise HeapprofFileError(f"{path}: not a heapprof metadata file") from None
        raise HeapprofFileError(f"{path}: damaged heapprof metadata file (not a whole JSON document)") from None
    if not isinstance(document, dict) or document.get("format") != HPM_FORMAT:
        raise HeapprofFileError(f"{path}: not a heapprof metadata file")
    version = document.get("version")
    if not isinstance(version, int) or version < 1:
        raise HeapprofFileError(f"{path}: damaged heapprof metadata file (version {version!r})")
    if version > HPM_VERSION:
        raise HeapprofFileError(f"{path}: heapprof metadata version {version} is newer than this heapscope "
                                f"(reads up to {HPM_VERSION})")
    try:
        rates = {int(bound): float(probability) for bound, probability in document["sampling_rate"]}
        float(document["start_time"])
    except (KeyError, TypeError, ValueError):
        raise HeapprofFileError(f"{path}: damaged heapprof metadata file (sampling_rate or start_time "
                                f"missing or malformed)") from None
    document["sampling_rate"] = rates
    return document


# -- .hpc ----------------------------------------------------------------------------------------------------------

def write_digest(path, digest):
    payload = zlib.compress(json.dumps(digest, separators=(",", ":")).encode("utf-8"), 6)
    header = _HPC_HEADER.pack(HPC_MAGIC, HPC_VERSION, zlib.crc32(payload), len(payload))
    write_atomically(path, header + payload)


def read_digest(path):
    """The digest (a dict). Raises OSError if it cannot be read,
    HeapprofFileError for a file that is not a digest or is newer, and
    DamagedDigest for one of ours that is damaged."""
    with open(path, "rb") as source:
        data = source.read()
    if not data:  # nothing to lose: built again
        raise DamagedDigest(f"{path}: damaged digest (empty file)")
    head = data[:_HPC_HEADER.size]
    if not HPC_MAGIC.startswith(head[:len(HPC_MAGIC)]):
        raise HeapprofFileError(f"{path}: not a heapscope digest")
    if len(head) < _HPC_HEADER.size:
        raise DamagedDigest(f"{path}: damaged digest: the header is cut short ({len(head)} of "
                            f"{_HPC_HEADER.size} bytes)")
    _magic, version, crc, length = _HPC_HEADER.unpack(head)
    if version == 0:
        raise DamagedDigest(f"{path}: damaged digest (version 0)")
    if version > HPC_VERSION:
        raise HeapprofFileError(f"{path}: digest version {version} is newer than this heapscope "
                                f"(reads up to {HPC_VERSION})")
    payload = data[_HPC_HEADER.size:]
    if len(payload) != length:
        raise DamagedDigest(f"{path}: damaged digest: {len(payload)} payload bytes where the header says {length}")
    if zlib.crc32(payload) != crc:
        raise DamagedDigest(f"{path}: damaged digest: checksum mismatch")
    try:
        digest = json.loads(zlib.decompress(payload).decode("utf-8"))
        _check_digest(digest)
    except (zlib.error, UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError) as error:
        raise DamagedDigest(f"{path}: damaged digest: unreadable payload ({error})") from None
    return digest


def _check_digest(digest):
    """Raises (ValueError, TypeError, KeyError) unless every field the reader uses is there and well typed."""
    if not isinstance(digest, dict):
        raise ValueError("not an object")
    for key in ("time_interval", "precision", "initial_time"):
        float(digest[key])
    if int(digest["interval_ms"]) < 1:
        raise ValueError("interval_ms < 1")
    for key in ("size", "mtime_ns"):
        int(digest["source"][key])
    traces = digest["traces"]
    for trace in traces:
        for function, filename, lineno in trace:
            if not (isinstance(function, str) and isinstance(filename, str) and isinstance(lineno, int)):
                raise ValueError("malformed frame")
    for moment_ms, record_ms, usage, other, total in digest["snapshots"]:
        int(moment_ms), int(record_ms), int(other), int(total)
        for index, size in usage:
            if not 1 <= int(index) <= len(traces):
                raise ValueError(f"trace index {index} out of range")
            int(size)
