"""The core commands: generate, train, eval, models."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import click

from texseg._validate import check_int
from texseg.cli import cli
from texseg.cli._options import (
    SCENE_FIELDS,
    command_arguments,
    config_options,
    given_options,
    metric_rows,
    table,
    use_free_cores,
)
from texseg.errors import ExitCode, TexsegError
from texseg.io import read_json
from texseg.training.config import TrainConfig, override_scene
from texseg.training.summary import RunSummary


@cli.command()
@config_options(only=SCENE_FIELDS)
@click.option("--seed", type=click.INT, default=0, show_default=True, help="seed of the generator")
@click.option("--rows", type=click.INT, default=4, show_default=True, help="samples in the picture")
@click.option("--picture", type=click.Path(dir_okay=False), default=None,
              help="PNG of input | mask pairs  [default: samples.png, or OUT/preview.png with --out]")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="export folder: images/*.png, labels/*.png and manifest.json")
@click.option("--count", type=click.INT, default=None, help="number of scenes to export with --out")
@click.option("--quiet", is_flag=True, help="no progress bar")
def generate(seed: int, rows: int, picture: str | None, out: str | None, count: int | None, quiet: bool,
             **scene_options: Any) -> None:
    """Draw scenes: a picture of samples, and optionally an exported dataset.

    The scene options mean the same as for `texseg train` (whose defaults they share).
    """
    import torch

    from texseg._validate import check_int
    from texseg.data import estimate_memory_bytes
    from texseg.data import generate as draw
    from texseg.data.export import export_dataset
    from texseg.device import check_memory
    from texseg.plots import samples_figure, save_figure

    config = TrainConfig.from_dict(given_options(scene_options)).validate()
    spec = config.scene()
    check_int("--seed", seed, minimum=0, maximum=2**63 - 1)
    check_int("--rows", rows, minimum=1, maximum=64)
    if picture is not None and Path(picture).suffix.lower() != ".png":
        raise ValueError(f"--picture must name a .png file, got {picture!r}")
    if count is not None and out is None:
        raise click.UsageError("--count needs --out DIR")
    if out is not None:
        count = 100 if count is None else check_int("--count", count, minimum=1)
        manifest = export_dataset(spec, out, count, seed, progress=not quiet)
        click.echo(f"exported {count} scenes to {out} (manifest: {manifest})")
    picture = picture or (str(Path(out) / "preview.png") if out else "samples.png")
    # The scenes and their figure (a few float copies per pixel): refused up front, naming this command's flags.
    check_memory(estimate_memory_bytes(spec, rows) + rows * spec.image_size**2 * 32, torch.device("cpu"),
                 f"drawing {rows} scenes of {spec.image_size}x{spec.image_size}",
                 "use a smaller `image_size` or `rows`")
    images, labels = draw(spec, rows, generator=torch.Generator().manual_seed(seed))
    # Labels coloured as `texseg predict` colours them, with a legend naming Omega_1 (label 0), Omega_2, ...
    sig = ", ".join(f"{s:g}" for s in spec.texture_sigmas)
    fig = samples_figure(images, labels, num_regions=spec.num_regions,
                         suptitle=f"N={spec.image_size}, partition sigma={spec.partition_sigma:g}, "
                                  f"texture sigmas=({sig}), seed={seed}")
    save_figure(fig, picture)
    click.echo(f"wrote {picture}")


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="JSON file of training options (command-line options override it)")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="run directory  [default: runs/<timestamp>-<model>]")
@click.option("--resume", type=click.Path(file_okay=False), default=None,
              help="continue the interrupted run in this directory (with its own config)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--nproc", type=click.INT, default=None,
              help="train on N processes of this machine (data-parallel, torchrun); several machines: "
                   "see docs/how-to/distributed.md")
@config_options()
@click.pass_context
def train(ctx: click.Context, config_file: str | None, out: str | None, resume: str | None, quiet: bool,
          nproc: int | None, **options: Any) -> int:
    """Train a model on freshly generated scenes; write a run directory.

    With no options: texseg's best default (a U-Net) at the notebook's difficulty
    (sigma1=0.2, sigma2=1.2, sigma=N/5, N=128) for 30 s of CPU training.

    Ctrl-C (or SIGTERM) stops between two steps, saves everything and exits with code
    130; `texseg train --resume RUN_DIR` continues such a run where it stopped.
    """
    from texseg.training import RunStatus, resume_training
    from texseg.training import train as run_training

    if nproc is not None and "RANK" not in os.environ:
        _launch_torchrun(check_int("--nproc", nproc, minimum=1, maximum=1024), command_arguments(ctx, ["nproc"]))

    if resume is not None:
        given = sorted(k for k, v in given_options(options).items())
        if given or config_file or out:
            extra = ", ".join("--" + k.replace("_", "-") for k in given) or ("--config" if config_file else "--out")
            raise click.UsageError(f"--resume continues a run with its own config.json; drop {extra}")
        result = resume_training(resume, progress=not quiet)
    else:
        # File and flags merge first, so --iterations drops only the *default* time budget.
        file_options = TrainConfig.read_json(config_file) if config_file else {}
        config = TrainConfig.from_dict({**file_options, **given_options(options)}).validate()
        result = run_training(config, out, progress=not quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # a distributed run: rank 0 reports
        return ExitCode.OK if result.status == RunStatus.COMPLETED else ExitCode.INTERRUPTED
    s = result.summary
    click.echo(f"\nrun: {result.run_dir}   status: {result.status}" + (f" ({s.message})" if s.message else ""))
    rows = [("model", f"{s.model} ({s.parameters:,} parameters)"),
            ("iterations", f"{s.iterations}"),
            ("training time", f"{s.train_seconds:.1f} s ({s.it_per_s:.1f} it/s)"),
            ("evaluation time", f"{s.eval_seconds:.1f} s"),
            ("hardware path", f"{s.device}, {s.precision}, {s.threads} thread(s)"
                              + (", torch.compile" if s.compiled else "")),
            ("batch, lr", f"{s.batch_size}, {s.lr:g}" + _from_device(s)),
            ("held-out set", _held_out_text(result.run_dir, s)),
            ("labels", "fixed (label k is region k)" if s.label_mode == "fixed" else
                       "any (loss and scores after the best matching of predicted to true labels)")]
    folder = bool(read_json_or_none(result.run_dir / "config.json").get("data"))
    rows += [(f"val {k}", v) for k, v in metric_rows(s.val, folder=folder)]
    click.echo(table(rows))
    for note in s.notes:
        click.echo(f"note: {note}")
    for warning in s.warnings:
        click.echo(f"warning: {warning}")
    return {RunStatus.COMPLETED: ExitCode.OK, RunStatus.DIVERGED: ExitCode.DIVERGED}.get(result.status,
                                                                                     ExitCode.INTERRUPTED)


def read_json_or_none(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is missing or unreadable (a report is not worth an error)."""
    try:
        value = read_json(path)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _held_out_text(run_dir: Path, s: RunSummary) -> str:
    """What the held-out set of a run is: generated scenes, or crops of a folder's held-out images."""
    from texseg.data.folder import find_pairs

    config = read_json_or_none(run_dir / "config.json")
    if not config.get("data"):
        return f"{s.val_size} scenes of the training scene, seed {s.val_seed} (`texseg eval` draws another)"
    if config.get("val_data"):
        n = len(find_pairs(config["val_data"])[0])
        where = f"{n} images of {config['val_data']}"
    else:  # as ImageFolderDataset.split chooses them
        total = len(find_pairs(config["data"])[0])
        n = min(total - 1, max(1, round(config["val_fraction"] * total)))
        where = f"{n} held-out images of {config['data']} ({config['val_fraction']:g} of its {total}, never trained on)"
    return f"{s.val_size} crops of {where}, seed {s.val_seed} (`texseg eval --data` scores whole images)"


