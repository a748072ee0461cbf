"""heapscope.Tracker: memray's arguments, rules and errors, all raised before
tracking starts. Anything that tracks runs in a subprocess."""

import importlib.util
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

import heapscope
from heapscope import FileDestination, FileFormat, SocketDestination, Tracker
from heapscope.tracker import LIVE_HELLO
from capture_helpers import python_env, run_script, write_script


def test_exported_names_and_memray_values():
    assert heapscope.Tracker is Tracker
    assert [(f.name, int(f)) for f in FileFormat] == [("ALL_ALLOCATIONS", 0), ("AGGREGATED_ALLOCATIONS", 1)]
    assert FileDestination("x") == FileDestination(path="x", overwrite=False, compress_on_exit=True)
    assert SocketDestination(5000) == SocketDestination(server_port=5000, address="127.0.0.1")
    with pytest.raises(Exception):
        FileDestination("x").path = "y"  # frozen, as memray's


@pytest.mark.parametrize("kwargs, error, message", [
    ({}, TypeError, "Exactly one of 'file_name' or 'destination'"),
    ({"file_name": "a", "destination": FileDestination("b")}, TypeError, "Exactly one of"),
    ({"file_name": 3}, TypeError, "os.PathLike"),
    ({"destination": "a.hscap"}, TypeError, "destination must be a SocketDestination or FileDestination"),
    ({"destination": SocketDestination(7000), "follow_fork": True}, RuntimeError,
     "follow_fork requires an output file"),
    ({"destination": SocketDestination(7000), "file_format": FileFormat.AGGREGATED_ALLOCATIONS}, RuntimeError,
     "AGGREGATED_ALLOCATIONS requires an output file"),
    ({"destination": SocketDestination(0)}, ValueError, "server_port must be in 1..65535"),
    ({"destination": SocketDestination("7000")}, TypeError, "server_port must be an int"),
    ({"file_name": "NEW", "memory_interval_ms": 0}, ValueError, "memory_interval_ms must be at least 1"),
    ({"file_name": "NEW", "memory_interval_ms": 1.5}, TypeError, "memory_interval_ms must be an int"),
    ({"file_name": "NEW", "file_format": 7}, ValueError, "file_format must be"),
    ({"file_name": "NEW", "file_format": "ALL"}, TypeError, "file_format must be a FileFormat"),
    ({"file_name": "NEW", "native_traces": "yes"}, TypeError, "native_traces must be a bool"),
])
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, error, message):
    if kwargs.get("file_name") == "NEW":
        kwargs = {**kwargs, "file_name": tmp_path / "new.hscap"}
    with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
        Tracker(**kwargs)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_existing_file_needs_overwrite(tmp_path):
    existing = tmp_path / "old.hscap"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        Tracker(existing)
    with pytest.raises(FileExistsError):
        Tracker(destination=FileDestination(str(existing)))
    assert existing.read_bytes() == b"keep me"
    Tracker(destination=FileDestination(existing, overwrite=True))  # accepted (nothing written before __enter__)
    assert existing.read_bytes() == b"keep me"


def test_memray_file_format_values_are_accepted(tmp_path):
    # In a subprocess: memray is never imported into the test process (its
    # extension and heapscope's both bring libunwind).
    if importlib.util.find_spec("memray") is None:
        pytest.skip("memray is not installed")
    script = tmp_path / "formats.py"
    write_script(script, """
        import sys, memray, heapscope
        tracker = heapscope.Tracker(sys.argv[1], file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS)
        print(tracker._file_format.name)
    """)
    assert run_script(script, tmp_path / "a.hscap").stdout == "AGGREGATED_ALLOCATIONS\n"


SCRIPT_RULES = """
import os, sys
import heapscope
import heapscope.tracemalloc as tm
from heapscope import Tracker, FileDestination

out = sys.argv[1]
first = Tracker(out + ".first")
with first:
    try:
        with Tracker(out + ".second"):
            pass
    except RuntimeError as e:
        print("second:", e)
    print("second file made:", os.path.exists(out + ".second"))
try:
    with first:
        pass
except RuntimeError as e:
    print("reuse:", e)
tm.start()
try:
    with Tracker(out + ".third"):
        pass
except RuntimeError as e:
    print("tracemalloc:", e)
tm.stop()
print("third file made:", os.path.exists(out + ".third"))
try:
    with Tracker(os.path.join(out + ".missing_dir", "x.hscap")):
        pass
except OSError as e:
    print("unopenable:", type(e).__name__, e)
with Tracker(out + ".after") as again:   # everything was cleaned up: tracking works again
    kept = bytearray(3_000_000)
print("after:", again.totals["allocations"] > 0, again.totals["peak_memory"] >= 3_000_000)
with Tracker("/dev/null"):              # like memray: /dev/null is never "an existing file"
    pass
print("dev null ok")
"""


