"""``heapscope live PORT``: follow a running capture served on a port (``heapscope run --live-port``,
or ``heapscope.Tracker(destination=SocketDestination(PORT))``) and show the memory live by location."""

import os
import socket
import sys
import time

from heapscope.cli._capture import CommandError, guarded
from heapscope.cli._program import port_number, positive_int
from heapscope.reports.text import format_bytes, safe_text

_CONNECT_TIMEOUT_S = 2.0  # the tracked process may still be starting to listen
_CLEAR = "\x1b[H\x1b[2J"


def register(commands):
    parser = commands.add_parser(
        "live",
        help="follow a program that serves its capture on a port, and show its live memory",
        description="Connect to a program serving its capture on PORT (heapscope run --live-port PORT) and "
                    "show its live memory by location, refreshed every second, until it ends.",
    )
    parser.add_argument("port", type=port_number, metavar="PORT", help="the port the tracked program listens on")
    parser.add_argument("--address", default="127.0.0.1", help="the tracked program's address (default: %(default)s)")
    parser.add_argument("-n", "--rows", type=positive_int, default=None,
                        help="locations shown (default: what fits the terminal, or 20)")
    parser.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                        help="time between refreshes (default: %(default)s)")
    parser.set_defaults(handler=guarded(run))


def _connect(address, port):
    from heapscope.tracker import LIVE_HELLO

    deadline = time.monotonic() + _CONNECT_TIMEOUT_S
    while True:
        try:
            connection = socket.create_connection((address, port), timeout=_CONNECT_TIMEOUT_S)
            connection.sendall(LIVE_HELLO)
            return connection
        except ConnectionRefusedError:
            if time.monotonic() >= deadline:
                raise CommandError(f"nothing is serving a capture on {address}:{port} "
                                   f"(start it with: heapscope run --live-port {port} ...)") from None
            time.sleep(0.1)
        except OSError as error:
            raise CommandError(f"cannot connect to {address}:{port}: {error.strerror or error}") from None


class LiveView:
    """Turns a CaptureStream's live blocks into a report-model Profile, and
    that into the table of the locations holding the most."""

    def __init__(self, stream):
        self.stream = stream
        self._stacks = {}
        self._prefix = None
        self._launcher = None

    def _stack(self, python_node):
        """The program's frames (heapscope's launch frames cut), outermost first."""
        stack = self._stacks.get(python_node)
        if stack is None:
            from heapscope.reader import frame_tuples, is_launch_frame, program_frame_count
            from heapscope.reports.model import UNKNOWN_FRAME, Frame

            if self._prefix is None:
                metadata = dict(self.stream.metadata)
                package = metadata.get("heapscope_package", "")
                self._prefix = package + os.sep if package else None
                self._launcher = metadata.get("heapscope_launcher") or None
            frames = frame_tuples(self.stream.python_stack(python_node)) if python_node else []
            kept = program_frame_count(frames, lambda name: is_launch_frame(name, self._prefix), self._launcher)
            stack = tuple(Frame(*frame) for frame in reversed(frames[:kept])) or (UNKNOWN_FRAME,)
            self._stacks[python_node] = stack
        return stack

    def profile(self):
        from heapscope.reports.model import Profile, Sample

        samples = [Sample(self._stack(row.python_node), row.size, row.count)
                   for row in self.stream.live(merge_threads=True)]
        return Profile("Live memory", samples)

    def render(self, rows_shown, elapsed, state):
        from heapscope.reports.capture_text import location_table

        rows = self.profile().locations()
        total = sum(row.bytes for row in rows)
        metadata = dict(self.stream.metadata)
        memory = self.stream.memory
        lines = [f"heapscope live: {safe_text(metadata.get('command_line', '?'))} "
                 f"(pid {safe_text(metadata.get('pid', '?'))}) -- {state}",
                 f"  {elapsed:.1f} s; live {format_bytes(total)} in {sum(row.blocks for row in rows)} blocks"
                 + (f"; heap {format_bytes(memory.heap)}, resident {format_bytes(memory.rss)}" if memory else ""),
                 ""]
        lines += location_table(rows, rows_shown) if rows else ["  (no live memory)"]
        return "\n".join(lines)


def run(parser, options):
    if not options.interval > 0:
        parser.error("--interval must be more than 0")
    connection = _connect(options.address, options.port)
    tty = sys.stdout.isatty()
    rows = options.rows or (max(5, os.get_terminal_size().lines - 6) if tty else 20)
    with connection:
        return follow(connection, options.interval, rows, tty, where=f"{options.address}:{options.port}")


def follow(connection, interval, rows, tty=False, where="the port"):
    """Shows the capture arriving on *connection* until it ends, the
    connection closes or the stream is damaged; the exit code (0: the
    program ended), or CommandError. The stream may stop at any byte."""
    from heapscope import _heapscope
    from heapscope.tracker import LIVE_BUSY

    stream = _heapscope.CaptureStream()
    view = LiveView(stream)
    started = time.monotonic()
    next_draw = started + interval
    closed = False
    first = b""  # the first bytes, until they tell a capture from a refusal
    connection.settimeout(min(interval, 0.2))
    while True:
        try:
            data = connection.recv(1 << 16)
            if data:
                if first is not None:
                    first += data
                    if len(first) < len(LIVE_BUSY) and LIVE_BUSY.startswith(first):
                        data = b""
                    elif first.startswith(LIVE_BUSY):
                        raise CommandError(f"the program on {where} already has a live viewer (one at a time)")
                    else:
                        data, first = first, None
                if data:
                    stream.feed(data)
            else:
                closed = True
        except socket.timeout:
            pass
        except ConnectionError:
            closed = True
        finished = closed or stream.ended or stream.damage is not None
        now = time.monotonic()
        if finished or now >= next_draw:
            state = "the program ended" if stream.ended else ("stopped" if finished else "running")
            text = view.render(rows, now - started, state)
            sys.stdout.write((_CLEAR + text + "\n") if tty else (text + "\n\n"))
            sys.stdout.flush()
            next_draw = now + interval
        if finished:
            break
    if stream.damage is not None:
        raise CommandError(f"the capture stream is damaged: {stream.damage}", exit_code=2)
    if not stream.ended:
        raise CommandError("the connection closed before the capture ended (was the program killed?)",
                           exit_code=2)
    return 0
