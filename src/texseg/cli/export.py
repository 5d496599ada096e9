"""``texseg export``: write a trained model as an ONNX file."""

from __future__ import annotations

import os

import click

from texseg.cli import cli
from texseg.errors import ExitCode


@cli.command("export")
@click.argument("run_dir", type=click.Path())
@click.option("--format", "format_", type=click.STRING, default="onnx", show_default=True,
              help="export format: onnx (dynamic batch, height and width)")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="file to write [default: RUN_DIR/model.onnx; NAME.onnx for texseg:NAME]")
def export(run_dir: str, format_: str, out: str | None) -> int:
    """Export RUN_DIR (a run folder or a shipped model such as texseg:general) for deployment.

    The ONNX graph is the network (for texnet models the embeddings; grouping stays in
    texseg): run it with `texseg predict model.onnx IMAGE... --out DIR` (needs the onnx
    extra: pip install 'texseg[onnx]') or any ONNX runtime. An existing file is replaced
    only by a complete new one.
    """
    from texseg._validate import check_choice
    from texseg.deploy import EXPORT_FORMATS, export_onnx, export_path

    check_choice("--format", format_, EXPORT_FORMATS)
    target = export_path(run_dir, out)
    if not target.parent.exists() or not target.parent.is_dir():
        raise ValueError(f"--out {target}: folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise ValueError(f"--out {target}: folder {target.parent} is not writable")
    path = export_onnx(run_dir, target)
    click.echo(f"wrote {path} (ONNX, dynamic batch/height/width)")
    return ExitCode.OK
