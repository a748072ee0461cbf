"""``heapscope attach PID`` and ``heapscope detach PID``: start and end a
capture inside a running CPython process (docs/attach.md).

The way in is gdb (memray's design): gdb stops the process, waits for a safe
point (the entry of an allocator function, or of the no-op a pending call
makes the main thread run), loads heapscope's attach agent there, starts its
thread, and detaches. The agent's thread takes the GIL the ordinary way and
connects back to this command over a private Unix socket, which sends
heapscope/_attach_payload.py to run: it imports the target's own heapscope
and enters a Tracker, answers in one JSON line, and stays, untraced, waiting
on the process's control socket for ``heapscope detach`` (no debugger
needed for that). Python 3.14's ``sys.remote_exec`` runs the same bootstrap
without gdb; it is tried first where this interpreter has it, and gdb is the
fallback.

Every refusal (no such process, no permission to trace it, not CPython, no
safe point, heapscope not importable there, already profiled) is found
before anything starts in the target: the program goes on as it was.
"""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from heapscope.cli._capture import CommandError, guarded
from heapscope.cli._program import add_sample_argument, int_argument
from heapscope.reports.text import format_bytes, safe_text

_pid_argument = int_argument(1, what="a process id")

#: How long gdb waits for the program to reach a safe point.
SAFE_POINT_WAIT_S = 10
#: How long the agent's thread may take to take the GIL and connect back.
AGENT_CONNECT_WAIT_S = 30
#: How long the payload may take to import heapscope and start (or end) the capture.
PAYLOAD_WAIT_S = 120

_GDB_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attach.gdb")
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_AGENT = os.path.join(_PACKAGE_DIR, "heapscope_attach_agent.so")
_PAYLOAD = os.path.join(_PACKAGE_DIR, "_attach_payload.py")
_RTLD_NOW = 2

# What the agent's thread runs (with the GIL): connects to the channel,
# reads the payload (a length line, then the source) and runs it with the
# channel in its globals. Every failure of the payload is answered by the
# payload itself; a failure here has nobody to tell.
_BOOTSTRAP = """\
import socket
channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    channel.settimeout({timeout})
    channel.connect({path!r})
    stream = channel.makefile('rb')
    source = stream.read(int(stream.readline()))
    stream.close()
    channel.settimeout(None)
    exec(compile(source, '<heapscope attach>', 'exec'), {{'__name__': '__heapscope_attach__', 'channel': channel}})
finally:
    channel.close()
"""


def register(commands):
    parser = commands.add_parser(
        "attach",
        help="start a capture inside a running Python process",
        description="Start a capture inside a running CPython process (3.9-3.13) of the same user, from now "
                    "on: it records what the program allocates from the moment of attaching. The capture runs "
                    "until `heapscope detach PID`, the end of --duration, or the program's exit. Needs gdb, "
                    "permission to trace the process, and heapscope installed where the program runs.",
    )
    parser.add_argument("pid", type=_pid_argument, metavar="PID", help="the process to profile")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="the capture file, written by the process (default: heapscope-attach.<PID>.hscap)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite the capture file if it exists")
    parser.add_argument("--duration", type=_duration_argument, metavar="SECONDS",
                        help="end the capture after this many seconds (default: at heapscope detach or exit)")
    parser.add_argument("--native", action="store_true",
                        help="record the native (C/C++) frames of each allocation too")
    parser.add_argument("--trace-python-allocators", action="store_true",
                        help="record every block of Python's own allocator (pymalloc), not only its arenas")
    parser.add_argument("--aggregate", action="store_true",
                        help="write per-location totals (peak and leaks) instead of every allocation")
    add_sample_argument(parser)
    parser.add_argument("--live", action="store_true",
                        help="show the capture live here (as heapscope live does) instead of writing a file; "
                             "the capture ends when this view ends")
    parser.add_argument("-v", "--verbose", action="store_true", help="show gdb's command and output")
    parser.set_defaults(handler=guarded(attach))

    parser = commands.add_parser(
        "detach",
        help="end the capture heapscope attach started in a process",
        description="End the capture `heapscope attach PID` started, and finish its file. The program goes on. "
                    "Needs no debugger: the capture's thread in the process waits for this.",
    )
    parser.add_argument("pid", type=_pid_argument, metavar="PID", help="the process heapscope attach profiles")
    parser.set_defaults(handler=guarded(detach))


