"""Defaults chosen per device: what texseg measured to train best on each kind of hardware.

A run leaves ``batch_size``, ``lr`` and ``compile`` unset (None) to take them from the
profile of the hardware it runs on; :func:`resolve_defaults` fills them in once, in
:func:`texseg.training.engine.build_trainer`, and the run directory records the filled-in
values (``config.json``) and where they came from (``summary.json``, ``"defaults"``), so a
resumed or repeated run uses exactly what the first one used.

The numbers come from the benchmarks named in each profile's ``measured`` text; on hardware
where texseg has not been measured the profile says so.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from texseg.device import cpu_description, fast_bf16
from texseg.io import atomic_write_json, read_json
from texseg.training.config import TrainConfig

# Fields a run may leave to its device (None in the config).
DEVICE_FIELDS = ("model_kwargs", "batch_size", "lr", "compile")
# Fields whose value here means "decided where the run trains"; config.json records what was decided,
# so the same config trains the same way on another machine (or says what it cannot honour there).
PINNED_FIELDS: dict[str, Any] = {"precision": "auto", "device": "auto", "loss": None, "threads": None}


@dataclass(frozen=True)
class DeviceProfile:
    """How texseg trains on one kind of hardware.

    Attributes:
        hardware: ``cuda``, ``cpu-bf16`` (AMX or AVX512-BF16: bf16 autocast is fast) or
            ``cpu-fp32`` (everything else: fp32).
        batch_size: training images per step.
        lr: learning rate that goes with that batch size (Adam, cosine schedule).
        compile: whether ``torch.compile`` pays off within the default 30 s budget.
        eval_batch: held-out images per forward pass at evaluation.
        sync_every: training steps between two reads of the loss from the device (0: adaptive,
            about every :data:`SYNC_SECONDS`; 1: every step, free where the device is the CPU).
        measured: where these numbers come from.
        model_kwargs: constructor arguments per model name, for a run that gives none
            (models not listed: their own defaults).
        quick: values that replace the above for a run bounded by a time budget of at most
            ``quick_budget`` seconds (and no ``iterations``): where a cheaper model taking more
            steps wins in a short run but loses in a long one.
        quick_budget: seconds (see ``quick``).
    """

    hardware: str
    batch_size: int
    lr: float
    compile: bool
    eval_batch: int
    sync_every: int
    measured: str
    model_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    quick_budget: float = 0.0

    def values_for(self, config: TrainConfig) -> dict[str, Any]:
        """``model_kwargs`` (for ``config.model``), ``batch_size``, ``lr`` and ``compile`` for ``config``'s run."""
        values = {"model_kwargs": self.model_kwargs, "batch_size": self.batch_size, "lr": self.lr,
                  "compile": self.compile}
        if config.iterations is None and config.time_budget is not None and config.time_budget <= self.quick_budget:
            values.update(self.quick)
        return {**values, "model_kwargs": dict(values["model_kwargs"].get(config.model, {}))}


PROFILES: dict[str, DeviceProfile] = {
    # Runs of up to a minute: a quarter of the U-Net's compute per image and half the batch,
    # 3.7x the steps in 30 s, held-out IoU 0.9806 instead of 0.9756 (median of 3 seeds). Both
    # reach 0.9825 at 90 s; over 240 s the full U-Net wins (0.9866 vs 0.9836, 0.985 at 108 s vs 144 s).
    "cpu-fp32": DeviceProfile(
        "cpu-fp32", batch_size=4, lr=1e-2, compile=False, eval_batch=32, sync_every=1,
        quick={"batch_size": 2, "lr": 5e-3, "model_kwargs": {"unet": {"base_width": 8}}}, quick_budget=60.0,
        measured="benchmarks/bench_cpu_target.py on a 2-core AMD EPYC (AVX2, no AVX-512/AMX), torch 2.13: "
                 "after 30 s held-out IoU 0.9806 (unet base_width 8, batch 2, lr 5e-3: the default for time "
                 "budgets up to 60 s) vs 0.9756 (base_width 16, batch 4, lr 1e-2), median of 3 seeds; after 240 s "
                 "0.9836 vs 0.9866 (one seed: the default for longer runs)"),
    "cpu-bf16": DeviceProfile(
        "cpu-bf16", batch_size=4, lr=1e-2, compile=False, eval_batch=32, sync_every=1,
        measured="benchmarks/bench_train.py on a 2-core Intel Xeon with AMX, torch 2.13: held-out IoU 0.984 in 30 s"),
    "cuda": DeviceProfile(
        "cuda", batch_size=32, lr=1e-2, compile=False, eval_batch=256, sync_every=0,
        measured="benchmarks/gpu_check.sh on one NVIDIA H200: batch 32 reached held-out IoU 0.9927 in 30 s, "
                 "batch 4 0.9906; compile and larger batches not yet measured there"),
}

