"""Stopping cleanly on Ctrl-C (SIGINT) and SIGTERM.

Long jobs install :func:`catch_stop_signals` and look at the flag between units of work
(a training step, a trial), so a stop never leaves a half-done step or a half-written file.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class StopFlag:
    """Records the stop signals received: the last one (``signal``) and how many (``count``)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.count = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.signal = signum
        self.count += 1


@contextmanager
def catch_stop_signals() -> Iterator[StopFlag]:
    """Route SIGINT and SIGTERM to a :class:`StopFlag` for the duration of the block.

    Outside the main thread (where handlers cannot be installed) the flag simply never
    sets; the previous handlers are restored on exit.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.signal(s, flag) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