def _duration_argument(text):
    import argparse

    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < seconds < 1e9:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text}")
    return seconds


def attach(parser, options):
    if options.live:
        for flag, given in (("-o", options.output), ("--aggregate", options.aggregate),
                            ("--force", options.force)):
            if given:
                parser.error(f"--live cannot be combined with {flag}")
    pid = options.pid
    check_target(pid)
    if capture_listening(pid):
        raise CommandError(f"process {pid} is already being profiled by heapscope attach; end that with: "
                           f"heapscope detach {pid}")
    request = {
        "output": None, "force": options.force, "port": None, "duration": options.duration,
        "native": options.native, "trace_python_allocators": options.trace_python_allocators,
        "aggregate": options.aggregate, "sample": options.sample,
    }
    if options.live:
        request["port"] = _free_port()
    else:
        output = os.path.abspath(options.output or f"heapscope-attach.{pid}.hscap")
        if os.path.lexists(output) and not options.force:
            raise CommandError(f"{output} already exists: use --force to replace it, or -o to choose another file")
        if not os.path.isdir(os.path.dirname(output)):
            raise CommandError(f"cannot write {output}: no directory {os.path.dirname(output)}")
        request["output"] = output

    with Channel() as channel:
        inject(pid, channel, options.verbose)
        channel.send_payload(request)
        if options.live:
            return _follow_live(pid, channel, request["port"])
        reply = channel.reply(pid)
    _say(f"heapscope: attached to process {pid}: {safe_text(reply['where'])}")
    if options.duration is not None:
        _say(f"heapscope: the capture ends in {options.duration:g} s, at `heapscope detach {pid}` or when the "
             f"program exits")
    else:
        _say(f"heapscope: end it with: heapscope detach {pid}   (or it ends when the program exits)")
    return 0


def detach(parser, options):
    pid = options.pid
    check_target(pid, tracing=False)  # detach needs no debugger
    _say(_detached_message(pid, end_capture(pid)))
    return 0


def end_capture(pid):
    """Asks the capture heapscope attach started in *pid* to end (its
    thread there waits on the control socket): what it wrote, or CommandError."""
    from heapscope._attach_payload import control_address

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(PAYLOAD_WAIT_S)
        try:
            connection.connect(control_address(pid))
        except (ConnectionRefusedError, FileNotFoundError):
            raise CommandError(f"no capture started by heapscope attach runs in process {pid}") from None
        except OSError as error:
            raise CommandError(f"cannot reach the capture in process {pid}: {error.strerror or error}") from None
        try:
            connection.sendall(b"detach\n")
            line = connection.makefile("rb").readline()
        except OSError as error:
            raise CommandError(f"process {pid} did not answer: {error.strerror or error}") from None
    if not line:
        raise CommandError(f"process {pid} closed the connection without an answer")
    answer = json.loads(line)
    if "error" in answer:
        raise CommandError(f"cannot detach from process {pid}: {answer['error']}")
    return answer["ok"]


def _detached_message(pid, ended):
    totals = ended.get("totals") or {}
    counts = (f"{totals.get('allocations', 0)} allocations, "
              f"peak {format_bytes(totals.get('peak_memory', 0))}")
    output = ended.get("output")
    if output is None:
        return f"heapscope: detached from process {pid} ({counts})"
    quoted = safe_text(shlex.quote(output))
    return (f"heapscope: detached from process {pid}: wrote {safe_text(output)} ({counts})\n"
            f"heapscope: look at it with: heapscope summary {quoted}   (also: tree, flamegraph, summary --leaks)")


