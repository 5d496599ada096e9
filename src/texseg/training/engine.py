"""The parts of the training engine, each small: set-up, data, one step, a pure summary.

:func:`texseg.training.loop.train` wires them into a run (run directory, evaluation,
checkpoints); the learning-rate range test and anything else that trains uses the same
parts, so there is one way to build a model, draw a batch and take a step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

import texseg
from texseg.checkpoint import Counters, load_model
from texseg.data.folder import ImageFolderDataset, validate_folder
from texseg.data.scene import SceneSpec, generate, target_from_labels
from texseg.device import autocast_dtype, resolve_device
from texseg.evaluation.evaluate import LossFn
from texseg.models import count_parameters, create_model
from texseg.threads import ThreadGovernor, choose_threads
from texseg.training import distributed
from texseg.training.config import TrainConfig
from texseg.training.defaults import DeviceProfile, device_profile, pin_config, pinned_notes, resolve_defaults
from texseg.training.distributed import Distributed
from texseg.training.losses import PermutationInvariantLoss, create_loss
from texseg.training.memory import check_training_memory
from texseg.training.optim import create_optimizer, lr_factor, set_lr
from texseg.training.summary import RunSummary
from texseg.workers import available_cores


class BatchSource(Protocol):
    """Where training batches come from: reproducible from a seed, its position saveable."""

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """``(images (B,1,H,W) float, labels (B,1,H,W) int64)`` on the training device."""
        ...

    def get_state(self) -> Tensor:
        """The stream's position (a byte tensor), for a checkpoint."""
        ...

    def set_state(self, state: Tensor) -> None:
        """Continue from a position saved by :meth:`get_state`."""
        ...


def stream_seed(seed: int, stream: int) -> int:
    """The seed of scene stream ``stream`` of a run seeded ``seed`` (stream 0: ``seed`` itself)."""
    return seed if stream == 0 else (seed * 1_000_003 + stream * 7_919) % (2**63 - 1)


class SceneStream:
    """Batches of freshly generated scenes, drawn from independent seeded streams.

    Args:
        scene: what to draw.
        batch_size: images per batch, split evenly over the streams.
        seed: the run's seed.
        device: where the scenes are made.
        streams: the stream ids to draw from (a distributed rank ``r`` draws from ``[r]``;
            one process replaying an N-rank run from ``[0, ..., N-1]``).
    """

    def __init__(self, scene: SceneSpec, batch_size: int, seed: int, device: torch.device,
                 streams: tuple[int, ...] = (0,)) -> None:
        self.scene, self.device = scene, device
        self.per_stream = batch_size // len(streams)
        self.generators = [torch.Generator(device=device).manual_seed(stream_seed(seed, s)) for s in streams]

    def next_batch(self) -> tuple[Tensor, Tensor]:
        parts = [generate(self.scene, self.per_stream, generator=g, device=self.device) for g in self.generators]
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def get_state(self) -> Tensor:
        return torch.cat([g.get_state() for g in self.generators])

    def set_state(self, state: Tensor) -> None:
        for g, part in zip(self.generators, state.chunk(len(self.generators))):
            g.set_state(part.clone())


class FolderStream:
    """Batches of random crops (flips, rotations) of an image folder, drawn from a seeded generator."""

    def __init__(self, dataset: ImageFolderDataset, batch_size: int, seed: int, device: torch.device,
                 stream: int = 0) -> None:
        self.dataset, self.batch_size, self.device = dataset, batch_size, device
        self.generator = torch.Generator().manual_seed(stream_seed(seed, stream))

    def next_batch(self) -> tuple[Tensor, Tensor]:
        images, labels = self.dataset.sample(self.batch_size, self.generator)
        return images.to(self.device), labels.to(self.device)

    def get_state(self) -> Tensor:
        return self.generator.get_state()

    def set_state(self, state: Tensor) -> None:
        self.generator.set_state(state.clone())