def _launch_torchrun(nproc: int, args: list[str]) -> None:
    """Run torchrun's launcher here: ``texseg train`` on ``nproc`` local processes (ranks).

    The launcher owns the ranks: a Ctrl-C or SIGTERM to it reaches every rank, which stop
    at the same step and leave a resumable run; it then ends as an interrupted command.

    Raises:
        texseg.signals.Interrupted: the launcher was stopped by a signal.
        TexsegError: a rank failed (its own message is above).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from texseg.signals import Interrupted

    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "texseg", *args[1:]]))
    except SignalException as e:
        raise Interrupted(e.sigval) from None
    except ChildFailedError as e:
        codes = {f.local_rank: f.exitcode for f in e.failures.values()}
        if set(codes.values()) == {ExitCode.INTERRUPTED}:
            raise Interrupted(signal.SIGINT) from None
        raise TexsegError(f"distributed training failed: rank(s) {', '.join(map(str, codes))} ended with "
                          f"exit code(s) {', '.join(map(str, codes.values()))} (their messages are above)") \
            from None
    raise SystemExit(ExitCode.OK)


def _from_device(summary: RunSummary) -> str:
    """`` (device defaults: batch_size, lr)`` when the device chose some of the run's settings."""
    filled = (summary.defaults or {}).get("filled") or {}
    chosen = [k for k in ("batch_size", "lr") if k in filled]
    return f"   ({', '.join(chosen)} from the {summary.defaults['hardware']} defaults)" if chosen else ""


