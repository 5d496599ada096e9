"""``texseg train-general``: train a texture-agnostic embedding network (the ``texseg:general`` recipe)."""

from __future__ import annotations

import dataclasses
import typing

import click

from texseg.cli import cli
from texseg.training.general import GeneralConfig

_TYPES = {int: click.INT, float: click.FLOAT, str: click.STRING}


def _config_options(func: typing.Callable[..., object]) -> typing.Callable[..., object]:
    """One ``--flag`` per :class:`GeneralConfig` field, typed from its annotation, default from the field."""
    hints = typing.get_type_hints(GeneralConfig)
    for f in reversed(dataclasses.fields(GeneralConfig)):
        hint = hints[f.name]
        if typing.get_origin(hint) is tuple:
            kind = click.STRING
        else:  # X or X | None
            kind = _TYPES.get(next((t for t in typing.get_args(hint) if t is not type(None)), hint), click.STRING)
        default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        func = click.option(f"--{f.name.replace('_', '-')}", f.name, type=kind, default=default, show_default=True,
                            help=_HELP.get(f.name, ""))(func)
    return func


_HELP = {
    "steps": "optimisation steps", "time_budget": "seconds of training (the run ends at steps or budget)",
    "batch_size": "collages per step", "image_size": "collage side in pixels", "lr": "peak AdamW learning rate",
    "weight_decay": "AdamW weight decay", "embedding_dim": "size of each pixel's embedding",
    "width": "channels of the residual blocks", "dilations": "comma-separated dilations, one residual block each",
    "min_regions": "fewest regions of a training collage", "max_regions": "most regions of a training collage (<= 8)",
    "holdout": "a texture family never trained on, validated on ('none': no hold-out)",
    "gaussian_scenes": "fraction of training scenes drawn as the notebook's (textures that differ a little)",
    "nonstationary": "fraction of regions whose texture drifts as in a photo (perspective, shading)",
    "delta_v": "pull margin of the discriminative loss", "delta_d": "push margin of the discriminative loss",
    "val_size": "images of each validation set", "eval_every": "steps between validations",
    "early_stop": "stop once the validation score has not improved for this many validations",
    "val_data": "folder of real images/ + masks/ to validate on (model choice on real photographs)",
    "data": "fine-tune on your images: a folder as for `texseg train --data` (half of each batch)",
    "init_from": "start from these weights: texseg:general or a train-general run folder",
    "seed": "seed of the weights and the collage stream",
    "threads": "torch threads (default: the cores other programs leave free, followed during the run)",
}


@cli.command(name="train-general")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="the run folder")
@click.option("--resume", is_flag=True, help="continue the run in --out exactly where it stopped")
@_config_options
def train_general_command(run_dir: str, resume: bool, **settings: object) -> None:
    """Train a texnet: texture embeddings that segment textures it has never seen.

    The recipe of the shipped `texseg:general`: procedural collages of 12 texture families
    (one held out), K from 2 to 5, the discriminative loss; validation by k-means per image
    (matched mIoU). Ctrl-C stops after the current step with everything saved; `--resume`
    continues. Use the run folder wherever a run folder is accepted (predict, benchmark).
    """
    from texseg.training.general import train_general

    if isinstance(settings["dilations"], str):
        try:
            settings["dilations"] = tuple(int(x) for x in str(settings["dilations"]).split(",") if x.strip())
        except ValueError:
            raise ValueError(f"dilations must be comma-separated integers, got {settings['dilations']!r}") from None
    if settings["holdout"] in ("none", ""):
        settings["holdout"] = None
    config = GeneralConfig(**settings)  # type: ignore[arg-type]
    result = train_general(config, run_dir, resume=resume, log=click.echo)
    click.echo(f"{result.status}: {result.steps} steps in {result.train_seconds:.0f} s (+{result.eval_seconds:.0f} s "
               f"validation); best score {result.best_score:.4f} at step {result.best_step} -> {run_dir}")
    if result.message:
        click.echo(f"({result.message})")
    for note in result.notes:
        click.echo(f"warning: {note}", err=True)