@cache
def folder_datasets(data: str, val_data: str | None, val_fraction: float, val_seed: int, image_size: int,
                    num_regions: int, color: bool = False) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """(training, held-out) crops of an image folder, every file checked once before training.

    Raises:
        texseg.errors.DataError: each problem in one line naming the file.
        ValueError: the labels use another number of regions than ``num_regions`` (more or fewer).
    """
    found = validate_folder(data, min_size=image_size)
    if found.num_regions != num_regions:  # fewer too: a region no label ever shows cannot be learnt or scored
        raise ValueError(f"regions must be {found.num_regions} for the labels in {data} (values 0.."
                         f"{found.num_regions - 1}), got {num_regions}")
    found = replace(found, num_regions=num_regions)
    train_set = ImageFolderDataset(found, image_size, color=color)
    if val_data is None:
        return train_set.split(val_fraction, val_seed)
    held_out = validate_folder(val_data, num_regions=num_regions, min_size=image_size)
    return train_set, ImageFolderDataset(held_out, image_size, augment=False, color=color)


def _folder_sets(config: TrainConfig) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    return folder_datasets(config.data, config.val_data, config.val_fraction, config.val_seed, config.image_size,
                           config.regions, config.color)


@dataclass
class Trainer:
    """Everything a training step needs, built once by :func:`build_trainer`.

    ``config`` is the run's config with the device's defaults filled in (what ``config.json``
    records); ``defaults`` says which values came from the device and where they were measured.
    """

    config: TrainConfig
    device: torch.device
    num_regions: int
    model: nn.Module  # what trains: the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    loss_fn: LossFn
    amp_dtype: torch.dtype | None
    data: BatchSource
    dist: Distributed = field(default_factory=Distributed)
    matching: str = "none"  # "image" when label numbers are arbitrary: validation matches labels per image
    profile: DeviceProfile | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    forward: Callable[[Tensor], Tensor] | None = None  # the model's forward, compiled when `compile`
    notes: list[str] = field(default_factory=list)  # what this machine runs differently from the config's
    # follows the cores other programs leave free (CPU runs whose threads texseg chose; None: fixed threads)
    governor: ThreadGovernor | None = None

    def __post_init__(self) -> None:
        if self.profile is None:
            self.profile = device_profile(self.device)
        if self.forward is None:
            self.forward = self.model

    @property
    def precision(self) -> str:
        return "bf16" if self.amp_dtype is not None else "fp32"

    @property
    def module(self) -> nn.Module:
        """The model itself (what is saved and evaluated), without a DDP wrapper."""
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    @property
    def lr_factor(self) -> float:
        """How the learning rate scales with the number of ranks (``scale_lr``)."""
        w = self.dist.world_size
        return {"none": 1.0, "linear": float(w), "sqrt": w**0.5}[self.config.scale_lr]


def build_trainer(config: TrainConfig, data: BatchSource | None = None) -> Trainer:
    """Set up a run: device, threads, seeds, model, loss, optimizer and data source.

    Args:
        config: the run's settings (validated here).
        data: where batches come from; default: scenes of ``config.scene()`` drawn on the
            fly from ``config.seed``.

    Raises:
        ValueError: an invalid config, a missing device, or a run that cannot fit in memory.
    """
    auto_threads = config.threads is None
    config, device, d, defaults = _resolve_device(config)
    notes = pinned_notes(config, device, available_cores())
    check_training_memory(config, device)  # refuse up front rather than crash halfway
    torch.manual_seed(config.seed)  # initial weights: the same on every rank
    model = create_model(config.model, **config.model_init_kwargs)
    if config.init_from is not None:
        _load_initial_weights(model, config)
    # channels_last is the layout oneDNN/cuDNN convolutions are fastest in.
    model.to(device, memory_format=torch.channels_last)
    optimizer = create_optimizer(model, config)
    if d.active:
        if config.sync_batchnorm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # Compiled (or not) forward of what trains; the module itself stays what is saved and evaluated.
    forward = torch.compile(model) if config.compile else model
    k, any_labels = config.regions, config.labels == "any"
    return Trainer(
        config=config, device=device, num_regions=k, model=model, optimizer=optimizer,
        loss_fn=PermutationInvariantLoss(config.loss_name, k) if any_labels else create_loss(config.loss_name, k),
        amp_dtype=autocast_dtype(config.precision, device), data=_batch_source(config, data, device, d),
        dist=d, matching="image" if any_labels else "none", defaults=defaults, forward=forward, notes=notes,
        governor=ThreadGovernor(available_cores(), torch.get_num_threads(), torch.set_num_threads)
        if auto_threads and device.type == "cpu" and not d.active else None,
    )


