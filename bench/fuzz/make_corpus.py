"""Writes the fuzzers' seed inputs into bench/fuzz/corpus/<target>/ from
small real files: captures (all allocations, aggregated, one killed with its
journal), a live stream, a snapshot and a heapprof digest. Each seed starts
with the mode byte fuzz_readers.py reads: 1 for the bytes as they are, 0 for
bytes to wrap (a chunk payload, a snapshot body, a digest's JSON).

    python bench/fuzz/make_corpus.py     (needs heapscope installed)
"""

import glob
import json
import os
import struct
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzz_readers import HERE, capture_header, chunk  # noqa: E402


def stored_chunks(raw):
    """(type, payload) of each chunk of an uncompressed capture."""
    at, out = 40, []
    while at + 28 <= len(raw):
        kind, _codec, _reserved, _sequence, length, stored, _crc, _hcrc = struct.unpack_from("<BBHIIIII", raw, at + 4)
        out.append((kind, raw[at + 28:at + 28 + stored]))
        at += 28 + stored
    return out


def journal_slot(sequence, payload):
    head = bytearray(64)
    head[0:4] = b"HSJL"
    struct.pack_into("<II", head, 8, sequence, len(payload))
    from fuzz_readers import crc32c

    struct.pack_into("<I", head, 24, crc32c(bytes(head[:24])))
    struct.pack_into("<Q", head, 32, len(payload))
    return bytes(head) + payload


def main():
    import heapscope
    import heapscope.heapprof as heapprof
    import heapscope.tracemalloc as tracemalloc

    corpus = os.path.join(HERE, "corpus")
    seeds = {target: [] for target in ("capture", "live", "snapshot", "digest")}
    with tempfile.TemporaryDirectory() as work:
        raw_paths = []
        for name, fmt in (("all", heapscope.FileFormat.ALL_ALLOCATIONS),
                          ("aggregated", heapscope.FileFormat.AGGREGATED_ALLOCATIONS)):
            path = os.path.join(work, f"{name}.hscap")
            with heapscope.Tracker(destination=heapscope.FileDestination(path, compress_on_exit=False),
                                   file_format=fmt, trace_python_allocators=True):
                kept = [str(i) * 3 for i in range(40)]
                del kept[::2]
            raw_paths.append(path)
        for path in raw_paths:
            with open(path, "rb") as f:
                raw = f.read()
            seeds["capture"].append(b"\x01" + raw)
            seeds["live"].append(b"\x01" + raw)
            for kind, payload in stored_chunks(raw):
                if kind == 1 and payload:
                    seeds["capture"].append(b"\x00" + bytes([2 if "aggregated" in path else 0]) + payload)
        # A killed capture's shape: chunk 0, a gap to 4096, the journal slots for chunks 1 and 2.
        with open(raw_paths[0], "rb") as f:
            raw = f.read()
        payloads = [payload for kind, payload in stored_chunks(raw) if kind == 1]
        killed = capture_header(1, 0, 2) + chunk(1, 0, payloads[0])
        killed += b"\0" * (-len(killed) % 4096)
        for sequence, payload in enumerate(payloads[1:3] or [b""], 1):
            killed += journal_slot(sequence, payload)
            killed += b"\0" * (-len(killed) % 4096)
        seeds["capture"].append(b"\x01" + killed)

        tracemalloc.start(5)
        kept = [bytearray(i * 10) for i in range(30)]
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        snapshot_path = os.path.join(work, "snapshot.bin")
        snapshot.dump(snapshot_path)
        with open(snapshot_path, "rb") as f:
            raw = f.read()
        seeds["snapshot"].append(b"\x01" + raw)
        from heapscope import _snapshot_file as snapshot_file

        header = snapshot_file._HEADER.unpack_from(raw)
        body = zlib.decompress(raw[snapshot_file._PREFIX_SIZE:])
        seeds["snapshot"].append(b"\x00" + struct.pack("<HHq5Q", header[1] - 1, header[2], header[3], *header[4:9])
                                 + body)

        base = os.path.join(work, "run")
        heapprof.start(base)
        kept = [bytearray(1000) for _ in range(50)]
        heapprof.stop()
        heapprof.read(base, timeInterval=0.05, precision=0)
        with open(base + ".hpc", "rb") as f:
            raw = f.read()
        seeds["digest"].append(b"\x01" + raw)
        from heapscope.heapprof import _files

        digest = _files.read_digest(base + ".hpc")
        seeds["digest"].append(b"\x00" + json.dumps(digest, separators=(",", ":")).encode())

    for target, inputs in seeds.items():
        directory = os.path.join(corpus, target)
        os.makedirs(directory, exist_ok=True)
        for old in glob.glob(os.path.join(directory, "seed-*")):
            os.unlink(old)
        for number, data in enumerate(inputs):
            with open(os.path.join(directory, f"seed-{number}"), "wb") as out:
                out.write(data)
        print(f"{target}: {len(inputs)} seeds, {sum(map(len, inputs))} bytes")


if __name__ == "__main__":
    main()
