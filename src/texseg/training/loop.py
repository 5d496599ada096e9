"""The training loop: one function, read top to bottom.

Batches are generated on the fly (nothing is held in memory but the validation set);
the run stops at ``iterations`` and/or ``time_budget`` seconds of training (evaluation
time is measured separately and excluded); the model is evaluated in eval mode on a
fixed held-out set drawn from its own seed every ``eval_every`` steps and at the end.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import texseg
from texseg.checkpoint import save_model
from texseg.data.scene import generate, target_from_labels
from texseg.device import autocast_dtype, resolve_device
from texseg.errors import NonFiniteError
from texseg.evaluation import evaluate, predict_labels
from texseg.models import count_parameters, create_model, model_spec
from texseg.plots import curves_figure, samples_figure, save_figure
from texseg.training.config import TrainConfig
from texseg.training.losses import create_loss
from texseg.training.optim import create_optimizer, lr_factor, set_lr
from texseg.training.rundir import RunDir, default_run_dir

COMPLETED, DIVERGED, INTERRUPTED = "completed", "diverged", "interrupted"


@dataclass
class TrainResult:
    """What :func:`train` returns: where the run is and how it ended."""

    run_dir: Path
    status: str
    summary: dict[str, Any]


class _StopFlag:
    """Set by SIGINT/SIGTERM so the loop stops between steps, never inside one."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.signal = signum