SYNC_SECONDS = 0.05  # adaptive sync: read the device about this often (the budget's precision)
MAX_SYNC_EVERY = 256


# A CPU with fast bf16 instructions but no AMX takes the bf16 path only where a calibration measured
# bf16 autocast at least this much faster than fp32 (texseg.training.calibrate).
BF16_MIN_SPEEDUP = 1.15
CALIBRATION_FILE = "calibration.json"


def calibration_key() -> str:
    """What a calibration holds for: the CPU's model, its relevant instruction sets and torch's version."""
    cpu = cpu_description()
    return f"{cpu['model'] or 'cpu'}|{','.join(cpu['flags'])}|{cpu['cores']} cores|torch {torch.__version__}"


def cache_dir() -> Path:
    """texseg's cache folder: ``$TEXSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/texseg``, else ``~/.cache/texseg``."""
    if os.environ.get("TEXSEG_CACHE_DIR"):
        return Path(os.environ["TEXSEG_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "texseg"


def read_calibration() -> dict[str, Any] | None:
    """This machine's cached calibration (:func:`calibration_key`), None if it has none (or it is unreadable)."""
    try:
        entry = read_json(cache_dir() / CALIBRATION_FILE).get(calibration_key())
    except (OSError, ValueError, AttributeError):
        return None
    return entry if isinstance(entry, dict) and entry.get("kind") in ("cpu-bf16", "cpu-fp32") else None


def write_calibration(result: dict[str, Any]) -> Path:
    """Store a calibration under its key, beside those of other machines sharing the cache; returns the file."""
    path = cache_dir() / CALIBRATION_FILE
    try:
        known = read_json(path)
    except (OSError, ValueError):
        known = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**(known if isinstance(known, dict) else {}), result["key"]: result})
    return path


def measured_cpu(device: torch.device) -> bool:
    """Whether texseg's profile for this CPU was measured on its kind: AMX for bf16, or no fast bf16 at all."""
    try:
        amx = bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:
        amx = False
    return amx or not fast_bf16(device)


def hardware_kind(device: torch.device) -> str:
    """The profile name of ``device``: ``cuda``, ``cpu-bf16`` or ``cpu-fp32``.

    A CPU with AVX512-BF16 but no AMX (not measured by texseg) takes ``cpu-bf16`` only where
    its calibration found bf16 faster, else the conservative ``cpu-fp32``.
    """
    if device.type == "cuda":
        return "cuda"
    if not fast_bf16(device):
        return "cpu-fp32"
    if measured_cpu(device):
        return "cpu-bf16"
    calibration = read_calibration()
    return calibration["kind"] if calibration is not None else "cpu-fp32"


def profile_source(device: torch.device) -> str:
    """How texseg's profile for ``device`` was chosen, in words (for ``texseg devices`` and summaries)."""
    if device.type == "cuda" or measured_cpu(device):
        return "measured on this kind of hardware (see `measured`)"
    calibration = read_calibration()
    if calibration is None:
        return ("not measured on this kind of CPU (fast bf16 without AMX): the conservative cpu-fp32 profile; "
                "`texseg devices --calibrate` measures bf16 against fp32 here (a few seconds, cached)")
    return (f"calibrated here on {calibration.get('date', '?')}: bf16 step {calibration.get('bf16_ms')} ms, fp32 "
            f"{calibration.get('fp32_ms')} ms (bf16 {calibration.get('bf16_speedup')}x; load average "
            f"{calibration.get('loadavg')}), so {calibration['kind']}")


