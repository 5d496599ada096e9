"""Training texture-agnostic embedding networks (``texnet``) on procedural collages.

The recipe behind ``texseg:general``: a :class:`~texseg.models.texnet.TextureEmbeddingNet`
learns per-pixel embeddings with the *discriminative loss* (De Brabandere, Neven & Van
Gool, 2017) on scenes of :mod:`texseg.data.procedural` -- every scene new textures, K
from 2 to 8 -- so that what it learns is "these two pixels carry the same texture", not
a list of textures. The loss, per image, with region means ``mu_c``:

- pull: pixels within ``delta_v`` of their region's mean cost nothing, farther ones
  ``(|e - mu_c| - delta_v)^2``;
- push: two region means closer than ``2 delta_d`` cost ``(2 delta_d - |mu_a - mu_b|)^2``;
- a small pull of the means towards 0 keeps the embedding bounded.

Label numbers never enter it: any permutation of the regions gives the same loss, and
K varies per image. Validation groups each image's embeddings with k-means (K known)
and scores the per-image matched mIoU on three sets: collages of the training families,
collages of the held-out family (``holdout``: never trained on) and, if given, a folder
of real-texture images with masks (model choice on real photographs).

One loop, read top to bottom in :func:`train_general`. It writes only the run itself:
``config.json``, ``model.json`` + ``model.safetensors`` (the latest weights),
``metrics.csv``, ``summary.json`` and ``resume.pt`` (model, optimizer, RNG and step:
``resume=True`` continues exactly). Everything else is a :class:`GeneralCallback`, told of
the start, each validation and the end, as the callbacks of :func:`texseg.training.train`
are: :class:`KeepBestEmbeddings` (``best/``, the weights of the best validation score),
:class:`GeneralEarlyStopping` (``early_stop``), :class:`ProgressLines` (a line per validation).
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from texseg._validate import check_choice, check_int, check_positive
from texseg.checkpoint import load_model, load_pretrained, save_model
from texseg.data.folder import ImageFolderDataset, validate_folder
from texseg.data.procedural import FAMILIES, CollageSpec, generate_collage
from texseg.errors import CheckpointError, DataError
from texseg.evaluation.region_metrics import region_metrics
from texseg.inference.embedding import embed
from texseg.inference.grouping import cluster_embeddings
from texseg.io import atomic_write_bytes, atomic_write_json, read_json, write_csv
from texseg.models.texnet import TextureEmbeddingNet
from texseg.signals import stop_requested
from texseg.threads import ThreadGovernor, choose_threads, thread_changes_note
from texseg.training.engine import busy_machine_warning, cpu_share
from texseg.training.rundir import RunStatus
from texseg.training.state import Evaluation, Stop
from texseg.workers import available_cores

__all__ = ["GeneralCallback", "GeneralConfig", "GeneralResult", "GeneralState",
           "KeepBestEmbeddings", "ProgressLines", "GeneralEarlyStopping", "default_general_callbacks",
           "discriminative_loss", "train_general", "validate_general"]

MAX_REGIONS = 8


@dataclass
class GeneralConfig:
    """Settings of :func:`train_general` (``texseg train-general`` flags of the same names).

    Attributes:
        steps: optimisation steps in all.
        time_budget: seconds of training, or None (the run ends at whichever comes first).
        batch_size, image_size, lr, weight_decay: the optimisation (AdamW, cosine schedule
            with a warm-up of 2% of the steps).
        embedding_dim, width, dilations: the network (:class:`TextureEmbeddingNet`).
        min_regions, max_regions: K of the training collages.
        holdout: a family never trained on, for leave-one-family-out validation (or None).
        gaussian_scenes: the fraction of training scenes drawn as the notebook draws them
            (:class:`~texseg.data.procedural.CollageSpec`): textures that differ only a little.
        nonstationary: the fraction of regions of the training collages whose texture drifts
            as in a photograph (perspective and shading; :class:`CollageSpec`).
        delta_v, delta_d: the discriminative loss's margins.
        val_size: images of each validation set; eval_every: steps between validations.
        early_stop: stop once the validation score has not improved for this many
            validations (None: never; :class:`GeneralEarlyStopping`), as ``texseg train``'s.
        val_data: a folder of real images with masks (``images/`` + ``masks/``) to validate on.
        data: fine-tuning on your own images: a folder in ``texseg train --data``'s layout;
            half of each batch is crops of its images (a fifth of the files held out for
            validation), half collages (so the model keeps what it knew).
        init_from: start from these weights (``texseg:general`` or a train-general run folder).
        seed: seeds the weights and the data stream; threads: torch threads (None: the cores
            other programs leave free, followed during the run, as ``texseg train`` chooses).
    """
    steps: int = 20_000
    time_budget: float | None = None
    batch_size: int = 8
    image_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    embedding_dim: int = 8
    width: int = 48
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 1, 2, 4, 8, 16)
    min_regions: int = 2
    max_regions: int = 5
    holdout: str | None = "cells"
    gaussian_scenes: float = 0.0
    nonstationary: float = 0.0
    delta_v: float = 0.5
    delta_d: float = 1.5
    val_size: int = 32
    eval_every: int = 500
    early_stop: int | None = None
    val_data: str | None = None
    data: str | None = None
    init_from: str | None = None
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=1)
        if self.time_budget is not None:
            check_positive("time_budget", self.time_budget)
        check_int("batch_size", self.batch_size, 1, 4096)
        check_int("image_size", self.image_size, 32, 4096)
        check_positive("lr", self.lr)
        if not 0 <= self.weight_decay < 1:
            raise ValueError(f"weight_decay must be in [0, 1), got {self.weight_decay!r}")
        self.dilations = tuple(self.dilations)
        TextureEmbeddingNet(embedding_dim=self.embedding_dim, width=self.width, dilations=self.dilations)
        check_int("min_regions", self.min_regions, 2, MAX_REGIONS)
        check_int("max_regions", self.max_regions, self.min_regions, MAX_REGIONS)
        if self.holdout is not None:
            check_choice("holdout", self.holdout, FAMILIES)
        check_positive("delta_v", self.delta_v)
        if not self.delta_d > self.delta_v:
            raise ValueError(f"delta_d must be > delta_v ({self.delta_v}), got {self.delta_d!r}")
        check_int("val_size", self.val_size, 1, 10_000)
        check_int("eval_every", self.eval_every, minimum=1)
        if self.early_stop is not None:
            check_int("early_stop", self.early_stop, minimum=1)
        if self.val_data is not None and not Path(self.val_data).is_dir():
            raise ValueError(f"val_data must be a folder with images/ and masks/, got {self.val_data!r}")
        if self.data is not None and not Path(self.data).is_dir():
            raise ValueError(f"data must be a folder of images with label masks, got {self.data!r}")
        check_int("seed", self.seed, minimum=0)
        if self.threads is not None:
            check_int("threads", self.threads, 1, 1024)
        self.collage()  # the collage fields (gaussian_scenes, nonstationary) are checked there

    def collage(self, validation: str = "train") -> CollageSpec:
        """The collages of the training stream (``train``) or of a validation set."""
        exclude = (self.holdout,) if self.holdout else ()
        if validation == "holdout":
            return CollageSpec(self.image_size, 2, self.max_regions, families=(self.holdout,))
        return CollageSpec(self.image_size, self.min_regions, self.max_regions, exclude=exclude,
                           gaussian_scenes=self.gaussian_scenes, nonstationary=self.nonstationary)

    def model_kwargs(self) -> dict[str, Any]:
        return {"embedding_dim": self.embedding_dim, "width": self.width, "dilations": list(self.dilations)}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneralConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass
class GeneralResult:
    """What :func:`train_general` returns (and writes to ``summary.json``).

    Attributes:
        status: ``completed`` (all steps, or a callback's stop such as ``early_stop``),
            ``stopped`` (time budget or a stop signal), ``diverged``, or ``pruned`` (a
            callback gave the run up: ``Stop(reason, RunStatus.PRUNED)``).
        message: why it ended, when it was not simply all steps.
        cpu_share: CPU time over (training wall time x threads) of this session of the run
            (None: not measured; a resume that trains nothing keeps the share recorded before);
            under 0.5 the machine was busy, and ``notes`` says so.
        notes: warnings for the run's reader.
    """
    run_dir: str
    status: str
    steps: int
    train_seconds: float
    eval_seconds: float
    best_step: int
    best_score: float
    last_validation: dict[str, float] = field(default_factory=dict)
    message: str = ""
    cpu_share: float | None = None
    notes: list[str] = field(default_factory=list)


class GeneralCallback:
    """Base class of :func:`train_general`'s callbacks; override what you need (each default does nothing).

    The events are those of :class:`texseg.training.callbacks.Callback`, with the same
    :class:`~texseg.training.state.Evaluation`: its ``metrics`` are each validation set's
    per-image matched mIoU and their mean ``score``, ``improved`` says whether ``score`` is
    the best so far, ``images`` how many images were scored. Callbacks read the
    :class:`GeneralState` and write their own files; they must not change the model, the
    optimizer or the counters.
    """

    def on_start(self, state: GeneralState) -> None:
        """The run folder exists (``config.json`` written; a resumed run restored); training begins."""

    def on_evaluation(self, state: GeneralState, evaluation: Evaluation) -> Stop | None:
        """After each validation, before its checkpoint is saved.

        Returns:
            A :class:`~texseg.training.state.Stop` to end the run now (it is still
            checkpointed; its status becomes the run's), or None to carry on.
        """
        return None

    def on_end(self, state: GeneralState, result: GeneralResult) -> None:
        """The run has ended; its final checkpoint and ``summary.json`` are written."""

    def close(self) -> None:
        """Release what the callback holds; called last, also when training raised."""


class KeepBestEmbeddings(GeneralCallback):
    """The weights of the best validation score so far in ``RUN/best/`` (a loadable model folder)."""

    def on_evaluation(self, state: GeneralState, evaluation: Evaluation) -> Stop | None:
        if evaluation.improved:
            (state.run / "best").mkdir(exist_ok=True)
            state.save_weights(state.run / "best")
        return None


class GeneralEarlyStopping(GeneralCallback):
    """``early_stop``: stop (status ``completed``) once ``patience`` scheduled validations (every
    ``eval_every`` steps) in a row have not beaten the best of them.

    Only the scheduled validations count, not the extra one a stop (time budget, Ctrl-C)
    takes: a run stopped and resumed then stops where the same run uninterrupted stops.
    Resuming a run this stopped trains to the next validation and stops again unless it is better.
    """

    def __init__(self, patience: int) -> None:
        self.patience = check_int("patience", patience, minimum=1)

    def on_evaluation(self, state: GeneralState, evaluation: Evaluation) -> Stop | None:
        scheduled = [row for row in state.rows if row["step"] % state.config.eval_every == 0]
        if not scheduled:
            return None
        best = max(range(len(scheduled)), key=lambda i: (scheduled[i]["score"], -i))  # the first of the best
        stale = len(scheduled) - 1 - best
        if stale < self.patience:
            return None
        return Stop(f"stopped early after step {evaluation.step}: no better validation score in {stale} "
                    f"validations (best {scheduled[best]['score']:.4f} at step {scheduled[best]['step']})")


class ProgressLines(GeneralCallback):
    """One line per validation (step, time, loss, each set's score) to ``write`` (e.g. ``print``)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def on_evaluation(self, state: GeneralState, evaluation: Evaluation) -> Stop | None:
        self.write(f"step {evaluation.step}/{state.config.steps}  {evaluation.train_seconds:.0f} s  "
                   f"loss {evaluation.row['loss']:.4f}  "
                   + "  ".join(f"{k} {v:.3f}" for k, v in evaluation.metrics.items()))
        return None


def default_general_callbacks(config: GeneralConfig) -> list[GeneralCallback]:
    """:class:`KeepBestEmbeddings`, then :class:`GeneralEarlyStopping` when ``config.early_stop`` is set."""
    out: list[GeneralCallback] = [KeepBestEmbeddings()]
    if config.early_stop is not None:
        out.append(GeneralEarlyStopping(config.early_stop))
    return out


# ---------------------------------------------------------------- the loss

def discriminative_loss(embeddings: Tensor, labels: Tensor, delta_v: float = 0.5, delta_d: float = 1.5,
                        max_regions: int = MAX_REGIONS, reg_weight: float = 1e-3) -> Tensor:
    """Discriminative loss of per-pixel embeddings, averaged over images.

    Args:
        embeddings: (B, D, H, W).
        labels: (B, 1, H, W) or (B, H, W) int64 in 0..max_regions-1; K may differ per image
            and label numbers carry no meaning.
        delta_v, delta_d: pull and push margins.
        max_regions: the largest label + 1 that can occur (fixed, so no host sync).
        reg_weight: weight of the pull of region means towards 0.

    Returns:
        Scalar float32 tensor.
    """
    b, d = embeddings.shape[:2]
    e = embeddings.float().flatten(2)  # (B, D, P)
    onehot = F.one_hot(labels.reshape(b, -1), max_regions).float()  # (B, P, K)
    counts = onehot.sum(1)  # (B, K)
    present = (counts > 0).float()
    n_present = present.sum(1).clamp(min=1)
    means = torch.einsum("bdp,bpk->bkd", e, onehot) / counts.clamp(min=1)[..., None]  # (B, K, D)
    # pull: each pixel towards its region's mean
    pixel_means = torch.einsum("bpk,bkd->bdp", onehot, means)
    dist = (e - pixel_means).pow(2).sum(1).add(1e-8).sqrt()  # (B, P)
    pull = F.relu(dist - delta_v).pow(2)
    per_region = torch.einsum("bp,bpk->bk", pull, onehot) / counts.clamp(min=1)
    l_var = (per_region.sum(1) / n_present).mean()
    # push: region means apart (a square root of a sum that is never 0, for a finite gradient)
    diff = means[:, :, None, :] - means[:, None, :, :]
    mean_dist = diff.pow(2).sum(-1).add(1e-8).sqrt()  # (B, K, K)
    pairs = present[:, :, None] * present[:, None, :] * (1 - torch.eye(max_regions, device=e.device))
    push = F.relu(2 * delta_d - mean_dist).pow(2) * pairs
    l_dist = (push.sum((1, 2)) / pairs.sum((1, 2)).clamp(min=1)).mean()
    l_reg = ((means.pow(2).sum(-1).add(1e-8).sqrt() * present).sum(1) / n_present).mean()
    return l_var + l_dist + reg_weight * l_reg


# ---------------------------------------------------------------- validation

def validation_sets(config: GeneralConfig, held_out: ImageFolderDataset | None = None
                    ) -> dict[str, tuple[Tensor, Tensor]]:
    """The fixed validation sets: name -> (images (B,1,N,N), labels (B,1,N,N)).

    ``held_out``: the held-out part of ``config.data`` when the caller has split it already
    (:func:`folder_split`), so the folder is checked once.
    """
    sets = {}
    gen = torch.Generator().manual_seed(987_654_321)
    sets["collages"] = generate_collage(config.collage(), config.val_size, generator=gen)
    if config.holdout:
        gen = torch.Generator().manual_seed(987_654_322)
        sets[f"holdout-{config.holdout}"] = generate_collage(config.collage("holdout"), config.val_size,
                                                             generator=gen)
    if config.val_data:
        try:
            images, labels = _read_suite_folder(config.val_data)
        except DataError as e:  # say which setting (the CLI: --val-data)
            raise DataError(f"val_data: {e}") from None
        sets["real"] = (images[: config.val_size], labels[: config.val_size])
    if config.data:
        held_out = folder_split(config)[1] if held_out is None else held_out
        sets["data"] = held_out.sample(config.val_size, torch.Generator().manual_seed(987_654_323))
    return sets


def folder_split(config: GeneralConfig) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """(training, held-out) crops of ``config.data`` (files checked once, a fifth held out)."""
    try:
        found = validate_folder(config.data, min_size=config.image_size)
    except DataError as e:
        raise DataError(f"data: {e}") from None
    if found.num_regions > MAX_REGIONS:
        raise ValueError(f"data: labels of {config.data} have {found.num_regions} regions; a texnet learns "
                         f"at most {MAX_REGIONS}")
    dataset = ImageFolderDataset(found, config.image_size)
    return dataset.split(0.2, config.seed) if len(dataset) >= 2 else (dataset, dataset)


def _read_suite_folder(folder: str) -> tuple[Tensor, Tensor]:
    """All images (B, 1, H, W) and labels of an ``images/`` + ``masks/`` folder (one size)."""
    found = validate_folder(folder)
    dataset = ImageFolderDataset(found, min(min(s) for s in found.sizes), augment=False)
    pairs = [dataset.full(i) for i in range(len(dataset))]
    return torch.stack([p[0] for p in pairs])[:, None], torch.stack([p[1] for p in pairs])[:, None]


def validate_general(model: TextureEmbeddingNet, sets: dict[str, tuple[Tensor, Tensor]], batch_size: int = 8
                     ) -> dict[str, float]:
    """Per-image matched mIoU of k-means (true K per image) on each set, and their mean ``score``."""
    out = {}
    for name, (images, labels) in sets.items():
        # deployment's forward pass (texseg.inference.inferer), in fp32 on every CPU; eval mode inside
        embeddings = embed(model, images, batch_size, "fp32")
        scores = []
        for e, truth in zip(embeddings, labels[:, 0].numpy()):
            k = len(np.unique(truth))
            scores.append(region_metrics(truth, cluster_embeddings(e, k).numpy(), k)["miou"])
        out[name] = float(np.mean(scores))
    out["score"] = float(np.mean(list(out.values())))
    return out


# ---------------------------------------------------------------- state on disk

RESUME = "resume.pt"
CONFIG = "config.json"


def _save_resume(run_dir: Path, model: TextureEmbeddingNet, opt: torch.optim.Optimizer, data_gen: torch.Generator,
                 step: int, seconds: float, best: tuple[int, float]) -> None:
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "data_rng": data_gen.get_state(),
                "torch_rng": torch.get_rng_state(), "step": step, "seconds": seconds,
                "best_step": best[0], "best_score": best[1]}, buffer)
    atomic_write_bytes(run_dir / RESUME, buffer.getvalue())


def _load_initial(model: TextureEmbeddingNet, init_from: str) -> None:
    try:
        source = load_pretrained(init_from) if init_from.startswith("texseg:") else load_model(init_from)
    except (ValueError, CheckpointError) as e:  # say which setting it is about (the CLI: --init-from)
        raise ValueError(f"init_from: {e}") from None
    if not isinstance(source, TextureEmbeddingNet) or source.config() != model.config():
        raise ValueError(f"init_from: {init_from} is not a texnet with the settings of this run "
                         f"({model.config()})")
    model.load_state_dict(source.state_dict())


def _batch(config: GeneralConfig, collage: CollageSpec, folder: ImageFolderDataset | None,
           generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One training batch: collages, or (fine-tuning) half folder crops and half collages."""
    if folder is None:
        return generate_collage(collage, config.batch_size, generator=generator)
    own = (config.batch_size + 1) // 2
    images, labels = folder.sample(own, generator)
    if own == config.batch_size:
        return images, labels
    more = generate_collage(collage, config.batch_size - own, generator=generator)
    return torch.cat([images, more[0]]), torch.cat([labels, more[1]])


def _lr(config: GeneralConfig, fraction: float) -> float:
    warmup = 0.02
    if fraction < warmup:
        return config.lr * fraction / warmup
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (fraction - warmup) / (1 - warmup))))


# ---------------------------------------------------------------- the loop

@dataclass
class GeneralState:
    """A texnet run in progress: what :func:`train_general`'s stages and its callbacks share.

    Attributes:
        config, run: the settings and the run folder.
        model, opt, data_gen: the network, its AdamW optimizer and the collage stream's generator.
        rows: the rows of ``metrics.csv`` so far; step, seconds: steps and training seconds;
        best: (step, score) of the best validation so far.
    """

    config: GeneralConfig
    run: Path
    model: TextureEmbeddingNet
    opt: torch.optim.Optimizer
    data_gen: torch.Generator
    collage: CollageSpec
    folder: ImageFolderDataset | None = None
    sets: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    seconds: float = 0.0
    eval_seconds: float = 0.0
    best: tuple[int, float] = (0, -1.0)
    last_val: dict[str, float] = field(default_factory=dict)
    # this session's training: CPU seconds of the process and wall seconds x threads (for the CPU share)
    cpu_seconds: float = 0.0
    thread_seconds: float = 0.0
    # follows the cores other programs leave free (threads chosen by texseg; None: fixed threads)
    governor: ThreadGovernor | None = None
    thread_changes: list[tuple[int, int]] = field(default_factory=list)  # (step, threads from then on)
    start_threads: int = 1

    def save_weights(self, folder: Path) -> None:
        """The current weights as a loadable model folder."""
        save_model(self.model, folder, name="texnet", kwargs=self.config.model_kwargs(), num_regions=2,
                   scene={"collage": asdict(self.collage)})

    def checkpoint(self) -> None:
        """The latest weights, ``resume.pt`` and the metrics so far."""
        self.save_weights(self.run)
        _save_resume(self.run, self.model, self.opt, self.data_gen, self.step, self.seconds, self.best)
        atomic_write_json(self.run / "metrics.json", self.rows)
        write_csv(self.run / "metrics.csv", self.rows)


def train_general(config: GeneralConfig, run_dir: str | os.PathLike[str], *, resume: bool = False,
                  log: Callable[[str], None] | None = None,
                  callbacks: Sequence[GeneralCallback] | None = None) -> GeneralResult:
    """Train a texnet on procedural collages; see the module docstring.

    Args:
        config: the settings.
        run_dir: the run folder (created; an existing run is refused unless ``resume``).
        resume: continue the run in ``run_dir`` exactly where its last checkpoint left it.
        log: gets a progress line at each validation (:class:`ProgressLines`, after ``callbacks``).
        callbacks: what the run writes or decides besides the run itself; default
            :func:`default_general_callbacks` (``best/``, ``early_stop``); ``[]``: nothing else.

    Returns:
        The :class:`GeneralResult`, also written to ``summary.json``.
    """
    run = Path(run_dir)
    _check_run_dir(config, run, resume)
    extra = [ProgressLines(log)] if log else []
    hooks = [*(default_general_callbacks(config) if callbacks is None else callbacks), *extra]
    try:
        # set-up
        r = _start_general(config, run, resume)
        for cb in hooks:
            cb.on_start(r)
        status, message = RunStatus.COMPLETED.value, ""
        while r.step < config.steps:
            # one step
            loss = _general_step(r)
            if loss is None:
                status, message = RunStatus.DIVERGED.value, f"the loss was not finite at step {r.step + 1}"
                break
            out_of_time = config.time_budget is not None and r.seconds >= config.time_budget
            # validation, then the callbacks (best weights, early stop, progress), then a checkpoint
            if r.step % config.eval_every == 0 or r.step == config.steps or out_of_time or stop_requested():
                stop = _validate_general(r, loss, hooks)
                if stop is not None:
                    status, message = stop.status.value, stop.reason
                    break
            if out_of_time or stop_requested():
                status, message = "stopped", "the time budget is spent" if out_of_time else "a stop signal"
                break
        # finish
        result = _finish_general(r, status, message)
        for cb in hooks:
            cb.on_end(r, result)
        return result
    finally:
        for cb in hooks:
            cb.close()


def _finish_general(r: GeneralState, status: str, message: str) -> GeneralResult:
    """The last checkpoint and ``summary.json`` (with a note when the machine was busy)."""
    r.checkpoint()
    threads = torch.get_num_threads()
    share = cpu_share(r.cpu_seconds, r.thread_seconds, 1)  # thread-seconds: the governor may change threads
    if share is None and (r.run / "summary.json").is_file():
        # a resume with nothing left to train measured nothing: the run's share is the one it had
        share = read_json(r.run / "summary.json").get("cpu_share")
    busy = busy_machine_warning(share, threads)
    result = GeneralResult(str(r.run), status, r.step, round(r.seconds, 1), round(r.eval_seconds, 1), r.best[0],
                           round(r.best[1], 4), r.last_val, message, None if share is None else round(share, 3),
                           [busy] if busy else [])
    if r.thread_changes:
        result.notes.append(thread_changes_note(r.start_threads, r.thread_changes))
    atomic_write_json(r.run / "summary.json", asdict(result))
    return result


def _check_run_dir(config: GeneralConfig, run: Path, resume: bool) -> None:
    """Refuse a folder that holds a run (unless ``resume``), or a resume with other settings than the run's."""
    if resume:
        if not (run / RESUME).is_file():
            raise ValueError(f"resume: {run} holds no {RESUME} to continue from")
        saved = GeneralConfig.from_dict(read_json(run / CONFIG))
        if saved != config:
            changed = [f.name for f in fields(config) if getattr(saved, f.name) != getattr(config, f.name)
                       and f.name not in ("steps", "time_budget", "early_stop")]
            if changed:
                raise ValueError(f"resume: {', '.join(changed)} differ from the run's config.json")
    elif (run / CONFIG).exists():
        raise ValueError(f"run_dir: {run} already holds a run; resume it or choose another folder")


def _start_general(config: GeneralConfig, run: Path, resume: bool) -> GeneralState:
    """Model, optimizer and data stream: new (``config.json`` written), or restored from ``resume.pt``."""
    # as texseg train: the cores other programs leave free, followed during the run
    torch.set_num_threads(config.threads or choose_threads(available_cores()))
    torch.manual_seed(config.seed)
    model = TextureEmbeddingNet(**config.model_kwargs())
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    r = GeneralState(config, run, model, opt, torch.Generator().manual_seed(config.seed + 1), config.collage())
    r.start_threads = torch.get_num_threads()
    if config.threads is None:
        r.governor = ThreadGovernor(available_cores(), r.start_threads, torch.set_num_threads)
    # the folders read and checked before anything is written: a bad one leaves no half-made run
    r.folder, held_out = folder_split(config) if config.data else (None, None)
    r.sets = validation_sets(config, held_out)
    if resume:
        state = torch.load(run / RESUME, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        r.data_gen.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        r.step, r.seconds, r.best = state["step"], state["seconds"], (state["best_step"], state["best_score"])
    else:
        if config.init_from:
            _load_initial(model, config.init_from)
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run / CONFIG, config.to_dict())
    if resume and (run / "metrics.json").is_file():
        r.rows = read_json(run / "metrics.json")
    model.train()
    return r


def _general_step(r: GeneralState) -> float | None:
    """One optimisation step; its loss, or None (nothing applied) when the loss is not finite."""
    config, opt = r.config, r.opt
    start = time.perf_counter()
    with _one_thread():  # small tensors: more threads only wait for each other (on a busy machine, 5x slower)
        images, labels = _batch(config, r.collage, r.folder, r.data_gen)
    compute, cpu = time.perf_counter(), time.process_time()
    fraction = r.step / config.steps
    if config.time_budget:
        fraction = max(fraction, r.seconds / config.time_budget)
    for group in opt.param_groups:
        group["lr"] = _lr(config, fraction)
    loss = discriminative_loss(r.model(images), labels, config.delta_v, config.delta_d)
    if not torch.isfinite(loss):
        return None
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(r.model.parameters(), 5.0)
    opt.step()
    r.step += 1
    now = time.perf_counter()
    r.seconds += now - start
    # the CPU share of the multi-threaded part (the one-thread batch drawing would understate it)
    wall, cpu = now - compute, time.process_time() - cpu
    r.cpu_seconds, r.thread_seconds = r.cpu_seconds + cpu, r.thread_seconds + wall * torch.get_num_threads()
    if r.governor is not None and r.governor.observe(cpu, wall):
        r.thread_changes.append((r.step, torch.get_num_threads()))
    return float(loss.detach())


@contextmanager
def _one_thread() -> Iterator[None]:
    """torch's CPU threads set to 1 inside, restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _validate_general(r: GeneralState, loss: float, hooks: Sequence[GeneralCallback]) -> Stop | None:
    """Score the validation sets, tell the callbacks, save a checkpoint; the first callback's stop, if any."""
    t0 = time.perf_counter()
    r.last_val = validate_general(r.model, r.sets)
    r.eval_seconds += time.perf_counter() - t0
    row = {"step": r.step, "seconds": round(r.seconds, 1), "loss": loss, "lr": r.opt.param_groups[0]["lr"],
           **{k: round(v, 4) for k, v in r.last_val.items()}}
    r.rows.append(row)
    improved = r.last_val["score"] > r.best[1]
    if improved:
        r.best = (r.step, r.last_val["score"])
    evaluation = Evaluation(r.step, r.seconds, dict(r.last_val), row, improved,
                            sum(len(images) for images, _ in r.sets.values()))
    stops = [cb.on_evaluation(r, evaluation) for cb in hooks]
    r.checkpoint()
    return next((s for s in stops if s is not None), None)
