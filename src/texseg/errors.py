"""Exceptions that carry a message meant for the user, and the exit codes of the ``texseg`` command.

Library functions raise ``ValueError`` for a bad argument (the message names the
argument and what is allowed) and :class:`TexsegError` subclasses for problems with
files and runs. The CLI prints either as one line, without a traceback, and exits with
the :class:`ExitCode` that says what happened.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of every ``texseg`` command."""

    OK = 0
    INTERNAL = 1  # a bug (one line; TEXSEG_DEBUG=1 shows the traceback), or trials that failed with an error
    USAGE = 2  # bad input, or a file or folder that cannot be read or written
    DIVERGED = 3  # training produced NaN/inf
    INTERRUPTED = 130  # Ctrl-C, SIGTERM or SIGHUP: stopped at a safe point, resumable


class TexsegError(Exception):
    """Base class of texseg's user-facing errors (not argument errors)."""


class CheckpointError(TexsegError):
    """A run directory or weights file is missing, truncated, foreign or mismatched."""


class RunDirError(TexsegError):
    """A run directory cannot be created, written, or is in use."""


class NonFiniteError(TexsegError):
    """A model produced NaN outputs: training has diverged."""


class ImageReadError(TexsegError):
    """An image file cannot be used: unreadable, truncated, not an image, or too small."""


class DataError(TexsegError):
    """A data folder has problems (missing pairs, size mismatches, bad labels); one line each."""
