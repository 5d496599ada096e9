"""The training loop: one function, read top to bottom.

Batches are generated on the fly (nothing is held in memory but the validation set);
the run stops at ``iterations`` and/or ``time_budget`` seconds of training (evaluation
time is measured separately and excluded); the model is evaluated in eval mode on a
fixed held-out set drawn from its own seed every ``eval_every`` steps and at the end.

Every evaluation is also a checkpoint: ``model.safetensors`` (the deliverable),
``resume.pt`` (model, optimizer, RNG states and counters, for ``--resume``; tensors and
plain values only, read back with ``torch.load(weights_only=True)``), ``metrics.csv`` and
``summary.json``, each written atomically, so a run killed at any moment can be loaded,
read and resumed from its last checkpoint.
"""

from __future__ import annotations

import math
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import texseg
from texseg.checkpoint import save_model
from texseg.data.scene import generate, target_from_labels
from texseg.device import autocast_dtype, resolve_device
from texseg.errors import CheckpointError, NonFiniteError, RunDirError
from texseg.evaluation import evaluate, predict_labels
from texseg.io import atomic_path
from texseg.models import count_parameters, create_model, model_spec
from texseg.plots import samples_figure, save_figure
from texseg.signals import catch_stop_signals
from texseg.training.config import TrainConfig
from texseg.training.losses import create_loss
from texseg.training.memory import check_training_memory
from texseg.training.optim import create_optimizer, lr_factor, set_lr
from texseg.training.rundir import CONFIG, SUMMARY, RunDir, default_run_dir

RUNNING, COMPLETED, DIVERGED, INTERRUPTED, PRUNED = "running", "completed", "diverged", "interrupted", "pruned"
RESUME_STATE = "resume.pt"
RESUME_VERSION = 1

EvalCallback = Callable[[int, float, dict[str, float]], bool]


@dataclass
class TrainResult:
    """What :func:`train` returns: where the run is and how it ended."""

    run_dir: Path
    status: str
    summary: dict[str, Any]


@dataclass
class _Counters:
    """Where the run stands; saved in every checkpoint and restored by a resume."""

    step: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    window_loss: float = 0.0  # sum of training losses since the last evaluation
    window_steps: int = 0
    skipped_steps: int = 0  # non-finite steps skipped with skip_nonfinite
    saved_step: int = 0  # step of the weights on disk