def _resolve_device(config: TrainConfig) -> tuple[TrainConfig, torch.device, Distributed, dict[str, Any]]:
    """The device, the ranks and the config with the device's defaults filled in and pinned; torch's threads set.

    Returns:
        ``(config, device, dist, defaults)``: what :class:`Trainer` records.
    """
    config.validate()
    device = resolve_device(config.device)
    d = distributed.from_environment(device.type, config.dist_timeout)
    config, defaults = resolve_defaults(config, device)
    config.validate()  # the filled-in values must fit the rest (batch_size and streams)
    if d.active:
        if config.streams != 1:
            raise ValueError("streams must be 1 in a distributed run: every rank draws its own stream")
        if device.type == "cuda":
            device = torch.device("cuda", d.local_rank)
        if config.sync_batchnorm and device.type != "cuda":
            raise ValueError("sync_batchnorm needs CUDA (torch's SyncBatchNorm does not run on CPU ranks)")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    elif device.type == "cpu" and not d.active:  # a busy machine: one thread, not threads waiting for cores
        torch.set_num_threads(choose_threads(available_cores()))
    return pin_config(config, device), device, d, defaults  # config.json records what this machine decided


def _batch_source(config: TrainConfig, data: BatchSource | None, device: torch.device,
                  d: Distributed) -> BatchSource:
    """``data`` if given, else crops of the folder ``config.data``, else generated scenes (one stream per rank)."""
    streams = (d.rank,) if d.active else tuple(range(config.streams))
    if data is None and config.data is not None:
        if len(streams) > 1:
            raise ValueError("streams must be 1 when training on `data`")
        data = FolderStream(_folder_sets(config)[0], config.batch_size, config.seed, device, streams[0])
    return data if data is not None else SceneStream(config.scene(), config.batch_size, config.seed, device, streams)


def _load_initial_weights(model: nn.Module, config: TrainConfig) -> None:
    """Fine-tuning: the weights of run ``init_from``, whose model must be this run's."""
    source = load_model(config.init_from)
    info = source.run_info
    wanted = config.model_init_kwargs
    if info["name"] != config.model or info["kwargs"] != wanted:
        raise ValueError(f"init_from: {config.init_from} holds model {info['name']} {info['kwargs']}, "
                         f"not {config.model} {wanted}; give the same `model` and `model_kwargs`")
    model.load_state_dict(source.state_dict())


def validation_set(config: TrainConfig, device: torch.device) -> tuple[Tensor, Tensor]:
    """The run's fixed held-out set, as (images, targets): ``val_size`` scenes drawn from ``val_seed``,
    or ``val_size`` crops of the held-out images when training on a folder.

    Generated scenes are drawn once per process for each (scene, size, seed) and copied for each run
    (:func:`generated_validation_set`): an experiment's trials share their held-out set.
    """
    if config.data is not None:
        images, labels = _folder_sets(config)[1].sample(config.val_size, torch.Generator().manual_seed(config.val_seed))
    else:
        images, labels = generated_validation_set(config.scene(), config.val_size, config.val_seed)
    return images.to(device, copy=True), target_from_labels(labels, config.regions).to(device)


# Held-out sets up to this size are kept for the next run of the process (a few MB for the defaults).
CACHED_VALIDATION_BYTES = 64 * 2**20


