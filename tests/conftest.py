"""Shared test helpers: processes that never outlive their test, waiting on observable things."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# The notebook reference lives beside the tests.
sys.path.insert(0, os.path.dirname(__file__))

# Generous: a loaded machine importing a CUDA build of torch takes many seconds per process.
PROCESS_TIMEOUT = 300.0


@contextmanager
def cli_process(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """``python -m texseg.cli ARGS`` in its own process group, killed (with its children) on exit."""
    proc = subprocess.Popen([sys.executable, "-m", "texseg.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the process and any worker it started
        except ProcessLookupError:
            pass
        proc.communicate()


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str] | None = None,
               timeout: float = PROCESS_TIMEOUT, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail if ``proc`` ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            if condition():
                return
            raise AssertionError(f"the process ended (code {proc.returncode}) before {what}: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """``texseg ARGS`` in this process: (exit code, stdout, stderr)."""
    import pytest

    from texseg.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def handles_stop_signals(pid: int) -> bool:
    """Whether the process has texseg's handler for SIGTERM and SIGHUP installed (its SigCgt mask)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return all(caught >> (s - 1) & 1 for s in (signal.SIGTERM, signal.SIGHUP))


def _pytest_fixture():
    import pytest

    return pytest.fixture


@_pytest_fixture()
def untrivial(monkeypatch):
    """Tiny test runs (a few steps) count as learnt: no triviality flag, no minimum of steps.

    For tests of the machinery around a choice (tables, folders, reruns), not of the rule
    that trivial runs are never chosen (tests of that rule do not use this fixture).
    """
    from texseg.training import engine

    monkeypatch.setattr(engine, "run_warnings", lambda *args, **kwargs: [])
    monkeypatch.setattr(engine, "MIN_STEPS", 1)


def cores_freed_after_the_start(monkeypatch, module) -> None:
    """The start's busy-core count finds every core taken (one thread), every later probe finds them free, and the
    thread governor that ``module`` builds judges each step at once: a run then goes from one thread to all.

    Skips on a machine with one core. The caller restores ``torch.set_num_threads`` afterwards.
    """
    import functools

    import pytest

    from texseg import threads
    from texseg.workers import available_cores

    if available_cores() < 2:
        pytest.skip("needs 2 cores")
    calls = []
    monkeypatch.setattr(threads, "busy_cores", lambda *a, **k: (calls.append(1), 0.0 if len(calls) > 1 else 64.0)[1])
    monkeypatch.setattr(module, "ThreadGovernor", functools.partial(threads.ThreadGovernor, window=0.0,
                                                                    probe_every=0.0))
