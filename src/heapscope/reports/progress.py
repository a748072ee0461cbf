"""A one-line progress bar on stderr, for passes over large captures.

The engine calls ``progress(bytes_done, bytes_total)`` from its reading loop
(with the GIL held); the bar appears only once a pass has lasted a moment, so
short passes print nothing.
"""

import sys
import time

_WIDTH = 30
_DELAY_S = 0.5      # passes shorter than this show no bar
_REFRESH_S = 0.1


class ProgressBar:
    """Callable as ``progress(done, total)``; ``close()`` erases the bar.

    ``enabled=False`` makes every call a no-op (cheap enough to pass anyway).
    """

    def __init__(self, label, *, enabled=True, stream=None):
        self.label = label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self._started = time.monotonic()
        self._next_draw = self._started + _DELAY_S
        self._drawn = False

    def __call__(self, done, total):
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next_draw:
            return
        self._next_draw = now + _REFRESH_S
        fraction = min(max(done / total, 0.0), 1.0) if total else 0.0
        filled = int(fraction * _WIDTH)
        bar = "\u2588" * filled + "\u2591" * (_WIDTH - filled)
        try:
            self.stream.write(f"\r{self.label} {bar} {100 * fraction:5.1f}%")
            self.stream.flush()
            self._drawn = True
        except (OSError, ValueError):  # stderr closed or broken: reading goes on without a bar
            self.enabled = False

    def restart(self, label):
        """Reuses the bar for another pass: new label, and the delay starts again."""
        self.close()
        self.label = label
        self._started = time.monotonic()
        self._next_draw = self._started + _DELAY_S

    def close(self):
        if self._drawn:
            try:
                self.stream.write("\r" + " " * (len(self.label) + _WIDTH + 9) + "\r")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._drawn = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