# A CPU with AVX512-BF16 but no AMX that a calibration found faster in bf16: the cpu-bf16 profile, except for
# short runs, which keep cpu-fp32's small U-Net. Measured on a 2-core AMD EPYC (avx512_bf16, no AMX), one
# thread, equal time (steps in the ratio of the step times: full U-Net 70.7 ms in bf16, small one 24.1 ms in
# bf16, 24.5 ms in fp32), held-out IoU of seeds 1-3: the full U-Net in bf16 (batch 4, 415 steps)
# 0.9790/0.9794/0.9790, the small one in bf16 (batch 2, 1220 steps; what this profile trains)
# 0.9852/0.9816/0.9804, in fp32 (1200 steps) 0.9844/0.9804/0.9831. The 60-s switch is cpu-fp32's (not measured here).
CALIBRATED_BF16 = replace(
    PROFILES["cpu-bf16"], quick=dict(PROFILES["cpu-fp32"].quick), quick_budget=PROFILES["cpu-fp32"].quick_budget,
    measured=PROFILES["cpu-bf16"].measured + "; for time budgets up to 60 s on a CPU calibrated to bf16 without AMX, "
    "cpu-fp32's small U-Net (base_width 8, batch 2, lr 5e-3): on a 2-core AMD EPYC (avx512_bf16, no AMX) at equal "
    "time held-out IoU 0.9816 against 0.9790 for the full U-Net, both in bf16, median of 3 seeds")


def device_profile(device: torch.device) -> DeviceProfile:
    """The :class:`DeviceProfile` texseg uses on ``device`` (:data:`CALIBRATED_BF16` on a CPU calibrated to bf16)."""
    kind = hardware_kind(device)
    if kind == "cpu-bf16" and device.type == "cpu" and not measured_cpu(device):
        return CALIBRATED_BF16
    return PROFILES[kind]


def resolve_defaults(config: TrainConfig, device: torch.device) -> tuple[TrainConfig, dict[str, Any]]:
    """Fill the fields ``config`` leaves to the device (:data:`DEVICE_FIELDS`).

    Args:
        config: a run's settings; ``None`` in ``batch_size``, ``lr`` or ``compile`` means "the
            device's default".
        device: where the run trains.

    Returns:
        ``(resolved config, record)``; the record names the profile, the values it filled in
        and where they were measured (it goes into the run's summary).
    """
    profile = device_profile(device)
    chosen = profile.values_for(config)
    filled = {name: chosen[name] for name in DEVICE_FIELDS if getattr(config, name) is None}
    record = {"hardware": profile.hardware, "filled": filled, "measured": profile.measured,
              "source": profile_source(device), "profile": asdict(profile)}
    return replace(config, **filled), record


def pin_config(config: TrainConfig, device: torch.device) -> TrainConfig:
    """``config`` with :data:`PINNED_FIELDS` set to what this machine decided: precision (fp32/bf16), device
    type, loss and torch threads. A value already given is kept."""
    auto = "bf16" if hardware_kind(device) == "cpu-bf16" or (device.type == "cuda" and fast_bf16(device)) \
        else "fp32"
    return replace(
        config,
        precision=config.precision if config.precision != "auto" else auto,
        device=config.device if config.device != "auto" else device.type,
        loss=config.loss_name,
        threads=config.threads if config.threads is not None else torch.get_num_threads())


def pinned_notes(config: TrainConfig, device: torch.device, cores: int) -> list[str]:
    """What of a (pinned) config this machine runs differently from the one it came from.

    Args:
        config: the run's config after :func:`pin_config`.
        device: where it trains.
        cores: CPU cores this process may use.
    """
    notes = []
    if config.precision == "bf16" and not fast_bf16(device):
        notes.append(f"precision bf16 has no fast path on this {device.type} (no AVX512-BF16/AMX or bf16 GPU): "
                     "it is emulated, the same arithmetic but slower, so a time budget buys fewer steps")
    if device.type == "cpu" and config.threads is not None and config.threads > cores:
        notes.append(f"threads {config.threads} is more than the {cores} core(s) here: the threads share them "
                     "(the results are the same, a time budget buys fewer steps); set threads to change it")
    return notes


def sync_interval(profile: DeviceProfile, config: TrainConfig, step_seconds: float | None) -> int:
    """Training steps to queue before the next read of the device's results.

    Args:
        profile: the device's profile.
        config: the run (``sync_every`` set there wins; ``skip_nonfinite`` needs every step).
        step_seconds: the measured time of one step so far (None before the first read).
    """
    if config.skip_nonfinite:
        return 1  # whether a step may be applied is known only once its loss is read
    fixed = config.sync_every if config.sync_every is not None else profile.sync_every
    if fixed:
        return fixed
    if not step_seconds:
        return 1
    return max(1, min(MAX_SYNC_EVERY, int(SYNC_SECONDS / step_seconds)))