@contextmanager
def _catch_stop_signals() -> Iterator[_StopFlag]:
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be installed from the main thread
        return
    previous = {s: signal.signal(s, flag) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def train(
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
) -> TrainResult:
    """Train a model as ``config`` says and write a run directory.

    Args:
        config: the run's settings (validated here).
        run_dir: output folder; default ``runs/<timestamp>-<model>``. It must not already
            hold a run.
        progress: show a progress bar (loss, latest val IoU, it/s).

    Returns:
        A :class:`TrainResult`; ``status`` is ``completed``, ``diverged`` (non-finite
        loss; the last good weights are kept) or ``interrupted`` (SIGINT/SIGTERM).
    """
    config.validate()
    # --- setup: device, seeds, data, model, optimisation ----------------------------
    device = resolve_device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    scene = config.scene()
    k = scene.num_regions
    torch.manual_seed(config.seed)  # initial weights
    spec = model_spec(config.model) if config.model else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the registry's warning is reported below
        model = create_model(config.model, num_classes=config.model_num_classes, **config.model_kwargs)
    # channels_last is the layout oneDNN/cuDNN convolutions are fastest in.
    model.to(device, memory_format=torch.channels_last)
    amp_dtype = autocast_dtype(config.precision, device)
    loss_fn = create_loss(config.loss_name, k)
    optimizer = create_optimizer(model, config)
    train_gen = torch.Generator(device=device).manual_seed(config.seed)
    val_images, val_labels = generate(
        scene, config.val_size, generator=torch.Generator().manual_seed(config.val_seed)
    )
    val_images, val_targets = val_images.to(device), target_from_labels(val_labels, k).to(device)
    model_kwargs = {**config.model_kwargs, "num_classes": config.model_num_classes}
    notes = [spec.warning] if spec and spec.warning else []

    run = RunDir(run_dir or default_run_dir(config.model))
    with run, _catch_stop_signals() as stop:
        run.write_config(config.to_dict())

        def checkpoint() -> None:
            save_model(model, run.path, name=config.model, kwargs=model_kwargs, num_regions=k,
                       scene=scene.to_dict())

        checkpoint()  # a loadable model exists from the start
        for note in notes:
            tqdm.write(f"warning: {note}")

        # --- loop ---------------------------------------------------------------------
        step, train_seconds, eval_seconds = 0, 0.0, 0.0
        window_loss, window_steps = 0.0, 0
        status, message, last_val = COMPLETED, "", {}
        bar = tqdm(total=config.iterations or config.time_budget, disable=not progress,
                   unit="it" if config.iterations else "s", dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}{unit} [{elapsed}<{remaining}{postfix}]")

        def run_progress() -> float:
            fractions = []
            if config.iterations:
                fractions.append(step / config.iterations)
            if config.time_budget:
                fractions.append(train_seconds / config.time_budget)
            return max(fractions)

        while run_progress() < 1.0:
            if stop.signal is not None:
                status = INTERRUPTED
                message = f"stopped by signal {signal.Signals(stop.signal).name} at step {step}"
                break
            t0 = time.perf_counter()
            lr = config.lr * lr_factor(config.schedule, run_progress(), config.warmup)
            set_lr(optimizer, lr)
            images, labels = generate(scene, config.batch_size, generator=train_gen, device=device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(images.contiguous(memory_format=torch.channels_last))
            loss = loss_fn(logits, target_from_labels(labels, k))  # losses compute in fp32
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                status = DIVERGED
                message = (f"loss became {loss_value} at step {step + 1} (lr {lr:.3g}); "
                           f"kept the weights of step {run.rows[-1]['step'] if run.rows else 0}")
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
            if not math.isfinite(grad_norm.item()):
                status = DIVERGED
                message = (f"gradient norm became {grad_norm.item()} at step {step + 1} (lr {lr:.3g}); "
                           f"kept the weights of step {run.rows[-1]['step'] if run.rows else 0}")
                break
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # honest timing
            dt = time.perf_counter() - t0
            train_seconds += dt
            step += 1
            window_loss, window_steps = window_loss + loss_value, window_steps + 1
            bar.update(1 if config.iterations else dt)

            if step % config.eval_every == 0 or run_progress() >= 1.0:
                if not _all_finite(model):  # a finite step can still overflow the weights
                    status = DIVERGED
                    message = (f"weights became non-finite at step {step} (lr {lr:.3g}); "
                               f"kept the weights of step {run.rows[-1]['step'] if run.rows else 0}")
                    break
                t1 = time.perf_counter()
                try:
                    last_val = evaluate(model, val_images, val_targets, k, loss_fn=loss_fn)
                except NonFiniteError:
                    status = DIVERGED
                    message = (f"the model's outputs became NaN at step {step} (lr {lr:.3g}); "
                               f"kept the weights of step {run.rows[-1]['step'] if run.rows else 0}")
                    break
                run.append_metrics({
                    "step": step, "train_seconds": train_seconds, "lr": lr,
                    "train_loss": window_loss / window_steps,
                    **{f"val_{name}": v for name, v in last_val.items()},
                })
                window_loss, window_steps = 0.0, 0
                checkpoint()
                eval_seconds += time.perf_counter() - t1
                bar.set_postfix(loss=f"{run.rows[-1]['train_loss']:.4f}", val_iou=f"{last_val['iou']:.4f}",
                                its=f"{step / train_seconds:.1f}")
        bar.close()

        # --- finish: final metrics, figures, summary ----------------------------------
        if status == INTERRUPTED and window_steps:
            checkpoint()  # keep the work done since the last evaluation
        summary = {
            "status": status,
            "message": message,
            "model": config.model,
            "model_kwargs": model_kwargs,
            "parameters": count_parameters(model),
            "iterations": step,
            "train_seconds": round(train_seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "it_per_s": round(step / train_seconds, 3) if train_seconds else 0.0,
            "val": last_val,
            "val_size": config.val_size,
            "device": str(device),
            "precision": "bf16" if amp_dtype is not None else "fp32",
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "texseg": texseg.__version__,
            "notes": notes,
        }
        run.write_summary(summary)
        if run.rows:
            _write_figures(run, model, val_images[:4], val_targets[:4], k, config.model)
    return TrainResult(run.path, status, summary)


def _all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def _write_figures(run: RunDir, model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
                   k: int, name: str) -> None:
    """samples.png (input | truth | eval-mode prediction) and curves.png."""
    model.eval()
    with torch.no_grad():
        pred = predict_labels(model(images))
    model.train()
    truth = targets if k > 2 else targets.long()
    if k == 2:  # show Omega_1 as 1, like the notebook's mask
        pred = (pred == 1).long()
    save_figure(samples_figure(images.cpu(), truth.cpu(), pred.cpu(), num_regions=k,
                               suptitle=f"{name}: validation samples (eval mode)"), run.file("samples.png"))
    from matplotlib.figure import Figure

    rows = run.rows
    steps = [r["step"] for r in rows]
    secs = [r["train_seconds"] for r in rows]
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    for col, (xs, xlabel) in enumerate([(steps, "step"), (secs, "training time (s)")]):
        ax = axes[0, col]
        ax.plot(xs, [r["train_loss"] for r in rows], label="train (mean since last eval)")
        ax.plot(xs, [r["val_loss"] for r in rows], label="validation")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss")
        ax.legend()
        ax.grid(True, alpha=0.3)
        ax = axes[1, col]
        ax.plot(xs, [r["val_iou"] for r in rows], marker=".")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation IoU (eval mode)")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{name}: learning curves")
    save_figure(fig, run.file("curves.png"))
    _ = curves_figure  # shared helper for experiment plots