@cli.command(name="eval")
@click.argument("run_dir", type=click.Path())
@config_options(only=SCENE_FIELDS)
@click.option("--count", type=click.INT, default=256, show_default=True, help="held-out scenes")
@click.option("--seed", type=click.INT, default=2024, show_default=True, help="seed of the held-out set")
@click.option("--batch-size", type=click.INT, default=32, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="score on this folder of images and labels (images/ + labels/ or masks/) instead")
@click.option("--matching", type=click.Choice(["auto", "none", "image", "set"]), default="auto", show_default=True,
              help="how predicted label numbers meet the true ones: image = the best matching of each image "
                   "on its own (models whose label numbers are arbitrary); set = one matching for the whole "
                   "set (undoes only a swap made on every image alike); none = label k is region k; auto = "
                   "image for a run trained with --label-mode any (mosaics, mixed families), else none")
@click.option("--matched", is_flag=True, help="the same as --matching image")
def eval_(run_dir: str, count: int, seed: int, batch_size: int, device: str, as_json: bool,
          data: str | None = None, matching: str = "auto", matched: bool = False, **scene_options: Any) -> None:
    """Evaluate a saved model on a freshly generated held-out set (or a folder: --data).

    The scene defaults to the one the model was trained on; scene options change it.
    """
    if matched and matching not in ("auto", "image"):
        raise click.UsageError(f"--matched means --matching image; it cannot go with --matching {matching}")
    matching = "image" if matched else matching
    use_free_cores()
    if data is not None:
        return _eval_folder(run_dir, data, device, matching, as_json)
    from texseg._validate import check_int
    from texseg.checkpoint import load_model
    from texseg.data import SceneSpec
    from texseg.device import resolve_device
    from texseg.evaluation import evaluate_on_scenes

    check_int("--count", count, minimum=1, maximum=1_000_000)
    check_int("--seed", seed, minimum=0, maximum=2**63 - 1)
    check_int("--batch-size", batch_size, minimum=1)
    dev = resolve_device(device)
    model = load_model(run_dir, device=dev)
    info = model.run_info
    trained = SceneSpec.from_dict(info["scene"]) if info.get("scene") else SceneSpec()
    spec = override_scene(trained, given_options(scene_options))
    k = spec.num_regions
    if k != info["num_regions"]:
        raise ValueError(f"regions {k} does not match the model, which segments {info['num_regions']} regions")
    matching = _resolve_matching(matching, run_dir, info)
    cm_metrics = evaluate_on_scenes(model, spec, count, seed, batch_size=batch_size, device=dev, matching=matching)
    if as_json:
        click.echo(json.dumps({"run": run_dir, "scene": spec.to_dict(), "count": count, "seed": seed,
                               "matching": matching, "metrics": cm_metrics}, indent=2))
        return
    sig = ", ".join(f"{s:g}" for s in spec.texture_sigmas)
    click.echo(f"{run_dir}: {info['name']} on {count} held-out scenes (seed {seed}; N={spec.image_size}, "
               f"partition sigma {spec.partition_sigma:g}, texture sigmas {sig}){_MATCHING_TEXT[matching]}")
    click.echo(table(metric_rows(cm_metrics)))
    from texseg.models import model_spec

    warning = model_spec(info["name"]).warning
    if warning:
        click.echo(f"note: {warning}")


