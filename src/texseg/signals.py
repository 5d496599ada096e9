"""Stopping cleanly on Ctrl-C (SIGINT), SIGTERM and SIGHUP, at every moment of a process's life.

Signals are never turned into exceptions at arbitrary points (a library's start-up code
may swallow a ``KeyboardInterrupt``, or a write may be cut in half). Instead one handler
records them in a process-wide :class:`StopFlag`, and the code acts on the flag at safe
points: long jobs between two units of work (a training step, a trial, a file), and
everything else through :func:`stop_point`, which raises :class:`Interrupted`.

The command line takes the signals over with :func:`install` as its very first action,
before torch is imported, so a Ctrl-C during start-up is recorded and honoured as soon
as it is safe (one line, exit 130) instead of producing a traceback or being lost.
Library users (notebooks) get the same behaviour inside :func:`catch_stop_signals`, which
installs the handler for the duration of a long job and restores the previous one after.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Interrupted(BaseException):
    """A stop signal was honoured at a safe point.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that ``except Exception`` blocks,
    which turn a failing trial into a result row, never swallow it.
    """
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopFlag:
    """The stop signals received: the last one (``signal``) and how many (``count``)."""
    def __init__(self) -> None:
        self.signal: int | None = None
        self.count = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.signal = signum
        self.count += 1

    @property
    def name(self) -> str:
        """``SIGINT``, ``SIGTERM``...; empty when no signal arrived."""
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def reset(self) -> None:
        self.signal, self.count = None, 0


_FLAG = StopFlag()
_installed = False  # whether _FLAG is the handler of the stop signals in this process
_previous: dict[int, Any] = {}  # the handlers install() replaced


def _can_install() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> StopFlag:
    """Route SIGINT, SIGTERM and SIGHUP to the process-wide flag, for the rest of the process.

    Called first thing by the ``texseg`` entry point. Idempotent.
    """
    global _installed
    if _can_install() and not _installed:
        _FLAG.reset()
        for s in STOP_SIGNALS:
            _previous[s] = signal.signal(s, _FLAG)
        _installed = True
    return _FLAG


def uninstall() -> None:
    """Undo :func:`install` (for a process that goes on after the command, such as a test runner)."""
    global _installed
    if _installed and _previous and _can_install():
        for s, handler in _previous.items():
            signal.signal(s, handler)
        _previous.clear()
        _installed = False
        _FLAG.reset()


def stop_requested() -> StopFlag | None:
    """The flag if a stop signal has arrived (in a process or block that records them), else None."""
    return _FLAG if _FLAG.signal is not None else None


def stop_point() -> None:
    """Raise :class:`Interrupted` if a stop signal has arrived; call it where stopping is safe."""
    if _FLAG.signal is not None:
        raise Interrupted(_FLAG.signal)


@contextmanager
def catch_stop_signals() -> Iterator[StopFlag]:
    """Record stop signals in the process-wide flag for the duration of the block.

    Inside a process that called :func:`install` (the CLI) this only yields the flag, so a
    signal that arrived earlier, during start-up or set-up, is seen by the block. Elsewhere
    (a notebook) the handlers are installed for the block with a cleared flag and the
    previous handlers restored on exit; nested blocks share the outer block's flag.
    Outside the main thread (where handlers cannot be installed) the flag never sets.
    """
    global _installed
    if _installed or not _can_install():
        yield _FLAG
        return
    _FLAG.reset()
    previous = {s: signal.signal(s, _FLAG) for s in STOP_SIGNALS}
    _installed = True
    try:
        yield _FLAG
    finally:
        _installed = False
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def ignored_in_children() -> Iterator[None]:
    """Start child processes inside this block with the stop signals ignored.

    A child inherits ignored signals across ``exec``, so a spawned worker cannot get a
    ``KeyboardInterrupt`` while it imports torch; it takes the signals over with
    :func:`install` once it is ready. The parent's own handlers are back after the block
    (a signal arriving during the few milliseconds of a process start is lost).
    """
    if not _can_install():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def stop_when_parent_dies(poll_seconds: float = 0.5) -> None:
    """Send this process SIGTERM if its parent dies (a worker must not train on as an orphan).

    The SIGTERM goes through the normal path: a running trial stops between two steps
    and saves a resumable checkpoint, then the worker exits.
    """
    parent = os.getppid()

    def watch() -> None:
        event = threading.Event()
        while os.getppid() == parent:
            event.wait(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="texseg-parent-watch", daemon=True).start()