def test_one_tracker_at_a_time_and_errors_before_tracking(tmp_path):
    script = tmp_path / "rules.py"
    write_script(script, SCRIPT_RULES)
    out = run_script(script, tmp_path / "cap").stdout.splitlines()
    assert "second: No more than one Tracker instance can be active at the same time" in out
    assert "second file made: False" in out
    assert any(line.startswith("reuse: This Tracker was already used") for line in out)
    assert "tracemalloc: cannot start a heapscope Tracker: heapscope.tracemalloc is active in this process; stop it first" in out
    assert "third file made: False" in out
    assert any(line.startswith("unopenable: FileNotFoundError Could not create output file") for line in out)
    assert "after: True True" in out
    assert "dev null ok" in out


SCRIPT_SOCKET = """
import sys
from heapscope import Tracker, SocketDestination

port = int(sys.argv[1])
print("listening", flush=True)
with Tracker(destination=SocketDestination(port)):
    kept = bytearray(2_000_000)
print("done", flush=True)
"""


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_socket_destination_blocks_until_a_reader_connects(tmp_path):
    from heapscope import _heapscope

    script = tmp_path / "serve.py"
    write_script(script, SCRIPT_SOCKET)
    port = _free_port()
    process = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE, text=True,
                               env=python_env())
    try:
        assert process.stdout.readline() == "listening\n"
        time.sleep(0.5)
        assert process.poll() is None  # still waiting in __enter__: nobody connected
        deadline = time.monotonic() + 10
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", port))
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        stream = _heapscope.CaptureStream()
        with connection:
            connection.sendall(LIVE_HELLO)  # what heapscope live says first
            while not stream.ended:
                data = connection.recv(1 << 16)
                if not data:
                    break
                stream.feed(data)
        assert stream.ended and stream.damage is None
        assert process.wait(timeout=30) == 0
        assert process.stdout.read() == "done\n"
        assert dict(stream.metadata)["pid"] == str(process.pid)
    finally:
        process.kill()
        process.wait()


def test_metadata_written_at_start_and_end(tmp_path):
    script = tmp_path / "meta.py"
    write_script(script, """
        import sys, time
        from heapscope import Tracker
        before = time.time()
        with Tracker(sys.argv[1], memory_interval_ms=5):
            time.sleep(0.2)
        after = time.time()
        print(before, after)
    """)
    capture = tmp_path / "meta.hscap"
    before, after = map(float, run_script(script, capture, "extra arg").stdout.split())
    metadata = heapscope.FileReader(capture).metadata
    assert metadata.command_line == f"{script} {capture} extra arg"
    assert before <= metadata.start_time.timestamp() <= metadata.end_time.timestamp() <= after
    assert metadata.end_time.timestamp() - metadata.start_time.timestamp() >= 0.2
    assert metadata.python_allocator in ("pymalloc", "pymalloc debug", "malloc", "mimalloc")
    assert metadata.memory_interval_ms == 5
    assert metadata.python_version == sys.version.split()[0]
    assert metadata.complete and metadata.damage is None
    assert metadata.file_format is FileFormat.ALL_ALLOCATIONS
    assert metadata.pid != os.getpid() and metadata.pid > 0


@pytest.mark.parametrize("python_malloc, named", [("", "pymalloc"), ("malloc", "malloc"),
                                                  ("pymalloc_debug", "pymalloc debug"), ("malloc_debug", "malloc debug")])
def test_the_python_allocator_is_named_without_importing_sysconfig(tmp_path, python_malloc, named):
    """CPython names its allocators itself (_PyMem_GetCurrentAllocatorName);
    asking sysconfig instead cost the first Tracker a millisecond, importing
    its configuration data."""
    script = tmp_path / "allocator.py"
    write_script(script, """
        import sys
        from heapscope import Tracker
        with Tracker(sys.argv[1]):
            pass
        print(any(name.startswith("_sysconfigdata") for name in sys.modules))
    """)
    capture = tmp_path / "allocator.hscap"
    env = {**python_env(), "PYTHONMALLOC": python_malloc}
    result = subprocess.run([sys.executable, str(script), str(capture)], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"]
    assert heapscope.FileReader(capture).metadata.python_allocator == named


def test_path_like_file_name(tmp_path):
    script = tmp_path / "pathlike.py"
    write_script(script, """
        import pathlib, sys
        from heapscope import Tracker
        with Tracker(pathlib.Path(sys.argv[1])):
            pass
    """)
    run_script(script, tmp_path / "p.hscap")
    assert pathlib.Path(tmp_path / "p.hscap").stat().st_size > 0
