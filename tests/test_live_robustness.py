"""The live socket (issue 14): it listens on 127.0.0.1 unless told otherwise;
a client that sends garbage, a second viewer and a viewer that leaves
mid-stream each get a clear answer while the profiled program goes on; and
``heapscope live`` copes with a stream cut at any byte."""

import contextlib
import io
import socket
import struct
import subprocess
import sys
import time

import pytest

from heapscope.cli._capture import CommandError
from heapscope.cli.live import follow
from heapscope.tracker import LIVE_HELLO
from capture_helpers import heapscope_cli, python_env, write_script

SERVED = """
import sys, time
from heapscope import Tracker, SocketDestination

port, seconds = int(sys.argv[1]), float(sys.argv[2])
print("listening", flush=True)
with Tracker(destination=SocketDestination(port)):
    print("tracking", flush=True)
    kept = []
    end = time.monotonic() + seconds
    while True:
        kept.append(bytearray(10_000))   # @grow
        if len(kept) > 50:
            kept.clear()
        if time.monotonic() >= end:
            break
        time.sleep(0.001)
print("done", flush=True)
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def served_program(tmp_path, seconds):
    script = tmp_path / "served.py"
    write_script(script, SERVED)
    port = free_port()
    process = subprocess.Popen([sys.executable, str(script), str(port), str(seconds)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=python_env())
    try:
        assert process.stdout.readline() == "listening\n"
        yield process, port
    finally:
        process.kill()
        process.communicate()


def connect(port):
    deadline = time.monotonic() + 20
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def listening_addresses(port):
    """The local addresses of the TCP sockets listening on *port* (from /proc/net/tcp*)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    address, hex_port = fields[1].split(":")
                    if int(hex_port, 16) == port and fields[3] == "0A":
                        found.append(address)
        except FileNotFoundError:
            pass
    return found


def test_it_listens_on_loopback_unless_told_otherwise(tmp_path):
    with served_program(tmp_path, 0.1) as (process, port):
        deadline = time.monotonic() + 20
        while not listening_addresses(port):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert listening_addresses(port) == [socket.inet_aton("127.0.0.1")[::-1].hex().upper()]
        viewer = heapscope_cli("live", port, timeout=60)
        assert viewer.returncode == 0, viewer.stderr
        assert process.wait(timeout=60) == 0


def test_a_client_that_sends_garbage_is_told_so_and_the_program_goes_on(tmp_path):
    with served_program(tmp_path, 0.2) as (process, port):
        with connect(port) as client:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b""
            while True:
                data = client.recv(4096)
                if not data:
                    break
                reply += data
        assert reply == b"heapscope: error: this port serves a heapscope capture; view it with: heapscope live PORT\n"
        with connect(port) as silent:  # says nothing: let go after a few seconds, with the same line
            assert silent.recv(4096).startswith(b"heapscope: error: this port serves a heapscope capture")
        viewer = heapscope_cli("live", port, timeout=60)  # a real viewer is still welcome
        assert viewer.returncode == 0, viewer.stderr
        assert "the program ended" in viewer.stdout
        assert process.wait(timeout=60) == 0
        assert process.stdout.read() == "tracking\ndone\n"


def test_a_second_viewer_is_told_there_is_one_already(tmp_path):
    with served_program(tmp_path, 3.0) as (process, port):
        first = subprocess.Popen([sys.executable, "-m", "heapscope", "live", str(port)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=python_env())
        try:
            assert process.stdout.readline() == "tracking\n"
            second = heapscope_cli("live", port, timeout=60)
            assert second.returncode == 1
            assert second.stderr == (f"heapscope: error: the program on 127.0.0.1:{port} already has a live viewer "
                                     f"(one at a time)\n")
            out, err = first.communicate(timeout=60)
            assert first.returncode == 0, err
            assert "the program ended" in out
        finally:
            first.kill()
        assert process.wait(timeout=60) == 0


def test_a_viewer_that_leaves_mid_stream_leaves_the_program_going(tmp_path):
    with served_program(tmp_path, 1.0) as (process, port):
        with connect(port) as client:
            client.sendall(LIVE_HELLO)
            assert client.recv(4096)  # the stream has started
            assert process.stdout.readline() == "tracking\n"
            # A reset, as a viewer killed or cut off leaves it.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert process.wait(timeout=60) == 0
        assert process.stdout.read() == "done\n"
        err = process.stderr.read()
        assert err.startswith("heapscope: warning: the live viewer disconnected") and err.count("\n") == 1, err
        assert "the program went on without being recorded from then" in err


def test_heapscope_run_goes_on_when_its_viewer_leaves(tmp_path):
    script = tmp_path / "runs.py"
    write_script(script, """
        import sys, time
        kept = []
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            kept.append(bytearray(10_000))
            del kept[:-50]
            time.sleep(0.001)
        print("done")
        sys.exit(4)
    """)
    port = free_port()
    tracked = subprocess.Popen([sys.executable, "-m", "heapscope", "run", "--live-port", str(port), str(script)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env())
    try:
        with connect(port) as client:
            client.sendall(LIVE_HELLO)
            assert client.recv(4096)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        out, err = tracked.communicate(timeout=60)
    finally:
        tracked.kill()
    assert tracked.returncode == 4  # the program's own exit code
    assert out == "done\n"
    assert "heapscope: warning: the live viewer disconnected" in err


@pytest.fixture(scope="module")
def small_stream(tmp_path_factory):
    """Every byte a viewer receives from a short program."""
    tmp_path = tmp_path_factory.mktemp("stream")
    with served_program(tmp_path, 0.05) as (process, port):
        with connect(port) as client:
            client.sendall(LIVE_HELLO)
            received = b""
            while True:
                data = client.recv(1 << 16)
                if not data:
                    break
                received += data
        assert process.wait(timeout=60) == 0
    return received


def test_live_copes_with_a_stream_cut_at_every_byte(small_stream):
    assert 500 < len(small_stream) < 200_000
    for cut in range(len(small_stream) + 1):
        sender, receiver = socket.socketpair()
        with sender, receiver:
            sender.sendall(small_stream[:cut])
            sender.close()
            shown = io.StringIO()
            with contextlib.redirect_stdout(shown):
                try:
                    code = follow(receiver, interval=10.0, rows=5)
                except CommandError as error:
                    code = error.exit_code
                    message = str(error)
                else:
                    message = ""
        if cut == len(small_stream):
            assert code == 0 and "the program ended" in shown.getvalue()
        else:
            assert code == 2, (cut, message)
            assert message.startswith(("the connection closed before the capture ended",
                                       "the capture stream is damaged")), (cut, message)
            assert "heapscope live:" in shown.getvalue()