def _follow_live(pid, channel, port):
    """Shows the capture the process serves on *port* until the program
    ends or the view is left (Ctrl-C); then the capture is ended in the
    process (heapscope detach), if it still runs."""
    from heapscope.cli import live

    channel.wait_serving(pid)
    # Closing the terminal or a kill leaves the view as Ctrl-C does: the capture is ended.
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _leave_view)
    tty = sys.stdout.isatty()
    rows = max(5, os.get_terminal_size().lines - 6) if tty else 20
    ended = False
    try:
        connection = live._connect("127.0.0.1", port)
        with connection:
            code = live.follow(connection, 1.0, rows, tty, where=f"process {pid}")
        ended = True
        return code
    except CommandError as error:
        failure = channel.error_if_any()
        if failure is not None:
            raise CommandError(f"cannot profile process {pid}: {failure}") from None
        raise error
    finally:
        if not ended and _alive(pid):
            _end_quietly(pid)


def _leave_view(number, frame):
    raise KeyboardInterrupt


def _end_quietly(pid):
    try:
        end_capture(pid)
        _say(f"heapscope: the capture in process {pid} ended")
    except CommandError as error:
        _say(f"heapscope: warning: could not end the capture in process {pid}: {error}; "
             f"run: heapscope detach {pid}")


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _say(text):
    print(text, file=sys.stderr, flush=True)


def check_target(pid, tracing=True):
    """CommandError unless *pid* is another process of this user, which gdb
    could attach to (with *tracing*): checked before anything touches it."""
    if pid == os.getpid():
        raise CommandError("cannot attach to heapscope itself")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise CommandError(f"no process has the id {pid}") from None
    except PermissionError:
        raise CommandError(f"process {pid} belongs to another user: attach as that user (or as root)") from None
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
    except OSError:
        return
    if fields.get("State", "").split()[:1] == ["Z"]:
        raise CommandError(f"process {pid} has ended (a zombie waiting for its parent)")
    tracer = fields.get("TracerPid", "0").strip()
    if tracing and tracer != "0":
        raise CommandError(f"process {pid} is already traced by process {tracer} (a debugger?): only one "
                           f"tracer at a time; detach that one first")


def capture_listening(pid):
    """True if a capture heapscope attach started in *pid* waits on its
    control socket (an abstract Unix socket: /proc/net/unix lists it with @)."""
    from heapscope._attach_payload import control_address

    name = "@" + control_address(pid)[1:]
    try:
        with open("/proc/net/unix") as sockets:
            return any(line.split()[-1:] == [name] for line in sockets)
    except OSError:
        return False