def generated_validation_set(scene: SceneSpec, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """``size`` scenes drawn from ``seed`` (``(images, labels)`` on the CPU, not to be modified): drawn once
    per process while small (:data:`CACHED_VALIDATION_BYTES`), so the trials of an experiment, which share
    their held-out set, do not draw it again each."""
    if size * scene.image_size**2 * (3 if scene.color else 1) * 4 > CACHED_VALIDATION_BYTES:
        return generate(scene, size, generator=torch.Generator().manual_seed(seed))
    return _cached_validation_set(scene, size, seed)


@lru_cache(maxsize=4)
def _cached_validation_set(scene: SceneSpec, size: int, seed: int) -> tuple[Tensor, Tensor]:
    return generate(scene, size, generator=torch.Generator().manual_seed(seed))


def progress_fraction(config: TrainConfig, step: int, train_seconds: float) -> float:
    """How much of the run's budget is spent: the larger of the step and time fractions."""
    fractions = []
    if config.iterations:
        fractions.append(step / config.iterations)
    if config.time_budget:
        fractions.append(train_seconds / config.time_budget)
    return max(fractions)


def evaluation_due(config: TrainConfig, step: int, fraction: float, last_fraction: float) -> bool:
    """Whether to evaluate after ``step``: every ``eval_every`` steps, else at each ``1/evals`` of the run.

    Args:
        config: the run's settings.
        step: steps taken so far.
        fraction: the run's progress now (:func:`progress_fraction`).
        last_fraction: its progress at the last evaluation (0 for none).
    """
    if fraction >= 1.0:
        return True  # the end of the run is always evaluated
    if config.eval_every is not None:
        return step % config.eval_every == 0
    return int(fraction * config.evals) > int(last_fraction * config.evals)


# Default evaluation cadence (no eval_every): interim evaluations score the first INTERIM_VAL held-out
# images, the last one the whole set, and an evaluation waits while evaluating and checkpointing have
# taken more than EVAL_SHARE of the run's wall time (so short or slow runs are mostly training).
INTERIM_VAL = 16
EVAL_SHARE = 0.10


def evaluation_affordable(config: TrainConfig, overhead_seconds: float, train_seconds: float,
                          expected_seconds: float = 0.0) -> bool:
    """Whether a due interim evaluation fits the budget of :data:`EVAL_SHARE` of the wall time.

    Args:
        config: the run (an explicit ``eval_every`` is always honoured).
        overhead_seconds: time spent evaluating and checkpointing so far.
        train_seconds: training time so far.
        expected_seconds: what this evaluation is expected to take (a run of a few slow steps
            skips its interim evaluations rather than spend more on them than on training).
    """
    if config.eval_every is not None:
        return True
    return overhead_seconds + expected_seconds <= EVAL_SHARE / (1 - EVAL_SHARE) * train_seconds


# Default cadence: an interim evaluation writes a checkpoint (weights, resume state, summary; each file
# fsynced) only if the last one is at least this many seconds of wall time old. A Ctrl-C still saves
# the run where it stopped; a killed short run loses at most these seconds, and a trial of a few
# seconds (an experiment's) is not made half bookkeeping. An explicit ``eval_every`` checkpoints every time.
CHECKPOINT_SECONDS = 10.0


def checkpoint_due(config: TrainConfig, since_last: float | None) -> bool:
    """Whether an interim evaluation also writes a checkpoint.

    Args:
        config: the run (an explicit ``eval_every`` checkpoints at every evaluation).
        since_last: wall seconds since this process's last checkpoint (None: none yet).
    """
    return config.eval_every is not None or since_last is None or since_last >= CHECKPOINT_SECONDS


def expected_evaluation_seconds(images: int, per_image: float | None, step_seconds: float, batch_size: int) -> float:
    """Time an evaluation of ``images`` held-out images will take: as the last ones took per image, or
    before any, half a training step per ``batch_size`` images (a forward pass is about a third of a step)."""
    if per_image is not None:
        return images * per_image
    return 0.5 * step_seconds * images / max(1, batch_size)


def interim_images(config: TrainConfig, val_size: int, final: bool) -> int:
    """Held-out images an evaluation scores: all at the end or with an explicit ``eval_every``, else
    :data:`INTERIM_VAL`."""
    return val_size if final or config.eval_every is not None else min(val_size, INTERIM_VAL)


def scheduled_lr(config: TrainConfig, fraction: float, scale: float = 1.0) -> float:
    """The learning rate at ``fraction`` of the run under its schedule and warm-up (times ``scale``)."""
    return scale * config.lr * lr_factor(config.schedule, fraction, config.warmup)


@dataclass
class StepResult:
    """One training step, as tensors still on the device: reading them waits for the device.

    Attributes:
        loss: the batch's loss (0-dim, detached).
        grad_norm: the total gradient norm (0-dim; NaN when the loss was not finite).
        applied: whether the optimizer stepped (a guarded step with a non-finite loss or
            gradient is not applied).
    """

    loss: Tensor
    grad_norm: Tensor
    applied: bool = True

    def read(self) -> tuple[float, str | None]:
        """``(loss, problem)``: the loss as a number and what was not finite (None: nothing). One sync."""
        loss, norm = torch.stack([self.loss.double(), self.grad_norm.double()]).tolist()
        return loss, _problem(loss, norm)


def _problem(loss: float, grad_norm: float) -> str | None:
    if not math.isfinite(loss):
        return f"loss became {loss}"
    if not math.isfinite(grad_norm):
        return f"gradient norm became {grad_norm}"
    return None


def train_step(t: Trainer, lr: float, *, guard: bool = False) -> StepResult:
    """Draw a batch and take one optimisation step at learning rate ``lr``, without waiting for the device.

    Nothing here reads a value back from the device, so on CUDA the host queues the next
    steps while this one runs; the loss and gradient norm stay on the device (see
    :class:`StepTally`). Non-finite values are found when they are read: the training loop
    then stops the run as diverged and keeps its last checkpoint.

    Args:
        t: the trainer.
        lr: learning rate of this step.
        guard: read the loss and gradient norm before stepping (one synchronisation) and do not
            apply a step where either is NaN/inf: what ``skip_nonfinite`` needs. In a distributed
            run the ranks agree: a step is applied only where every rank's values are finite.
    """
    set_lr(t.optimizer, lr)
    images, labels = t.data.next_batch()
    with torch.autocast(t.device.type, dtype=t.amp_dtype or torch.float32, enabled=t.amp_dtype is not None):
        logits = t.forward(images.contiguous(memory_format=torch.channels_last))
    loss = t.loss_fn(logits, target_from_labels(labels, t.num_regions))  # losses compute in fp32
    t.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in t.model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=t.device)
    result = StepResult(loss.detach(), grad_norm.detach())
    if guard:
        _, problem = result.read()
        bad = t.dist.sum([float(problem is not None)])[0] if t.dist.active else float(problem is not None)
        if bad:
            t.optimizer.zero_grad(set_to_none=True)
            return StepResult(result.loss, result.grad_norm, applied=False)
    t.optimizer.step()
    return result


