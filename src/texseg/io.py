"""Crash-safe file writing: every file texseg writes appears whole or not at all."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from texseg.errors import RunDirError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; give ours the usual permissions.
_FILE_MODE = 0o666 & ~_current_umask()


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The rename is atomic on POSIX, so a reader (or a crash at any moment) sees either
    the old file or the new one, never a half-written file. On error the temporary
    file is removed and ``path`` is untouched.
    """
    path = Path(path)
    try:
        # Short enough that a name near the file system's 255-byte limit still has room for it.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the file the user asked for, not our temporary one
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, _FILE_MODE)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:  # a full disk, say: name the file the user knows, not the temporary one
        tmp_path.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Serialising into memory first and writing the bytes here means every failure to write
    (a full disk above all) is an ``OSError`` naming ``path``, whatever library made the bytes.
    """
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def overwrite_in_place(path: str | os.PathLike[str], text: str) -> None:
    """Replace a small file's contents without needing a second file's worth of free space.

    Only for recording a failure when the disk is full and :func:`atomic_write_text`
    could not: truncating first frees the blocks the new contents then reuse.
    """
    with open(path, "r+", encoding="utf-8") as f:
        f.truncate(0)
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]],
              columns: Sequence[str] | None = None) -> None:
    """Write ``rows`` as CSV atomically: floats with 6 significant digits, NaN and None as empty cells.

    Args:
        path: the file.
        rows: one dict per row.
        columns: column order; default every key, in first-seen order.
    """
    if columns is None:
        columns = []
        for r in rows:
            columns += [c for c in r if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_cell(v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _csv_cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, dict)):
        return repr(v)
    return v


@contextmanager
def exclusive_lock(path: str | os.PathLike[str], busy: str = "", *, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the block.

    Args:
        path: the lock file.
        busy: the error message when another process holds it (without ``wait``).
        wait: block until the other process releases it instead of raising.

    Raises:
        RunDirError: ``busy``, if another process holds it and not ``wait``.
    """
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            raise RunDirError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def slug(text: str) -> str:
    """``text`` as a safe file-name part: runs of other characters than ``A-Za-z0-9_.-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "x"


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a missing, malformed or absurdly nested file raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be a texseg file") from None
