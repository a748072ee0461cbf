"""Several captures as one report: one root frame per process.

Every command that reads captures (``flamegraph``, ``table``, ``summary``,
``transform``, ``merge``) goes through :func:`profile_from_captures`: each
capture becomes a Profile (``adapters.profile_from_capture``), then
:func:`merge_profiles` puts each one's samples under a frame naming its
process, ``[process] pid 4242: python app.py (host, worker tcp://...)``
(file ``<process>``, line 0). The files are only read.

Peaks are per process: each capture's high-water mark is found in that
capture alone, and the merged page holds the sum of the processes' peaks,
each at its own moment (the processes did not necessarily peak together),
as its header says. The timeline holds each process's heap over wall-clock
time, and their sum.

Children a capture's process started (``heapscope run --follow-fork`` /
``--follow-exec``, multiprocessing's children) write ``<capture>.<pid>``
beside it, theirs ``<capture>.<pid>.<pid>``: :func:`family_of` finds them,
so a report of the parent's file covers the whole tree.

``heapscope merge A B -o FILE`` (:func:`write_merged`) writes one file
holding the captures as they were (an uncompressed zip with an index), which
every command reads like a capture.
"""

import os
import re
import shutil

from heapscope.reports.model import Frame, Profile, Sample, Timeline

__all__ = ["PROCESS_FILENAME", "process_frame", "process_name", "family_of", "expand_captures", "merge_profiles",
           "profile_from_readers", "profile_from_captures", "write_merged", "merged_members", "CaptureSet"]

PROCESS_FILENAME = "<process>"


def process_name(metadata, extra=None):
    """How a merged report names a capture's process, from its Metadata and
    its raw start metadata *extra* (a dict: ``host``, ``parent_pid``,
    ``dask_worker_name``, ``dask_worker_address``): ``worker NAME at
    ADDRESS (pid 4242, host)`` for a Dask worker, otherwise ``pid 4242:
    python app.py (host, child of 4240)``."""
    extra = extra or {}
    host = str(extra.get("host") or "")
    worker = extra.get("dask_worker_name")
    address = extra.get("dask_worker_address")
    if worker or address:
        where = f"worker {worker} at {address}" if worker and address else f"worker {worker or address}"
        return f"{where} (pid {metadata.pid}{', ' + host if host else ''})"
    command = " ".join(str(metadata.command_line).split()) or "(unknown command)"
    if len(command) > 120:
        command = command[:117] + "..."
    details = [host] if host else []
    if extra.get("parent_pid"):
        details.append(f"child of {extra['parent_pid']}")
    suffix = f" ({', '.join(details)})" if details else ""
    return f"pid {metadata.pid}: {command}{suffix}"


def process_frame(reader):
    """The root frame of a capture's process in a merged report."""
    return Frame(f"[process] {process_name(reader.metadata, reader.start_metadata)}", PROCESS_FILENAME, 0)


_CHILD_SUFFIX = re.compile(r"(\.\d+)+")


def family_of(path):
    """*path* and the captures its process's children wrote beside it
    (``<path>.<pid>``, their children ``<path>.<pid>.<pid>``), parents
    first, then by name."""
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return [path]
    children = [name for name in names
                if name.startswith(base + ".") and _CHILD_SUFFIX.fullmatch(name[len(base):])]
    children.sort(key=lambda name: (name.count("."), [int(part) for part in name[len(base) + 1:].split(".")]))
    return [path] + [os.path.join(os.path.dirname(path), name) for name in children]


def expand_captures(paths, children=True):
    """The captures a command reads for *paths*: each path, then (with
    *children*) the captures of its process's children, each file once."""
    seen = set()
    result = []
    for path in paths:
        for member in (family_of(path) if children else [path]):
            key = os.path.realpath(member)
            if key not in seen:
                seen.add(key)
                result.append(member)
    return result


def merge_profiles(parts, title=None):
    """One Profile from ``[(process frame, Profile), ...]``: every stack under
    its process's frame, threads told apart by process, peaks summed (each
    process at its own), and the timeline of every process over wall-clock
    time (``Profile.timeline`` is their sum; ``Timeline.processes`` each
    one). A single part is returned as it is."""
    if len(parts) == 1:
        return parts[0][1]
    samples = []
    threads = {}
    domains = {}
    header = [f"{len(parts)} processes, merged: each process's stacks under a [process] frame",
              "peaks are computed per process and summed: each process at its own high-water mark, "
              "which the processes need not have reached at the same moment"]
    for index, (frame, profile) in enumerate(parts, 1):
        remap = {}
        for tid, name in profile.threads.items():
            remap[tid] = index << 32 | tid
            threads[remap[tid]] = f"{frame.function[len('[process] '):]}: {name}"
        for sample in profile.samples:
            thread = remap.get(sample.thread, index << 32 | sample.thread if sample.thread else 0)
            samples.append(Sample((frame,) + tuple(sample.stack), sample.bytes, sample.blocks, thread,
                                  sample.allocator, sample.domain, sample.before_bytes, sample.before_blocks))
        domains.update(profile.domains)
        header.append(f"{frame.function}: {_format_bytes(profile.total_bytes)} in {profile.source}")
    first = parts[0][1]
    return Profile(title=title or first.title + f" (the sum over {len(parts)} processes, each at its own)",
                   samples=samples, source=", ".join(profile.source for _, profile in parts), header=header,
                   threads=threads, domains=domains, sampled=any(p.sampled for _, p in parts),
                   native=any(p.native for _, p in parts), timeline=_merged_timeline(parts))


def _format_bytes(size):
    from heapscope.reports.text import format_bytes

    return format_bytes(size)