@dataclass
class Window:
    """What the steps since the last read amount to (from :meth:`StepTally.read`)."""

    steps: int
    seconds: float  # wall-clock time they took, the device's work included
    cpu_seconds: float  # CPU time this process got meanwhile (all its threads)
    loss_sum: float  # sum of the finite steps' losses
    finite_steps: int
    first_bad: int  # step number of the first non-finite step (0: none)
    problem: str | None  # what was not finite at that step


class StepTally:
    """The results of the steps since the last read, accumulated on the device.

    :meth:`add` queues a few tensor operations (no synchronisation); :meth:`read` waits for
    the device once and returns a :class:`Window`, the time included. Reading every step on
    a CPU costs nothing; on a GPU the loop reads every few steps (see
    :func:`texseg.training.defaults.sync_interval`).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._reset()

    def _reset(self) -> None:
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        self.loss_sum, self.finite = zero.clone(), zero.clone()
        self.first_bad, self.bad_loss, self.bad_norm = zero.clone(), zero.clone(), zero.clone()
        self.steps = 0
        self.restart_clock()

    def restart_clock(self) -> None:
        """Time from now on (what happened since the last read, e.g. an evaluation, is not training)."""
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def elapsed(self) -> float:
        """Host time since the last read (the device may still be behind)."""
        return time.perf_counter() - self.start

    def add(self, result: StepResult, step: int) -> None:
        """Count ``result``, the run's step number ``step``."""
        loss, norm = result.loss.double(), result.grad_norm.double()
        ok = torch.isfinite(loss) & torch.isfinite(norm)
        self.loss_sum += torch.where(ok, loss, 0.0)
        self.finite += ok
        first = (~ok) & (self.first_bad == 0)
        self.first_bad = torch.where(first, float(step), self.first_bad)
        self.bad_loss = torch.where(first, loss, self.bad_loss)
        self.bad_norm = torch.where(first, norm, self.bad_norm)
        self.steps += 1

    def read(self) -> Window:
        """Wait for the device, return the window's totals and start a new window."""
        loss_sum, finite, first_bad, bad_loss, bad_norm = torch.stack(
            [self.loss_sum, self.finite, self.first_bad, self.bad_loss, self.bad_norm]).tolist()
        window = Window(self.steps, time.perf_counter() - self.start, time.process_time() - self.cpu_start,
                        loss_sum, int(finite), int(first_bad), _problem(bad_loss, bad_norm) if first_bad else None)
        self._reset()
        return window


