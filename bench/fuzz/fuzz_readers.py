"""Fuzzing heapscope's readers with atheris (libFuzzer for Python).

Targets, each a reader of bytes that may come from anywhere:

- ``capture``: a capture file (the C++ chunk reader, journal, record decoder
  and the analyses: metadata, peak, leaks, stats) through FileReader;
- ``live``: a live stream fed piecemeal (ChunkParser, CaptureStream);
- ``snapshot``: a heapscope.tracemalloc snapshot file;
- ``digest``: a heapprof digest (.hpc).

Random bytes almost never pass a checksum, so each input's first byte also
chooses a mode: the bytes as they are, or the bytes wrapped into a
well-formed container with correct checksums (a stored chunk after a valid
file header; a snapshot header over the bytes as its body; a digest of the
bytes compressed), which takes the fuzzer past the checksums to the
decoders behind them. Readers may refuse an input only with their
documented errors (ValueError and its subclasses; OSError for files): any
other exception, a crash or a hang is a finding.

    python bench/fuzz/fuzz_readers.py TARGET [libFuzzer options] [CORPUS_DIR...]
    python bench/fuzz/fuzz_readers.py --all SECONDS     # every target, SECONDS each, seeds from bench/fuzz/corpus

The native code is not instrumented for coverage (it is built with gcc), so
for the capture and live targets the search is guided only by the Python
side and by the container's structure the wrapping mode provides.
"""

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ("capture", "live", "snapshot", "digest")


# -- CRC32C (the capture format's checksum), table-driven ------------------------------------------------------------

def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def capture_header(version, file_format, flags):
    head = b"HEAPSCOPE-CAPTURE".ljust(24, b"\0") + struct.pack("<IBBHI", version, file_format, flags, 0, 0)
    return head + struct.pack("<I", crc32c(head))


def chunk(chunk_type, sequence, payload):
    head = b"HSCK" + struct.pack("<BBHIIII", chunk_type, 0, 0, sequence, len(payload), len(payload),
                                 crc32c(payload))
    return head + struct.pack("<I", crc32c(head)) + payload


def wrapped_capture(data):
    """A valid container around *data*: header, the bytes as a stored records chunk, maybe an end chunk."""
    control = data[0] if data else 0
    body = capture_header(1 + (control & 1), (control >> 1) & 1, (control >> 2) & 3) + chunk(1, 0, data[1:])
    return body + chunk(2, 1, b"") if control & 16 else body


# -- targets ----------------------------------------------------------------------------------------------------------

def fuzz_capture(data, directory):
    from heapscope import FileReader

    # NotImplementedError: the stack of a record whose allocator frees
    # (memray's rule). The format lets any allocator name any record (the
    # writer never does that), so a made-up file may have such rows.

    raw = data[1:] if data and data[0] & 1 else wrapped_capture(data[1:])
    path = os.path.join(directory, "input.hscap")
    with open(path, "wb") as out:
        out.write(raw)
    try:
        reader = FileReader(path)
    except (ValueError, OSError):
        return
    try:
        metadata = reader.metadata
        metadata.complete, metadata.damage, metadata.peak_memory, metadata.exit_signal
        for record in reader.get_high_watermark_allocation_records():
            record.stack_trace()
        for record in reader.get_leaked_allocation_records():
            record.hybrid_stack_trace()
        reader.get_memory_snapshots()
        if metadata.file_format.name == "ALL_ALLOCATIONS":
            reader.stats()
            for record in reader.get_temporary_allocation_records():
                record.stack_trace()
    except (ValueError, OSError, NotImplementedError):
        pass


def fuzz_live(data, directory):
    from heapscope import _heapscope

    raw = data[1:] if data and data[0] & 1 else wrapped_capture(data[1:])
    stream = _heapscope.CaptureStream()
    step = 1 + (data[0] >> 4 if data else 0)
    for at in range(0, len(raw), step):
        stream.feed(raw[at:at + step])
        if stream.damage is not None:
            break
    stream.totals, stream.memory, stream.ended
    dict(stream.metadata)
    for row in stream.live(merge_threads=True):
        try:
            stream.python_stack(row.python_node)
        except ValueError:
            pass


def fuzz_snapshot(data, directory):
    from heapscope import _snapshot_file as snapshot_file

    if data and data[0] & 1:
        raw = data[1:]
    else:
        # A header whose counts come from the input, over the rest as the body, checksums right.
        version, flags, limit, *counts = struct.unpack("<HHq5Q", data[1:53].ljust(52, b"\0"))
        body = data[53:]
        header = snapshot_file._HEADER.pack(snapshot_file.MAGIC, 1 + version % 2, flags & 3, limit,
                                            *[c % 4096 for c in counts], len(body), zlib.crc32(body))
        raw = header + snapshot_file._HEADER_CRC.pack(zlib.crc32(header)) + zlib.compress(body)
    try:
        snapshot_file._decode(raw, "input")
    except snapshot_file.SnapshotFileError:
        pass


def fuzz_digest(data, directory):
    from heapscope.heapprof import _files

    if data and data[0] & 1:
        raw = data[1:]
    else:
        payload = zlib.compress(data[1:])
        raw = _files._HPC_HEADER.pack(_files.HPC_MAGIC, 1, zlib.crc32(payload), len(payload)) + payload
    path = os.path.join(directory, "input.hpc")
    with open(path, "wb") as out:
        out.write(raw)
    try:
        _files.read_digest(path)
    except _files.HeapprofFileError:
        pass


def fuzz_one(target, argv):
    import atheris

    with atheris.instrument_imports():
        import heapscope  # noqa: F401  (Python readers: instrumented for coverage)
        import heapscope.heapprof._files  # noqa: F401
        import heapscope._snapshot_file  # noqa: F401
    function = globals()[f"fuzz_{target}"]
    # Each input is written to a file: in memory (/dev/shm) this runs 2.5x faster than on disk.
    memory = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    directory = tempfile.mkdtemp(prefix=f"heapscope-fuzz-{target}-", dir=memory)

    def test_one_input(data):
        function(data, directory)

    atheris.Setup([sys.argv[0], *argv], test_one_input)
    atheris.Fuzz()


def fuzz_all(seconds):
    """Every target for *seconds*, from the seeds in bench/fuzz/corpus (new
    inputs go to a temporary copy); the number of targets that failed."""
    failed = 0
    for target in TARGETS:
        seeds = os.path.join(HERE, "corpus", target)
        work = tempfile.mkdtemp(prefix=f"heapscope-fuzz-corpus-{target}-")
        # -keep_seed=1: the live target runs native code only, which gives no
        # coverage, so libFuzzer would drop every seed and mutate one byte.
        try:
            result = subprocess.run([sys.executable, os.path.abspath(__file__), target,
                                     f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048", "-keep_seed=1",
                                     "-print_final_stats=1", work, seeds], capture_output=True, text=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        runs = next((line.split()[-1] for line in result.stderr.splitlines() if "stat::number_of_executed_units" in line),
                    "?")
        status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        print(f"fuzz {target}: {runs} inputs in {seconds} s: {status}", flush=True)
        if result.returncode != 0:
            failed += 1
            print(result.stderr[-6000:], file=sys.stderr)
    return failed


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--all":
        seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
        return 1 if fuzz_all(seconds) else 0
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        print(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options] [CORPUS...] | --all SECONDS",
              file=sys.stderr)
        return 2
    fuzz_one(sys.argv[1], sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
