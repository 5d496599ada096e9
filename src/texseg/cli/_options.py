"""Shared pieces of the command line: options generated from config dataclasses, tables."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import click

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130
SCENE_FIELDS = ("image_size", "sigma1", "sigma2", "sigma", "regions", "sigmas", "smoothing",
                "texture", "textures", "texture_split", "texture_rotate", "texture_zoom")


def parse_floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def parse_kv(pairs: Sequence[str]) -> dict[str, Any]:
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


def given_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options the user actually gave, converted to config values."""
    out = {}
    for key, value in options.items():
        if value is None or value == ():
            continue
        if key == "sigmas":
            value = parse_floats(value)
        elif key == "model_kwargs":
            value = parse_kv(value)
        out[key] = value
    return out


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def metric_rows(metrics: dict[str, float]) -> list[tuple[str, str]]:
    keys = ["iou", "dice", "accuracy", "precision", "recall", "loss"]
    keys += sorted(k for k in metrics if k not in keys)
    return [(k, f"{metrics[k]:.4f}") for k in keys if k in metrics]
