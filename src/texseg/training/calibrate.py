"""A few seconds' measurement of a CPU texseg has no profile for: is bf16 autocast faster than fp32 here?

texseg's ``cpu-bf16`` profile was measured on an Intel Xeon with AMX. A CPU with AVX512-BF16
but no AMX (AMD EPYC Genoa, for one) has fast bf16 dot products but not AMX's tiles, so
which precision trains faster there is a measurement, not a guess: :func:`calibrate_cpu`
times the default training step in fp32 and in bf16, interleaved (so both see the same
machine load), and caches the verdict per machine (:func:`texseg.training.defaults.calibration_key`:
CPU model, instruction sets and torch version) in the user's cache folder. Until a CPU is
calibrated it gets the conservative ``cpu-fp32`` profile.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace
from typing import Any

import torch

from texseg.training.config import TrainConfig
from texseg.training.defaults import BF16_MIN_SPEEDUP, calibration_key, write_calibration
from texseg.training.engine import BUSY_CPU_SHARE, build_trainer, train_step


def calibrate_cpu(seconds: float = 4.0, save: bool = True) -> dict[str, Any]:
    """Time the default training step (U-Net, batch 4, 128x128) in fp32 and bf16 on this CPU.

    A machine too busy to measure (this process got under half of its threads' CPU time) gives
    a result marked ``"trusted": False`` that is not saved: the conservative profile stays.

    Args:
        seconds: about how long to measure (both precisions together; at least 3 steps each).
        save: write a trusted verdict to the cache (:func:`texseg.training.defaults.write_calibration`).

    Returns:
        ``{"key", "fp32_ms", "bf16_ms", "bf16_speedup", "kind", "cpu_share", "trusted", "loadavg", "date"}``:
        median step times, fp32 time / bf16 time, and the profile chosen (``cpu-bf16`` when bf16 is at
        least :data:`BF16_MIN_SPEEDUP` times faster, else ``cpu-fp32``).
    """
    base = TrainConfig(device="cpu", model_kwargs={}, batch_size=4, lr=1e-2, compile=False, figures=False)
    trainers = {p: build_trainer(replace(base, precision=p)) for p in ("fp32", "bf16")}
    for t in trainers.values():
        train_step(t, 1e-3).read()  # first-call allocations are not the step's cost
    times: dict[str, list[float]] = {p: [] for p in trainers}
    started, cpu_started = time.perf_counter(), time.process_time()
    while min(len(v) for v in times.values()) < 3 or time.perf_counter() - started < seconds:
        for precision, t in trainers.items():  # interleaved: a change of load hits both
            step_start = time.perf_counter()
            train_step(t, 1e-3).read()
            times[precision].append(time.perf_counter() - step_start)
    share = (time.process_time() - cpu_started) / ((time.perf_counter() - started) * torch.get_num_threads())
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    speedup = fp32 / bf16
    result = {"key": calibration_key(), "fp32_ms": round(1e3 * fp32, 2), "bf16_ms": round(1e3 * bf16, 2),
              "bf16_speedup": round(speedup, 3), "kind": "cpu-bf16" if speedup >= BF16_MIN_SPEEDUP else "cpu-fp32",
              "steps": len(times["fp32"]), "cpu_share": round(share, 3), "trusted": share >= BUSY_CPU_SHARE,
              "loadavg": round(os.getloadavg()[0], 2), "threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if save and result["trusted"]:
        write_calibration(result)
    return result
