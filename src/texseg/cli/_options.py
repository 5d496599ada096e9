"""Shared pieces of the command line: options generated from config dataclasses, tables."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
from collections.abc import Callable, Sequence
from typing import Any

import click
import torch
from click.core import ParameterSource

from texseg.evaluation.names import METRIC_ORDER, TRIVIAL
from texseg.threads import choose_threads
from texseg.training.config import SCENE_FIELDS, TrainConfig, field_types  # noqa: F401  (SCENE_FIELDS re-exported)
from texseg.workers import available_cores


def use_free_cores() -> None:
    """torch threads of a command that runs models: the cores other programs leave free, as ``texseg train``
    starts with (beside one busy program on 2 cores, ``predict`` of a 256x256 image took 58-141 ms with 2
    threads and 19-22 ms with one; benchmarks/bench_load.py). ``OMP_NUM_THREADS``, when set, decides."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(choose_threads(available_cores()))


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


def config_options(only: Sequence[str] | None = None) -> Callable[[Callable], Callable]:
    """Decorator adding one click option per :class:`TrainConfig` field (all, or those in ``only``).

    Every option defaults to ``None`` so that the command can tell which ones the user
    gave (they override a config file); the field's default is shown in the help.
    """

    types = field_types()

    def decorator(f: Callable) -> Callable:
        for fld in reversed(dataclasses.fields(TrainConfig)):
            if only is not None and fld.name not in only:
                continue
            flag = "--" + fld.name.replace("_", "-")
            help_ = fld.metadata.get("help", "")
            default = (fld.default_factory() if fld.default_factory is not dataclasses.MISSING  # type: ignore[misc]
                       else fld.default)
            if default not in (None, {}, []):
                help_ += f"  [default: {default}]"
            kind = types[fld.name].base
            if kind is bool:
                f = click.option(f"{flag}/--no-{flag[2:]}", fld.name, default=None, help=help_)(f)
            elif kind is dict:
                f = click.option("--model-arg", fld.name, multiple=True, metavar="KEY=VALUE",
                                 help="model constructor argument, repeatable (e.g. base_width=32)")(f)
            elif kind is list:
                f = click.option(flag, fld.name, default=None, metavar="S0,S1,...", help=help_)(f)
            else:
                ptype = {int: click.INT, float: click.FLOAT}.get(kind, click.STRING)
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


# Shown next to the metric they are the baseline of, not as rows of their own.
_BASELINES = TRIVIAL
_HIDDEN = {"matched", "matched_set", "majority_prediction", "iou_0", "iou_1", *_BASELINES.values()}
_LABELS = {"iou": "iou (mean of regions)", "iou_omega1": "iou of Omega_1"}


def metric_rows(metrics: dict[str, float], folder: bool = False) -> list[tuple[str, str]]:
    """Table rows of a metrics dict: the headline first, each with its trivial baseline beside it.

    Args:
        metrics: the metrics.
        folder: scored on a folder's labels, whose label 0 is not the synthetic scenes' Omega_1.
    """
    keys = [METRIC_ORDER[0], "iou_omega1", *METRIC_ORDER[1:]]
    keys += sorted(k for k in metrics if k not in keys and k not in _HIDDEN)
    rows = []
    for k in (k for k in keys if k in metrics):
        base = metrics.get(_BASELINES.get(k, ""))
        label = "iou of label 0" if folder and k == "iou_omega1" else _LABELS.get(k, k)
        rows.append((label, f"{metrics[k]:.4f}" + (f"   (one region everywhere: {base:.4f})"
                                                                 if base is not None else "")))
    return rows


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def parse_value(name: str, text: str) -> Any:
    """One value of training option ``name`` from text, converted to the option's type.

    Raises:
        ValueError: naming ``values`` (the option that lists them): not a value of that type.
    """
    kind, text = field_types()[name], text.strip()
    if kind.optional and text.lower() in ("none", "default"):
        return None
    try:
        if kind.base is int:
            return int(text)
        if kind.base is float:
            v = float(text)
            if not math.isfinite(v):
                raise ValueError
            return v
    except ValueError:
        raise ValueError(f"values: {name} takes {kind.name} values, got {text!r}") from None
    if kind.base is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"values: {name} takes true/false, got {text!r}")
    return text


def parse_lrs(text: str, labels: Sequence[str]) -> dict[str, float] | str:
    """``--lrs``: ``auto``, one learning rate for every value, or ``VALUE=LR,...``."""
    text = text.strip()
    if text.lower() == "auto":
        return "auto"
    try:
        if "=" not in text:
            return dict.fromkeys(labels, float(text))
        return {key.strip(): float(lr) for key, _, lr in (pair.partition("=") for pair in text.split(","))}
    except ValueError:
        raise ValueError(f"lrs must be auto, one learning rate, or VALUE=LR,...; got {text!r}") from None


def command_arguments(ctx: click.Context, drop: Sequence[str] = ()) -> list[str]:
    """The command as typed (options the user gave, in declaration order, less ``drop``), as arguments."""
    parts = ["texseg", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE or param.name in drop:  # type: ignore[arg-type]
            continue
        value = ctx.params[param.name]  # type: ignore[index]
        if isinstance(param, click.Argument):
            parts.append(str(value))
        elif isinstance(param, click.Option) and param.is_flag and not param.secondary_opts:
            parts += [param.opts[0]] if value else []
        elif isinstance(param, click.Option) and param.secondary_opts:
            parts.append(param.opts[0] if value else param.secondary_opts[0])
        elif isinstance(param, click.Option) and param.multiple:
            for v in value:
                parts += [param.opts[0], str(v)]
        else:
            parts += [param.opts[0], str(value)]
    return parts


def command_line(ctx: click.Context) -> str:
    """The command as typed (options the user gave, in declaration order), for summary.md."""
    return shlex.join(command_arguments(ctx))


def jobs_option(ctx: click.Context, param: click.Parameter, value: str) -> int | str:
    """``--jobs N`` or ``auto`` (resolved by the library from cores, memory and the trials)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"must be an integer or auto, got {value!r}") from None
