"""Progress of a run that suits where it goes.

On a terminal: a live tqdm bar (loss, latest validation IoU, it/s). Anywhere else (a log
file, a pipe, CI): one plain line every :data:`LINE_EVERY` of the run, never a
carriage-return update per step.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm.auto import tqdm

LINE_EVERY = 0.05  # a plain line per 5% of the run


class Progress:
    """Reports a run's progress as a bar (terminal) or as plain lines (anything else).

    Args:
        total: the run's length, in steps (``unit="it"``) or seconds of training (``"s"``).
        done: how much of it is done already (a resumed run).
        unit: ``"it"`` or ``"s"``.
        enabled: False for silence.
        stream: where to write (default stderr); a bar only if it is a terminal.
        what: what a plain line counts (``step 120  40%``; ``image 12  40%`` for images).
        desc: the bar's label on a terminal.
    """

    def __init__(self, total: float, done: float, unit: str, *, enabled: bool = True,
                 stream: TextIO | None = None, what: str = "step", desc: str | None = None) -> None:
        self.stream = stream or sys.stderr
        self.what = what
        self.total, self.done, self.unit, self.enabled = total, done, unit, enabled
        self.live = enabled and self.stream.isatty()
        self.fields: dict[str, str] = {}
        self._last_line = int(done / total / LINE_EVERY) if total else 0
        self._start, self._start_done = time.monotonic(), done
        self._bar = tqdm(total=total, initial=done, unit=unit, disable=not self.live, dynamic_ncols=True, desc=desc,
                         file=self.stream,
                         bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}{unit} [{elapsed}<{remaining}{postfix}]")

    def update(self, amount: float, step: int) -> None:
        """Advance by ``amount`` (never past the total); ``step`` is the run's step count."""
        amount = max(0.0, min(amount, self.total - self.done))
        self.done += amount
        if self.live:
            self._bar.update(amount)
        elif self.enabled and int(self.done / self.total / LINE_EVERY) > self._last_line:
            self._last_line = int(self.done / self.total / LINE_EVERY)
            self._line(step)

    def set(self, **fields: str) -> None:
        """Show these values (e.g. loss, val_iou, it/s) from now on."""
        self.fields.update(fields)
        if self.live:
            self._bar.set_postfix(self.fields)

    def write(self, message: str) -> None:
        """A message that does not break the bar."""
        if self.live:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        self._bar.close()

    def _line(self, step: int) -> None:
        elapsed = time.monotonic() - self._start
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        extra = "".join(f"  {k} {v}" for k, v in self.fields.items())
        print(f"{self.what} {step}  {100 * self.done / self.total:3.0f}%{extra}  ETA {eta:.0f} s", file=self.stream,
              flush=True)