@cli.command()
def models() -> None:
    """List the registered models with their parameter counts at defaults, and the pretrained ones."""

    from texseg.models import count_parameters, create_model, list_models, model_spec

    rows = []
    for name in list_models():
        n = count_parameters(create_model(name))
        spec = model_spec(name)
        rows.append((name, f"{n:>9,}  {spec.description}" + ("  (see warning)" if spec.warning else "")))
    click.echo(table(rows))
    for name in list_models():
        if model_spec(name).warning:
            click.echo(f"\nwarning ({name}): {model_spec(name).warning}")
    from texseg.models.pretrained import PREFIX, list_pretrained

    shipped = list_pretrained()
    if shipped:
        click.echo("\npretrained (shipped in the package; use the name where a run folder is accepted):")
        click.echo(table([(PREFIX + name, f"{spec.architecture}: {spec.description}")
                          for name, spec in shipped.items()]))


def _calibrate() -> None:
    """``texseg devices --calibrate``: time bf16 against fp32 on this CPU unless its kind was measured."""
    import torch

    from texseg.training.calibrate import calibrate_cpu
    from texseg.training.defaults import cache_dir, measured_cpu

    if measured_cpu(torch.device("cpu")):
        click.echo("calibration: not needed, texseg's CPU profile was measured on this kind of CPU")
        return
    click.echo("calibrating: timing the default training step in fp32 and in bf16 ...")
    r = calibrate_cpu()
    click.echo(f"calibration: fp32 {r['fp32_ms']} ms/step, bf16 {r['bf16_ms']} ms/step (load average "
               f"{r['loadavg']}, {r['cpu_share']:.0%} of {r['threads']} core(s)): {r['kind']}; "
               + (f"saved in {cache_dir()}" if r["trusted"] else
                  "not saved: the machine was too busy to measure (under 50% of the cores); try again later"))


@cli.command()
@click.option("--calibrate", is_flag=True,
              help="measure bf16 against fp32 training on this CPU (a few seconds; cached per machine) when "
                   "texseg has no profile measured on its kind")
