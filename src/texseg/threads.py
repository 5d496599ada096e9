"""How texseg's CPU threads wait for each other, so that a shared machine does not stall them.

torch's CPU kernels run on an OpenMP thread pool. By default GNU OpenMP (libgomp, what the
Linux wheels of torch use) lets an idle thread spin for about 300,000 iterations before it
sleeps: fine on an idle machine, ruinous on a shared one, where the thread everybody waits
for is not running while the others burn its core spinning. ``benchmarks/bench_load.py``
on a 2-core AMD EPYC (U-Net step, batch 4, fp32) beside other programs keeping the load
average at 7-10: torch's default 0.34 it/s (0.23 with two more busy processes), a 10,000
spin 0.67 (0.52), no spin at all (``OMP_WAIT_POLICY=PASSIVE``) 1.14 (2.09), one thread
2.59 (0.95). Idle, no spin cost 9-14% of the speed and the short spin nothing measurable,
so texseg spins briefly, trains with the cores other programs leave free
(:func:`choose_threads`) and follows them during a run (:class:`ThreadGovernor`).

The wait policy is read once, when torch loads its OpenMP runtime (``import torch``), so it
must be set in the environment before that: the ``texseg`` command does it first thing
(:func:`configure_threads`); Python users call :func:`configure_threads` before they import
torch (or texseg modules that import it), or set the variables in their shell. A variable
the user set is never changed. Spawned workers inherit the environment.

This module imports nothing heavy: it must run before torch.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

# libgomp's spin before an idle thread sleeps: short enough that a thread waiting for a
# descheduled one gives its core back at once, long enough that an idle machine keeps the
# speed of spinning (bench_load.py: OMP_WAIT_POLICY=PASSIVE, no spin at all, cost 9-14% idle).
OPENMP_ENV = {"GOMP_SPINCOUNT": "10000"}
# Variables that decide how OpenMP threads wait; a user who set any of them decides alone.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


@dataclass(frozen=True)
class ThreadSettings:
    """What :func:`configure_threads` did.

    Attributes:
        environment: the OpenMP wait variables in effect (set by texseg or by the user).
        source: ``texseg`` (texseg's defaults were set), ``user`` (the user's own variables
            were kept) or ``too-late`` (torch was already imported: nothing could change).
        threads: the torch thread count set, or None where it was left alone.
    """

    environment: dict[str, str] = field(default_factory=dict)
    source: str = "texseg"
    threads: int | None = None


def configure_threads(threads: int | None = None,
                      environ: MutableMapping[str, str] | None = None) -> ThreadSettings:
    """Set texseg's OpenMP wait policy (:data:`OPENMP_ENV`) unless the user set one; optionally the threads.

    Call it before ``import torch``: the wait policy takes effect only if torch has not
    loaded its OpenMP runtime yet (a warning says so otherwise).

    Args:
        threads: torch CPU threads to use (None: leave torch's default, all cores).
        environ: the environment to change (default ``os.environ``).

    Returns:
        A :class:`ThreadSettings` saying what is in effect.

    Raises:
        ValueError: ``threads`` is not a positive integer.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    env = os.environ if environ is None else environ
    user = {k: env[k] for k in WAIT_VARIABLES if k in env}
    if user:
        settings = ThreadSettings(user, "user", threads)
    elif "torch" in sys.modules and environ is None:
        warnings.warn("texseg.configure_threads() was called after torch was imported: the OpenMP wait policy "
                      "cannot change any more in this process (call it before importing torch)", stacklevel=2)
        settings = ThreadSettings({}, "too-late", threads)
    else:
        env.update(OPENMP_ENV)
        settings = ThreadSettings(dict(OPENMP_ENV), "texseg", threads)
    if threads is not None:
        import torch  # here, not at the top: this module must be importable before torch

        torch.set_num_threads(threads)
    return settings


def busy_cores(samples: int = 5, interval: float = 0.02) -> float:
    """How many other tasks are running on this machine right now (Linux; 0.0 where unknown).

    The median over ``samples`` reads of the running-task count in ``/proc/loadavg`` (the
    reader itself not counted), ``interval`` seconds apart: an instantaneous figure, where
    the load average lags by a minute.
    """
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                counts.append(max(0, int(f.read().split()[3].split("/")[0]) - 1))
        except (OSError, ValueError, IndexError):
            return 0.0
        if i + 1 < samples:
            time.sleep(interval)
    return float(statistics.median(counts))


def choose_threads(cores: int, busy: float | None = None) -> int:
    """torch threads for a run on ``cores`` cores: the cores other programs leave free, at least one.

    A thread that shares its core with another program makes every other thread wait for its
    turn at each operation: beside one busy process on 2 cores the default 30-s run took 74
    steps in 15 s with 2 threads and 427 with one (433 on the idle machine).

    Args:
        cores: cores this process may use.
        busy: other running tasks (default: :func:`busy_cores`, measured now).
    """
    busy = busy_cores() if busy is None else busy
    return max(1, max(1, cores) - round(busy))


class ThreadChooser:
    """:func:`choose_threads` for runs one after another in one process (an experiment's trials): the busy-core
    count is measured at most once every ``max_age`` seconds, not before every run (the measurement takes
    80 ms, 4% of a 2-s learning-rate tuning run).

    Args:
        max_age: seconds a measurement is reused for.
        clock: the time source (seconds; monotonic).
    """

    def __init__(self, max_age: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age, self.clock = max_age, clock
        self.busy: float | None = None
        self.measured_at = 0.0
        self.measurements = 0

    def __call__(self, cores: int) -> int:
        """torch threads for the next run on ``cores`` cores."""
        now = self.clock()
        if self.busy is None or now - self.measured_at > self.max_age:
            self.busy, self.measured_at = busy_cores(), now
            self.measurements += 1
        return choose_threads(cores, self.busy)


# A run's threads getting under this share of their CPU time are waiting for cores (ThreadGovernor).
LOW_SHARE = 0.7


class ThreadGovernor:
    """Follows the cores other programs leave free while a run trains: fewer threads when this process
    gets much less CPU time than its threads could use, more again when the cores are free -- each
    change kept only if it made the training faster.

    Feed it each stretch of training (:meth:`observe`); it calls ``set_threads`` when the count
    should change. Fewer: over a ``window`` of at least that many seconds the process got under
    :data:`LOW_SHARE` of its threads' CPU time (idle, texseg's training gets 0.88-0.93 with 2 threads;
    beside one busy program on 2 cores 0.49), so some thread keeps waiting for a core. More: at
    most every ``probe_every`` seconds, the running-task count (:func:`busy_cores`) shows free cores.
    The window after a change is a trial: fewer steps per second than in the window before it
    (a low share can also be a step that runs much of its time on one thread, on an idle machine
    with many cores) undoes the change and doubles the wait before the next one.

    Args:
        cores: cores this process may use.
        threads: the thread count the run starts with.
        set_threads: applies a new count (``torch.set_num_threads``).
        busy: counts the other running tasks (default: a quick :func:`busy_cores`).
        clock: the time source (seconds; monotonic).
    """

    def __init__(self, cores: int, threads: int, set_threads: Callable[[int], None], *,
                 busy: Callable[[], float] | None = None, clock: Callable[[], float] = time.monotonic,
                 window: float = 1.0, probe_every: float = 3.0) -> None:
        self.cores, self.threads, self.set_threads = max(1, cores), threads, set_threads
        self.busy = busy if busy is not None else (lambda: busy_cores(samples=3, interval=0.002))
        self.clock, self.window, self.probe_every = clock, window, probe_every
        self.cpu = self.wall = self.steps = 0.0
        self.probed_at = self.quiet_until = clock()
        self.hold = probe_every  # wait after an undone change (doubles each time)
        self.trial: tuple[int, float] | None = None  # (threads before the change, their steps per second)

    def observe(self, cpu_seconds: float, wall_seconds: float, steps: int = 1) -> int | None:
        """Account for ``steps`` training steps that took ``wall_seconds`` and ``cpu_seconds`` of CPU time;
        returns the new thread count when it changed (None: unchanged)."""
        self.cpu, self.wall, self.steps = self.cpu + cpu_seconds, self.wall + wall_seconds, self.steps + steps
        if self.wall < self.window:
            return None
        share, rate = self.cpu / (self.wall * self.threads), self.steps / self.wall
        self.cpu = self.wall = self.steps = 0.0
        now = self.clock()
        if self.trial is not None:  # the window after a change: keep it only if it trained faster
            before, before_rate = self.trial
            self.trial = None
            if rate >= before_rate:
                self.hold = self.probe_every
                return None
            self.hold *= 2
            self.quiet_until = now + self.hold
            return self._change(before, None)
        if now < self.quiet_until:
            return None
        if self.threads > 1 and share < LOW_SHARE:
            self.probed_at = now  # a core was just found taken: look for a free one only after probe_every
            return self._change(max(1, min(self.threads - 1, round(share * self.threads))), rate)
        if self.threads < self.cores and now - self.probed_at >= self.probe_every:
            self.probed_at = now
            free = choose_threads(self.cores, self.busy())
            if free > self.threads:
                return self._change(free, rate)
        return None

    def _change(self, threads: int, rate: float | None) -> int:
        """Set ``threads``; with ``rate`` (steps per second until now), the next window judges the change."""
        self.trial = None if rate is None else (self.threads, rate)
        self.threads = threads
        self.set_threads(threads)
        return threads


def thread_changes_note(start: int, changes: list[tuple[int, int]], shown: int = 5) -> str:
    """The note a run's summary gets when its :class:`ThreadGovernor` changed the thread count.

    Args:
        start: threads at the start; changes: ``(step, threads from the next step on)``, in order;
        shown: how many changes are spelled out (the rest are counted).
    """
    listed = ", ".join(f"{n} from step {step + 1}" for step, n in changes[:shown])
    more = f" and {len(changes) - shown} more changes" if len(changes) > shown else ""
    return (f"other programs shared the cores: torch threads {start} at the start, {listed}{more} (texseg follows "
            "the free cores; setting threads fixes the count)")


def wait_policy_description(environ: MutableMapping[str, str] | None = None) -> str:
    """One line on how OpenMP threads wait in this process (for ``texseg devices``)."""
    env = os.environ if environ is None else environ
    given = {k: env[k] for k in WAIT_VARIABLES if k in env}
    if not given:
        return "OpenMP default (threads spin ~300k iterations before sleeping: slow on a busy machine)"
    what = ", ".join(f"{k}={v}" for k, v in given.items())
    return what + (" (texseg's default)" if given == OPENMP_ENV else " (set by the user)")