def train(
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
    resume: bool = False,
    on_eval: EvalCallback | None = None,
) -> TrainResult:
    """Train a model as ``config`` says and write a run directory.

    Args:
        config: the run's settings (validated here).
        run_dir: output folder; default ``runs/<timestamp>-<model>``. It must not already
            hold a run unless ``resume``.
        progress: show a progress bar (loss, latest val IoU, it/s).
        resume: continue the unfinished run in ``run_dir`` from its last checkpoint
            (use :func:`resume_training` to take the config from the run itself).
        on_eval: called as ``on_eval(step, train_seconds, val_metrics)`` after each
            evaluation; returning True stops the run with status ``pruned``.

    Returns:
        A :class:`TrainResult`; ``status`` is ``completed``, ``diverged`` (non-finite loss,
        gradient or output; the last good weights are kept), ``interrupted`` (SIGINT or
        SIGTERM; resumable) or ``pruned``.
    """
    config.validate()
    # --- setup: device, seeds, data, model, optimisation ----------------------------
    device = resolve_device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    scene = config.scene()
    k = scene.num_regions
    check_training_memory(config, device)  # refuse up front rather than crash halfway
    torch.manual_seed(config.seed)  # initial weights
    spec = model_spec(config.model)
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
    notes = [spec.warning] if spec.warning else []

    run = RunDir(run_dir or default_run_dir(config.model), resume=resume)
    with run, catch_stop_signals() as stop:
        if resume:
            c = _load_resume_state(run, model, optimizer, train_gen)
        else:
            run.write_config(config.to_dict())
            c = _Counters()
        status, message, last_val = RUNNING, "", dict(run.rows[-1]) if run.rows else {}
        last_val = {key[4:]: v for key, v in last_val.items() if key.startswith("val_")}

        def summary() -> dict[str, Any]:
            return {
                "status": status, "message": message, "model": config.model, "model_kwargs": model_kwargs,
                "parameters": count_parameters(model), "iterations": c.step,
                "train_seconds": round(c.train_seconds, 3), "eval_seconds": round(c.eval_seconds, 3),
                "it_per_s": round(c.step / c.train_seconds, 3) if c.train_seconds else 0.0,
                "skipped_steps": c.skipped_steps,
                "val": last_val, "val_size": config.val_size, "device": str(device),
                "precision": "bf16" if amp_dtype is not None else "fp32", "threads": torch.get_num_threads(),
                "torch": torch.__version__, "texseg": texseg.__version__, "notes": notes,
            }

        def checkpoint() -> None:
            c.saved_step = c.step
            save_model(model, run.path, name=config.model, kwargs=model_kwargs, num_regions=k,
                       scene=scene.to_dict())
            _save_resume_state(run, model, optimizer, train_gen, c)
            run.write_summary(summary())

        def stopped(kind: str, what: str) -> str:
            step = c.step + (kind != "eval")  # a failed step has not been counted yet
            return f"{what} at step {step} (lr {lr:.3g}); kept the weights of step {c.saved_step}"

        if not resume:
            checkpoint()  # a loadable, resumable model exists from the start
        for note in notes:
            tqdm.write(f"warning: {note}")

        def run_progress() -> float:
            fractions = []
            if config.iterations:
                fractions.append(c.step / config.iterations)
            if config.time_budget:
                fractions.append(c.train_seconds / config.time_budget)
            return max(fractions)

        # --- loop ---------------------------------------------------------------------
        bar = tqdm(total=config.iterations or config.time_budget, disable=not progress,
                   initial=c.step if config.iterations else c.train_seconds,
                   unit="it" if config.iterations else "s", dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}{unit} [{elapsed}<{remaining}{postfix}]")
        lr = config.lr
        while run_progress() < 1.0:
            if stop.signal is not None:
                status = INTERRUPTED
                message = f"stopped by {signal.Signals(stop.signal).name} after step {c.step}; resumable"
                break
            t0 = time.perf_counter()
            lr = config.lr * lr_factor(config.schedule, run_progress(), config.warmup)
            set_lr(optimizer, lr)
            images, labels = generate(scene, config.batch_size, generator=train_gen, device=device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(images.contiguous(memory_format=torch.channels_last))
            loss = loss_fn(logits, target_from_labels(labels, k))  # losses compute in fp32
            loss_value = loss.item()
            problem = None if math.isfinite(loss_value) else f"loss became {loss_value}"
            optimizer.zero_grad(set_to_none=True)
            if problem is None:
                loss.backward()
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                grad_norm = torch.nn.utils.get_total_norm(grads).item()
                problem = None if math.isfinite(grad_norm) else f"gradient norm became {grad_norm}"
            if problem is not None and not config.skip_nonfinite:
                status, message = DIVERGED, stopped("step", problem)
                break
            if problem is None:
                optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # honest timing
            dt = time.perf_counter() - t0
            c.step, c.train_seconds = c.step + 1, c.train_seconds + dt
            if problem is None:
                c.window_loss, c.window_steps = c.window_loss + loss_value, c.window_steps + 1
            else:
                c.skipped_steps += 1
                tqdm.write(f"warning: skipped step {c.step}: {problem}")
            bar.update(1 if config.iterations else max(0.0, min(dt, bar.total - bar.n)))  # never past 100%

            if c.step % config.eval_every == 0 or run_progress() >= 1.0:
                # --- evaluate and checkpoint (timed apart from training) ---------------
                t1 = time.perf_counter()
                if not _all_finite(model):  # a finite step can still overflow the weights
                    status, message = DIVERGED, stopped("eval", "weights became non-finite")
                    break
                try:
                    last_val = evaluate(model, val_images, val_targets, k, loss_fn=loss_fn)
                except NonFiniteError:
                    status, message = DIVERGED, stopped("eval", "the model's outputs became NaN")
                    break
                run.append_metrics({
                    "step": c.step, "train_seconds": c.train_seconds, "lr": lr,
                    "train_loss": c.window_loss / c.window_steps if c.window_steps else math.nan,
                    **{f"val_{name}": v for name, v in last_val.items()},
                })
                c.window_loss, c.window_steps = 0.0, 0
                c.eval_seconds += time.perf_counter() - t1
                checkpoint()
                bar.set_postfix(loss=f"{run.rows[-1]['train_loss']:.4f}", val_iou=f"{last_val['iou']:.4f}",
                                its=f"{c.step / c.train_seconds:.1f}")
                if on_eval is not None and on_eval(c.step, c.train_seconds, last_val):
                    status, message = PRUNED, f"stopped by the caller after step {c.step}"
                    break
        bar.close()

        # --- finish: final checkpoint, figures, summary --------------------------------
        if status == RUNNING:
            status = COMPLETED
        if status in (COMPLETED, INTERRUPTED, PRUNED):
            checkpoint()  # an interrupted run keeps the steps since its last evaluation
        else:
            run.write_summary(summary())  # diverged: the weights on disk stay the last good ones
        if run.rows:  # no prediction panel from diverged weights: they are not what is saved
            _write_figures(run, model, val_images[:4], val_targets[:4], k, config.model,
                           samples=status != DIVERGED)
        final = summary()
    return TrainResult(run.path, status, final)


def resume_training(run_dir: str | Path, *, progress: bool = True,
                    on_eval: EvalCallback | None = None) -> TrainResult:
    """Continue an interrupted (or killed) run from its last checkpoint, with its own config.

    An iteration-bounded run on CPU ends exactly as if it had never stopped; a
    time-budgeted run gets the training time it had left.

    Raises:
        RunDirError: ``run_dir`` holds no run, or a finished one.
        CheckpointError: its resume state is missing or unusable.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise RunDirError(f"{run_dir} holds no run to resume ({CONFIG} is missing)")
    try:
        config = TrainConfig.from_json_file(run_dir / CONFIG)
    except ValueError as e:
        raise RunDirError(f"cannot resume {run_dir}: {e}") from None
    from texseg.io import read_json

    try:
        status = read_json(run_dir / SUMMARY).get("status")
    except (ValueError, AttributeError):
        status = None
    if status in (COMPLETED, DIVERGED, PRUNED):
        raise RunDirError(f"{run_dir} has already ended (status {status}); nothing to resume")
    return train(config, run_dir, progress=progress, resume=True, on_eval=on_eval)


def _save_resume_state(run: RunDir, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       train_gen: torch.Generator, c: _Counters) -> None:
    state = {
        "version": RESUME_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_train": train_gen.get_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "counters": asdict(c),
        "rows": run.rows,
    }
    with atomic_path(run.file(RESUME_STATE)) as tmp:
        torch.save(state, tmp)


def _load_resume_state(run: RunDir, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       train_gen: torch.Generator) -> _Counters:
    path = run.file(RESUME_STATE)
    if not path.is_file():
        raise CheckpointError(f"{run.path} has no {RESUME_STATE} to resume from")
    try:
        # weights_only: tensors and plain containers only; a pickle payload cannot run.
        with warnings.catch_warnings():  # a foreign file's pickle-protocol warnings are noise here
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("version") != RESUME_VERSION:
            raise ValueError("not a texseg resume state")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        train_gen.set_state(state["rng_train"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        counters = _Counters(**state["counters"])
        rows = list(state["rows"])
    except Exception as e:  # anything wrong in a foreign or damaged file is the file's fault
        raise CheckpointError(f"cannot resume from {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") \
            from None
    run.rows = rows
    if rows:
        run.rewrite_metrics()  # metrics.csv as of the checkpoint, dropping rows written after it
    return counters


def _all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def _write_figures(run: RunDir, model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
                   k: int, name: str, samples: bool = True) -> None:
    """samples.png (input | truth | eval-mode prediction) and curves.png."""
    if samples:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            pred = predict_labels(model(images))
        model.train(was_training)
        truth = targets if k > 2 else targets.long()
        save_figure(samples_figure(images.cpu(), truth.cpu(), pred.cpu(), num_regions=k,
                                   suptitle=f"{name}: validation samples (eval mode)"), run.file("samples.png"))
    from matplotlib.figure import Figure

    rows = run.rows
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    for col, (key, xlabel) in enumerate([("step", "step"), ("train_seconds", "training time (s)")]):
        xs = [r[key] for r in rows]
        ax = axes[0, col]
        ax.plot(xs, [r["train_loss"] for r in rows], label="train (mean since last eval)")
        ax.plot(xs, [r["val_loss"] for r in rows], label="validation")
        ax.set(yscale="log", xlabel=xlabel, ylabel="loss")
        ax.legend()
        ax.grid(True, alpha=0.3)
        ax = axes[1, col]
        ax.plot(xs, [r["val_iou"] for r in rows], marker=".")
        ax.set(xlabel=xlabel, ylabel="validation IoU (eval mode)")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{name}: learning curves")
    save_figure(fig, run.file("curves.png"))