def _describe_process(pid):
    try:
        return safe_text(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return "?"


def ptrace_advice():
    """What to change so that this user may trace its own processes."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as setting:
            scope = setting.read().strip()
    except OSError:
        scope = None
    if scope and scope != "0":
        return (f"kernel.yama.ptrace_scope is {scope}: allow tracing your own processes with "
                f"`sudo sysctl kernel.yama.ptrace_scope=0` (or run heapscope attach with CAP_SYS_PTRACE, e.g. "
                f"as root; in a container: --cap-add=SYS_PTRACE)")
    return ("give heapscope attach the CAP_SYS_PTRACE capability (run it as root; in a container: "
            "--cap-add=SYS_PTRACE), or check that no security module (seccomp, SELinux, AppArmor) forbids ptrace")


class Channel:
    """The private Unix socket the agent's thread connects back to: a fresh
    directory only this user can enter holds it. Sends the payload, reads
    its answers."""

    def __init__(self):
        self._directory = tempfile.mkdtemp(prefix="heapscope-attach-")
        self.path = os.path.join(self._directory, "channel")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(self.path)
        except OSError as error:
            self._listener.close()
            shutil.rmtree(self._directory, ignore_errors=True)
            raise CommandError(f"cannot make the attach channel {self.path}: {error.strerror or error} (a Unix "
                               f"socket's path has at most 107 bytes: set TMPDIR to a shorter directory)") from None
        self._listener.listen(1)
        self._connection = None
        self._pending = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        for sock in (self._connection, self._listener):
            if sock is not None:
                sock.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    def bootstrap(self):
        return _BOOTSTRAP.format(path=self.path, timeout=AGENT_CONNECT_WAIT_S)

    def send_payload(self, request):
        """Waits for the agent's thread to connect, and sends it the payload with *request*."""
        self._listener.settimeout(AGENT_CONNECT_WAIT_S)
        try:
            self._connection, _ = self._listener.accept()
        except socket.timeout:
            raise CommandError(f"the process did not run heapscope's code within {AGENT_CONNECT_WAIT_S} s "
                               f"(is a thread holding the GIL without releasing it?); it goes on without a "
                               f"capture") from None
        with open(_PAYLOAD, "rb") as payload:
            source = payload.read() + f"\nmain(channel, {request!r})\n".encode()
        self._connection.sendall(b"%d\n" % len(source) + source)

    def _line(self, timeout):
        """The next JSON line from the payload, or None when it closed first."""
        self._connection.settimeout(timeout)
        while b"\n" not in self._pending:
            try:
                data = self._connection.recv(1 << 16)
            except socket.timeout:
                raise CommandError(f"the process did not answer within {timeout} s") from None
            if not data:
                return None
            self._pending += data
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def reply(self, pid):
        """The payload's "ok" value, or CommandError with its reason."""
        answer = self._line(PAYLOAD_WAIT_S)
        if answer is None:
            raise CommandError(f"process {pid} closed the attach channel without an answer")
        if "error" in answer:
            raise CommandError(f"cannot profile process {pid}: {answer['error']}")
        return answer["ok"]

    def wait_serving(self, pid):
        """--live: waits until the payload says it serves the capture (or why not)."""
        answer = self._line(PAYLOAD_WAIT_S)
        if answer is None or "serving" not in answer:
            reason = answer["error"] if answer and "error" in answer else "no answer"
            raise CommandError(f"cannot profile process {pid}: {reason}")

    def error_if_any(self):
        """An error the payload sent meanwhile, without waiting long."""
        try:
            answer = self._line(0.5)
        except (CommandError, OSError, ValueError):
            return None
        return answer.get("error") if answer else None


def inject(pid, channel, verbose=False):
    """Has the process start the agent's thread, which connects to *channel*.
    Python 3.14's sys.remote_exec first where this interpreter has it, else gdb."""
    if hasattr(sys, "remote_exec") and _remote_exec(pid, channel, verbose):
        return
    _gdb_inject(pid, channel, verbose)


def _remote_exec(pid, channel, verbose):
    """True if sys.remote_exec (3.14+, same version on both sides) took the
    bootstrap; it runs in the process's main thread, so it starts a thread of
    its own to run the payload, as the agent does."""
    script = os.path.join(os.path.dirname(channel.path), "bootstrap.py")
    with open(script, "w", encoding="utf-8") as file:
        file.write("import threading as _heapscope_threading\n"
                   f"_heapscope_threading.Thread(target=exec, args=({channel.bootstrap()!r}, {{}}), "
                   "name='heapscope-attach', daemon=True).start()\n"
                   "del _heapscope_threading\n")
    try:
        sys.remote_exec(pid, script)
    except Exception as error:  # another version, no permission...: gdb is the fallback
        if verbose:
            _say(f"heapscope: sys.remote_exec failed ({error}); using gdb")
        return False
    return True


def _gdb_inject(pid, channel, verbose):
    gdb = shutil.which("gdb")
    if gdb is None:
        raise CommandError("gdb is not installed (heapscope attach uses it to enter the process): install it, "
                           "e.g. `apt-get install gdb`")
    if not os.path.exists(_AGENT):
        raise CommandError(f"heapscope's attach agent is missing ({_AGENT}): reinstall heapscope")
    gdb_calls = gdb_calls_work(gdb)
    if verbose and not gdb_calls:
        _say("heapscope: gdb's own calls do not work in a process here, or the probe could not tell (gdb 13 on a "
             "CPU with AMX): heapscope makes its calls by hand, at a safe point, without the pending call")
    command = [
        gdb, "-batch", "-nx", "-nw", "-p", str(pid),
        "-iex", "set auto-load off",
        "-iex", "set debuginfod enabled off",
        "-iex", "set auto-solib-add off",
        "-ex", f"set $agent = {_gdb_string(_AGENT)}",
        "-ex", f"set $bootstrap = {_gdb_string(channel.bootstrap())}",
        "-ex", f"set $rtld_now = {_RTLD_NOW}",
        "-ex", f"set $wait_seconds = {SAFE_POINT_WAIT_S}",
        "-ex", f"set $gdb_calls = {int(gdb_calls)}",
        "-x", _GDB_SCRIPT,
    ]
    if verbose:
        _say("heapscope: " + shlex.join(command))
    try:
        finished = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=SAFE_POINT_WAIT_S + 60, env=_gdb_environment())
        output = finished.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as expired:
        # subprocess.run killed gdb (SIGKILL): say so.
        output = (expired.stdout or b"").decode("utf-8", "replace")
        raise CommandError(f"gdb did not finish within {SAFE_POINT_WAIT_S + 60} s; check process {pid} "
                           f"(gdb said: {_last_lines(output)})") from None
    if verbose:
        _say(output)
    _check_gdb_output(pid, output)


