"""The ``texseg`` command line: a thin layer over the library.

Options of ``texseg train`` are generated from :class:`TrainConfig`'s fields (name, type,
help), so the CLI, config files and the Python API cannot drift apart. Every error a
user can cause ends as one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from texseg.errors import TexsegError

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130
SCENE_FIELDS = ("image_size", "sigma1", "sigma2", "sigma", "regions", "sigmas", "smoothing")


# --------------------------------------------------------------------------- helpers
def _parse_floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def _parse_kv(pairs: Sequence[str]) -> dict[str, Any]:
    """``["base_width=32", "norm=group"]`` -> ``{"base_width": 32, "norm": "group"}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="'--model-arg'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string such as norm=group
    return out


def config_options(cls: type, only: Sequence[str] | None = None) -> Callable[[Callable], Callable]:
    """Decorator adding one click option per dataclass field of ``cls``.

    Every option defaults to ``None`` so that the command can tell which ones the user
    gave (they override a config file); the field's default is shown in the help.
    """

    def decorator(f: Callable) -> Callable:
        for fld in reversed(dataclasses.fields(cls)):
            if only is not None and fld.name not in only:
                continue
            flag = "--" + fld.name.replace("_", "-")
            help_ = fld.metadata.get("help", "")
            default = (fld.default_factory() if fld.default_factory is not dataclasses.MISSING  # type: ignore[misc]
                       else fld.default)
            if default not in (None, {}, []):
                help_ += f"  [default: {default}]"
            kind = str(fld.type).replace(" | None", "")
            if kind == "bool":
                f = click.option(f"{flag}/--no-{flag[2:]}", fld.name, default=None, help=help_)(f)
            elif kind == "dict[str, Any]":
                f = click.option("--model-arg", fld.name, multiple=True, metavar="KEY=VALUE",
                                 help="model constructor argument, repeatable (e.g. base_width=32)")(f)
            elif kind == "list[float]":
                f = click.option(flag, fld.name, default=None, metavar="S0,S1,...", help=help_)(f)
            else:
                ptype = {"int": click.INT, "float": click.FLOAT}.get(kind, click.STRING)
                f = click.option(flag, fld.name, type=ptype, default=None, help=help_)(f)
        return f

    return decorator


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The options the user actually gave, converted to config values."""
    out = {}
    for key, value in options.items():
        if value is None or value == ():
            continue
        if key == "sigmas":
            value = _parse_floats(value)
        elif key == "model_kwargs":
            value = _parse_kv(value)
        out[key] = value
    return out


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _metric_rows(metrics: dict[str, float]) -> list[tuple[str, str]]:
    keys = ["iou", "dice", "accuracy", "precision", "recall", "loss"]
    keys += sorted(k for k in metrics if k not in keys)
    return [(k, f"{metrics[k]:.4f}") for k in keys if k in metrics]


# -------------------------------------------------------------------------- commands
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="texseg")
def cli() -> None:
    """texseg: neural segmentation of controllable synthetic textures.

    Typical session: `texseg generate` to look at the data, `texseg train` to train
    the default model for 30 s, `texseg eval RUN_DIR` to measure it again.
    """


@cli.command()
@config_options(__import__("texseg.training.config", fromlist=["TrainConfig"]).TrainConfig, only=SCENE_FIELDS)
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
    from texseg.data import generate as draw, target_from_labels
    from texseg.data.export import export_dataset
    from texseg.plots import samples_figure, save_figure
    from texseg.training.config import TrainConfig

    config = TrainConfig.from_dict(_given(scene_options)).validate()
    spec = config.scene()
    check_int("--seed", seed, minimum=0)
    check_int("--rows", rows, minimum=1, maximum=64)
    if count is not None and out is None:
        raise click.UsageError("--count needs --out DIR")
    if out is not None:
        count = 100 if count is None else check_int("--count", count, minimum=1)
        manifest = export_dataset(spec, out, count, seed, progress=not quiet)
        click.echo(f"exported {count} scenes to {out} (manifest: {manifest})")
    picture = picture or (str(Path(out) / "preview.png") if out else "samples.png")
    images, labels = draw(spec, rows, generator=torch.Generator().manual_seed(seed))
    if spec.num_regions == 2:  # show the notebook's mask: Omega_1 (label 0) as 1
        labels = target_from_labels(labels, 2)
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
@click.option("--quiet", is_flag=True, help="no progress bar")
@config_options(__import__("texseg.training.config", fromlist=["TrainConfig"]).TrainConfig)
def train(config_file: str | None, out: str | None, quiet: bool, **options: Any) -> int:
    """Train a model on freshly generated scenes; write a run directory.

    With no options: texseg's best default (a U-Net) at the notebook's difficulty
    (sigma1=0.2, sigma2=1.2, sigma=N/5, N=128) for 30 s of CPU training.
    """
    from texseg.training.config import TrainConfig
    from texseg.training.loop import COMPLETED, DIVERGED, train as run_training

    base = TrainConfig.from_json_file(config_file) if config_file else None
    config = TrainConfig.from_dict(_given(options), base=base).validate()
    result = run_training(config, out, progress=not quiet)
    s = result.summary
    click.echo(f"\nrun: {result.run_dir}   status: {result.status}" + (f" ({s['message']})" if s["message"] else ""))
    rows = [("model", f"{s['model']} ({s['parameters']:,} parameters)"),
            ("iterations", f"{s['iterations']}"),
            ("training time", f"{s['train_seconds']:.1f} s ({s['it_per_s']:.1f} it/s)"),
            ("evaluation time", f"{s['eval_seconds']:.1f} s")]
    rows += [(f"val {k}", v) for k, v in _metric_rows(s["val"])]
    click.echo(_table(rows))
    for note in s["notes"]:
        click.echo(f"note: {note}")
    if result.status == COMPLETED:
        return 0
    return EXIT_DIVERGED if result.status == DIVERGED else EXIT_INTERRUPTED


@cli.command(name="eval")
@click.argument("run_dir", type=click.Path())
@config_options(__import__("texseg.training.config", fromlist=["TrainConfig"]).TrainConfig, only=SCENE_FIELDS)
@click.option("--count", type=click.INT, default=256, show_default=True, help="held-out scenes")
@click.option("--seed", type=click.INT, default=2024, show_default=True, help="seed of the held-out set")
@click.option("--batch-size", type=click.INT, default=32, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
def eval_(run_dir: str, count: int, seed: int, batch_size: int, device: str, as_json: bool,
          **scene_options: Any) -> None:
    """Evaluate a saved model on a freshly generated held-out set.

    The scene defaults to the one the model was trained on; scene options change it.
    """
    import torch

    from texseg._validate import check_int
    from texseg.checkpoint import load_model
    from texseg.data import SceneSpec, generate as draw, target_from_labels
    from texseg.device import resolve_device
    from texseg.evaluation import evaluate

    check_int("--count", count, minimum=1, maximum=1_000_000)
    check_int("--seed", seed, minimum=0)
    check_int("--batch-size", batch_size, minimum=1)
    dev = resolve_device(device)
    model = load_model(run_dir, device=dev)
    info = model.texseg_info
    trained = SceneSpec.from_dict(info["scene"]) if info.get("scene") else SceneSpec()
    given = _given(scene_options)
    if given:
        from texseg.training.config import TrainConfig

        base = dict(image_size=trained.image_size, sigma=trained.partition_sigma,
                    sigmas=list(trained.texture_sigmas), regions=trained.num_regions,
                    smoothing=trained.smoothing_sigma or 1.0)
        if "sigma1" in given or "sigma2" in given or "regions" in given:
            base.pop("sigmas")
            base["sigma1"], base["sigma2"] = trained.texture_sigmas[0], trained.texture_sigmas[-1]
        spec = TrainConfig.from_dict({**base, **given}).validate().scene()
    else:
        spec = trained
    k = spec.num_regions
    if k != info["num_regions"]:
        raise ValueError(f"--regions {k} does not match the model, which segments {info['num_regions']} regions")
    cm_metrics: dict[str, float] = {}
    images, labels = draw(spec, count, generator=torch.Generator().manual_seed(seed))
    cm_metrics = evaluate(model, images.to(dev), target_from_labels(labels, k).to(dev), k, batch_size=batch_size)
    if as_json:
        click.echo(json.dumps({"run": run_dir, "scene": spec.to_dict(), "count": count, "seed": seed,
                               "metrics": cm_metrics}, indent=2))
        return
    sig = ", ".join(f"{s:g}" for s in spec.texture_sigmas)
    click.echo(f"{run_dir}: {info['name']} on {count} held-out scenes (seed {seed}; N={spec.image_size}, "
               f"partition sigma {spec.partition_sigma:g}, texture sigmas {sig})")
    click.echo(_table(_metric_rows(cm_metrics)))


@cli.command()
def models() -> None:
    """List the registered models with their parameter counts at defaults."""
    import warnings

    from texseg.models import count_parameters, create_model, list_models, model_spec

    rows = []
    for name in list_models():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            n = count_parameters(create_model(name))
        spec = model_spec(name)
        rows.append((name, f"{n:>9,}  {spec.description}" + ("  (see warning)" if spec.warning else "")))
    click.echo(_table(rows))
    for name in list_models():
        if model_spec(name).warning:
            click.echo(f"\nwarning ({name}): {model_spec(name).warning}")


# ------------------------------------------------------------------------ entry point
def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI, turning every error into one line and an exit code."""
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="texseg", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("texseg: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        click.echo(f"texseg: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except (ValueError, TexsegError) as e:
        click.echo(f"texseg: error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    except OSError as e:
        click.echo(f"texseg: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("texseg: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # a bug: still one line, with a way to see more
        if os.environ.get("TEXSEG_DEBUG"):
            raise
        click.echo(f"texseg: internal error: {type(e).__name__}: {e} (set TEXSEG_DEBUG=1 for the traceback)",
                   err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