def devices(calibrate: bool) -> None:
    """The devices here and how texseg trains on each: precision, batch size, lr, compile.

    It also says whether each profile was measured on this kind of hardware, calibrated here,
    or is the conservative one, and how the CPU threads wait (see docs/explanation/devices.md, busy machines).
    """
    import torch

    from texseg.device import cpu_description
    from texseg.threads import wait_policy_description
    from texseg.training.defaults import device_profile, pin_config, profile_source

    if calibrate:
        _calibrate()
    cpu = cpu_description()
    found = [torch.device("cpu")] + [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    for dev in found:
        p = device_profile(dev)
        name = (f"{cpu['model'] or 'CPU'} ({cpu['cores']} cores; {', '.join(cpu['flags']) or 'no AVX2'}; "
                f"torch kernels {cpu['capability']})" if dev.type == "cpu" else torch.cuda.get_device_name(dev))
        precision = pin_config(TrainConfig(device=dev.type), dev).precision
        click.echo(f"{dev}: {name}")
        quick = {k: v for k, v in p.quick.items() if k != "model_kwargs"}
        quick_models = p.quick.get("model_kwargs", {})
        rows = [("hardware path", f"{p.hardware} ({precision} training)"),
                ("model arguments", _kwargs_text(p.model_kwargs)),
                ("batch size, lr", f"{p.batch_size}, {p.lr:g}")]
        if p.quick:
            parts = [_kwargs_text(quick_models)] if quick_models else []
            parts.append(f"batch size {quick.get('batch_size', p.batch_size)}, lr {quick.get('lr', p.lr):g}")
            rows.append((f"runs of <= {p.quick_budget:g} s", ", ".join(parts)))
        click.echo(table(rows + [
            ("torch.compile", "yes" if p.compile else "no"),
            ("evaluation batch", str(p.eval_batch)),
            ("loss read back", "every step" if p.sync_every == 1 else
                               f"every {p.sync_every} steps" if p.sync_every else "about every 50 ms"),
            ("measured", p.measured),
            ("profile chosen", profile_source(dev))]
            + ([("CPU threads wait", wait_policy_description())] if dev.type == "cpu" else [])))


def _kwargs_text(per_model: dict[str, dict[str, Any]]) -> str:
    """``unet base_width=8`` for {"unet": {"base_width": 8}}; the models' own defaults when empty."""
    return "; ".join(f"{m} " + ", ".join(f"{k}={v}" for k, v in kw.items()) for m, kw in per_model.items()) \
        or "each model's own defaults"


_MATCHING_TEXT = {"none": "", "image": ", labels matched per image", "set": ", labels matched once for the set"}


def _resolve_matching(matching: str, run_dir: str, info: dict[str, Any]) -> str:
    """``auto``: per-image matching for a run whose label numbers are arbitrary, else none."""
    from texseg.training.rundir import run_label_mode

    if matching != "auto":
        return matching
    return "image" if run_label_mode(run_dir, info.get("scene")) == "any" else "none"


def _eval_folder(run_dir: str, data: str, device: str, matching: str, as_json: bool) -> None:
    """`texseg eval RUN_DIR --data DIR`: every image of the folder, whole."""
    from texseg.checkpoint import load_model
    from texseg.device import resolve_device
    from texseg.evaluation.folder import evaluate_folder_images
    from texseg.evaluation.stats import bootstrap_mean_ci

    model = load_model(run_dir, device=resolve_device(device))
    k = model.run_info["num_regions"]
    matching = _resolve_matching(matching, run_dir, model.run_info)
    metrics, per_image = evaluate_folder_images(model, data, k, matching=matching)
    # The folder's images are a sample: the 95% interval of the mean over images says how much it could move.
    intervals = {name: bootstrap_mean_ci([m[name] for m in per_image], bounded=name != "loss")
                 for name in ("iou", "accuracy") if name in metrics}
    if as_json:
        click.echo(json.dumps({"run": run_dir, "data": data, "matching": matching, "matched": matching != "none",
                               "metrics": metrics,
                               "per_image_mean": {n: {"mean": iv.mean, "low": iv.low if iv.n > 1 else None,
                                                      "high": iv.high if iv.n > 1 else None, "images": iv.n}
                                                  for n, iv in intervals.items()}}, indent=2))
        return
    click.echo(f"{run_dir}: {model.run_info['name']} on {int(metrics['images'])} images of {data}"
               f"{_MATCHING_TEXT[matching]}")
    click.echo(table(metric_rows({key: v for key, v in metrics.items() if key not in ("images", "matched")},
                                 folder=True)))
    click.echo(f"per image (mean over {len(per_image)} images, 95% interval of that mean"
               + ("; none for one image" if len(per_image) < 2 else "") + "):")
    click.echo(table([(name, iv.format(4)) for name, iv in intervals.items()]))
