"""Ctrl-C and SIGTERM during a long command: finish the current tick, keep what is complete.

Inside :func:`graceful_stop`, the first SIGINT or SIGTERM only sets a flag; the command's loop
polls it between ticks (or runs, or epochs), stops, writes what it has completed and exits
with :data:`EXIT_INTERRUPTED`. A second signal raises ``KeyboardInterrupt`` at once, for a
tick that hangs; the loop then abandons that tick and still writes the complete ones.

Ray's ``init`` installs its own SIGTERM handler, so :class:`StopRequest` re-installs ours each
time it is polled: poll once right after starting Ray.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

EXIT_INTERRUPTED = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Callable flag: ``stop()`` is True once a stop signal arrived (``stop.signal`` says
    which)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._armed = False

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt  # second signal: abandon what is running now
        self.signal = signum

    def arm(self) -> None:
        """(Re-)install the handlers, in the main thread only (Python's rule)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            if signal.getsignal(sig) != self.handle:
                signal.signal(sig, self.handle)
        self._armed = True

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def __call__(self) -> bool:
        if self._armed:
            self.arm()
        return self.signal is not None


@contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """Catch SIGINT/SIGTERM as a :class:`StopRequest` for the body; restore the old handlers."""
    stop = StopRequest()
    main = threading.current_thread() is threading.main_thread()
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in SIGNALS} if main else {}
    stop.arm()
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