def all_finite(model: nn.Module) -> bool:
    """Whether every floating-point weight and buffer of ``model`` is finite."""
    return all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point())


# A run under these is flagged: its numbers are not those of a model that learnt the task.
MIN_STEPS = 50
CONSTANT_PREDICTION = 0.99
# Under this share of its threads' CPU time a run's time budget bought far fewer steps than usual.
BUSY_CPU_SHARE = 0.5


def cpu_share(cpu_seconds: float, wall_seconds: float, threads: int) -> float | None:
    """The share of ``threads`` cores' time a process got: CPU time / (wall time x threads); None if unmeasured."""
    if wall_seconds <= 0 or threads < 1:
        return None
    return cpu_seconds / (wall_seconds * threads)


def busy_machine_warning(share: float | None, threads: int) -> str | None:
    """The warning for a run that got under :data:`BUSY_CPU_SHARE` of its threads' CPU time (None: it did not)."""
    if share is None or share >= BUSY_CPU_SHARE:
        return None
    return (f"busy machine: this run got {share:.0%} of {threads} core(s) while it trained (other programs had "
            f"the rest); its time budget bought about {share:.0%} of the steps an idle machine gives, so its "
            "scores are not what this budget reaches")


def run_warnings(steps: int, metrics: dict[str, float], share: float | None = None, threads: int = 1) -> list[str]:
    """Why a run's results should not be read as a model's (empty when nothing is wrong).

    Args:
        steps: training steps taken.
        metrics: its latest held-out metrics.
        share: the CPU share it got while training (:func:`cpu_share`; None: not measured).
        threads: its torch threads.
    """
    out = []
    busy = busy_machine_warning(share, threads)
    if busy is not None:
        out.append(busy)
    share = metrics.get("majority_prediction")
    if share is not None and share >= CONSTANT_PREDICTION:
        out.append(f"trivial model: it puts {share:.1%} of held-out pixels in one region (its accuracy "
                   f"{metrics.get('accuracy', float('nan')):.3f} is the share of that region, not skill)")
    if steps < MIN_STEPS:
        out.append(f"only {steps} training step(s): too few for its scores to mean anything")
    return out


def run_summary(t: Trainer, c: Counters, status: str, message: str, last_val: dict[str, float],
                notes: list[str], share: float | None = None) -> RunSummary:
    """The ``summary.json`` of a run as it stands (a pure function of its state).

    Args:
        share: the share of its threads' CPU time the run got while training (:func:`cpu_share`).
    """
    config, threads = t.config, torch.get_num_threads()
    return RunSummary(
        status=str(status), message=message, model=config.model,
        model_kwargs=config.model_init_kwargs,
        parameters=count_parameters(t.module), iterations=c.step, world_size=t.dist.world_size,
        train_seconds=round(c.train_seconds, 3), eval_seconds=round(c.eval_seconds, 3),
        it_per_s=round(c.step / c.train_seconds, 3) if c.train_seconds else 0.0,
        skipped_steps=c.skipped_steps, val=last_val, val_size=config.val_size, val_seed=config.val_seed,
        device=str(t.device), precision=t.precision, threads=threads, torch_version=torch.__version__,
        cpu_share=None if share is None else round(share, 3), texseg_version=texseg.__version__, notes=notes,
        label_mode=config.labels, warnings=run_warnings(c.step, last_val, share, threads) if last_val else [],
        defaults=t.defaults, compiled=bool(config.compile), batch_size=config.batch_size, lr=config.lr,
    )