def _merged_timeline(parts):
    """Each process's timeline moved to wall-clock time (from the earliest
    start), and their sum at every moment any of them was sampled (each
    process holding its last value; none before its start or after its end)."""
    lines = [(frame, profile.timeline, profile.start_time) for frame, profile in parts
             if profile.timeline is not None and len(profile.timeline)]
    if not lines:
        return None
    starts = [start for _, _, start in lines if start is not None]
    origin = min(starts) if starts else 0.0
    processes = []
    for frame, line, start in lines:
        offset = (start - origin) if start is not None else 0.0
        processes.append((frame.function[len("[process] "):],
                          Timeline([t + offset for t in line.times], list(line.rss), list(line.heap))))
    moments = sorted({t for _, line in processes for t in line.times})
    total = Timeline()
    positions = [0] * len(processes)
    for moment in moments:
        rss = heap = 0
        for k, (_, line) in enumerate(processes):
            while positions[k] < len(line.times) and line.times[positions[k]] <= moment:
                positions[k] += 1
            if positions[k] and moment <= line.times[-1]:
                rss += line.rss[positions[k] - 1]
                heap += line.heap[positions[k] - 1]
        total.times.append(moment)
        total.rss.append(rss)
        total.heap.append(heap)
    total.processes = processes
    return total


def profile_from_readers(readers, which="peak", *, threshold=1, native=None, merge_threads=True, temporal=False,
                         sources=None):
    """The report-model Profile of one open capture (FileReader) or several
    (merged, each under its process's frame). *native*: hybrid stacks
    (None: where a capture has native traces). *temporal*: a single
    capture's profile carries its heap over time
    (temporal_profile_from_capture); merged ones carry each process's
    timeline. *sources*: how to name each capture (default: its path)."""
    from heapscope.reports import adapters

    parts = []
    for index, reader in enumerate(readers):
        hybrid = reader.metadata.has_native_traces if native is None else bool(native)
        if temporal and len(readers) == 1:
            profile = adapters.temporal_profile_from_capture(reader, native=hybrid, merge_threads=merge_threads)
        else:
            profile = adapters.profile_from_capture(reader, which, threshold=threshold, native=hybrid,
                                                    merge_threads=merge_threads)
        if sources is not None:
            profile.source = sources[index]
        parts.append((process_frame(reader), profile))
    return merge_profiles(parts)


def profile_from_captures(paths, which="peak", **options):
    """profile_from_readers over capture files, with their children's
    captures (family_of) and the members of merged files (write_merged).
    Raises CaptureFileError for a file that is not a capture."""
    with CaptureSet(paths) as captures:
        return profile_from_readers(captures.readers, which, sources=captures.sources, **options)


# A merged file (heapscope merge -o FILE): an uncompressed zip of the
# captures as they were, and this index naming them in order.
MERGED_INDEX = "heapscope-merged.json"


def write_merged(paths, output):
    """Writes the captures *paths* (each a capture or a merged file) into one
    merged file *output*, which every command reads like a capture. The
    captures are copied whole (the zip is not compressed: captures are)."""
    import json
    import zipfile

    members = []
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with CaptureSet(paths, children=False) as captures:
            for reader, source in zip(captures.readers, captures.sources):
                name = f"{len(members):03d}-{os.path.basename(source).replace('/', '_')}"
                archive.write(reader.path, name)
                members.append({"file": name, "source": source, "pid": reader.metadata.pid})
        archive.writestr(MERGED_INDEX, json.dumps({"version": 1, "captures": members}, indent=1))
    return output


def merged_members(path):
    """The index of a merged file ([{"file", "source", "pid"}, ...]), or None
    for any other file."""
    import json
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            if MERGED_INDEX not in archive.namelist():
                return None
            index = json.loads(archive.read(MERGED_INDEX))
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    captures = index.get("captures") if isinstance(index, dict) else None
    if not isinstance(captures, list) or not all(isinstance(c, dict) and isinstance(c.get("file"), str)
                                                 for c in captures):
        return None
    return captures


class CaptureSet:
    """Open readers on the captures a command reads for *paths*: each path,
    its children's captures (with *children*), and the members of merged
    files (unpacked into a private temporary directory, removed on close).
    ``readers`` and ``sources`` (what to call each) are parallel lists.
    Raises CaptureFileError or OSError (after closing what it opened)."""

    def __init__(self, paths, children=True, open_reader=None):
        from heapscope.reader import FileReader

        open_reader = open_reader or FileReader
        self.readers = []
        self.sources = []
        self._directories = []
        try:
            for path in expand_captures(paths, children):
                members = merged_members(path)
                if members is None:
                    self.readers.append(open_reader(path))
                    self.sources.append(os.fspath(path))
                    continue
                for file_path, source in self._unpack(path, members):
                    self.readers.append(open_reader(file_path))
                    self.sources.append(source)
        except BaseException:
            self.close()
            raise

    def _unpack(self, path, members):
        import tempfile
        import zipfile

        directory = tempfile.mkdtemp(prefix="heapscope-merged-")  # private: mode 0700
        self._directories.append(directory)
        unpacked = []
        with zipfile.ZipFile(path) as archive:
            for member in members:
                name = os.path.basename(member["file"])
                target = os.path.join(directory, name)
                with archive.open(member["file"]) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                unpacked.append((target, f"{os.fspath(path)}[{member.get('source') or name}]"))
        return unpacked

    def close(self):
        for reader in self.readers:
            reader.close()
        for directory in self._directories:
            shutil.rmtree(directory, ignore_errors=True)
        self._directories = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False
