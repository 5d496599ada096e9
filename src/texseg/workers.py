"""Worker processes, one design for experiments and searches.

Workers are started with the ``spawn`` method (a fresh interpreter: ``fork`` would copy
torch's thread pools and locks in whatever state they are), with the stop signals ignored
until the worker has imported what it needs and taken them over (:func:`worker_setup`),
and they stop on their own when their parent dies. Torch threads are divided among them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from typing import Any

import torch

from texseg import signals
from texseg.device import available_memory_bytes


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` processes sharing this machine's cores."""
    return max(1, available_cores() // max(1, workers))


def auto_jobs(per_job_bytes: int, tasks: int) -> int:
    """How many trials to run at once to keep every core busy: one per core (one torch thread
    each, which is how small models use cores best), as many as fit in the memory available
    with a margin, and no more than there are trials.

    Args:
        per_job_bytes: estimated memory of one trial.
        tasks: trials to run.
    """
    free = available_memory_bytes(torch.device("cpu"))
    by_memory = max(1, int(0.7 * free // max(per_job_bytes, 1))) if free else available_cores()
    return max(1, min(available_cores(), by_memory, max(tasks, 1)))


def start_worker(target: Callable[..., Any], *args: Any) -> mp.process.BaseProcess:
    """Start ``target(*args)`` in a spawned daemon process that cannot be interrupted while it starts."""
    proc = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    with signals.ignored_in_children():  # no KeyboardInterrupt while the worker imports torch
        proc.start()
    return proc


def worker_setup() -> signals.StopFlag:
    """First call in a worker: take the stop signals over, and stop when the parent dies."""
    flag = signals.install()
    signals.stop_when_parent_dies()
    return flag


def send_signal(proc: mp.process.BaseProcess, signum: int) -> None:
    """Send ``signum`` to a worker that is still running (a no-op otherwise)."""
    if proc.pid is not None and proc.exitcode is None:
        try:
            os.kill(proc.pid, signum)
        except ProcessLookupError:
            pass