def _gdb_environment():
    """gdb embeds a Python of its own: this one's PYTHONPATH/PYTHONHOME would break it."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}


def gdb_calls_work(gdb):
    """True if gdb's `call` works in a process on this machine, shown by a
    throwaway process; False when it fails or the probe cannot tell. Never
    tried first on the user's program: a call that fails leaves the registers
    it changed, and the program breaks (gdb 13 fails so on CPUs with AMX,
    whose whole register state Linux wants written back at once). Where it
    does not work, attach.gdb makes its calls by hand."""
    try:
        # Its own complaints (the failed call breaks it) are not the user's business.
        throwaway = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
    except OSError:
        return False
    try:
        probe = subprocess.run([gdb, "-batch", "-nx", "-nw", "-p", str(throwaway.pid),
                                "-iex", "set auto-load off", "-iex", "set debuginfod enabled off",
                                "-ex", "call (int)getpid()"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=60, env=_gdb_environment())
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        throwaway.kill()
        throwaway.wait()
    # gdb prints the call's value, the process id, unless it failed.
    return f"$1 = {throwaway.pid}" in probe.stdout.decode("utf-8", "replace").splitlines()


def _gdb_string(text):
    """*text* as a C string literal gdb reads."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _marker(output, name):
    prefix = f"HEAPSCOPE: {name}"
    for line in output.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    return None


def _last_lines(output, count=3):
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith("Breakpoint ")]
    return " / ".join(lines[-count:]) or "nothing"


def _check_gdb_output(pid, output):
    """CommandError unless gdb's output says the agent's thread started."""
    if _marker(output, "agent started") == "0":
        return
    for line in output.splitlines():
        if line.startswith("ptrace: "):
            if "not permitted" in line:
                raise CommandError(f"not permitted to trace process {pid}: {ptrace_advice()}")
            if "No such process" in line:
                raise CommandError(f"no process has the id {pid}")
            raise CommandError(f"gdb cannot trace process {pid}: {line[len('ptrace: '):]}")
    if _marker(output, "attached") is None:
        raise CommandError(f"gdb failed before attaching to process {pid}: {_last_lines(output)}")
    if _marker(output, "cpython") is None:
        raise CommandError(f"process {pid} ({_describe_process(pid)}) is not a CPython process "
                           f"(it has no Python interpreter)")
    if _marker(output, "no safe point") is not None:
        raise CommandError(f"process {pid} ran no Python code and allocated nothing for {SAFE_POINT_WAIT_S} s "
                           f"(blocked in a system call?), so heapscope found no safe moment to enter; it was "
                           f"left as it was: try again while it is working")
    failed = _marker(output, "dlopen failed:")
    if failed is not None:
        raise CommandError(f"process {pid} cannot load heapscope's attach agent: {failed}")
    started = _marker(output, "agent started")
    if started is not None:
        raise CommandError(f"process {pid} could not start heapscope's attach thread: "
                           f"{os.strerror(int(started)) if started.isdigit() else started}")
    raise CommandError(f"gdb failed in process {pid}: {_last_lines(output)}")
