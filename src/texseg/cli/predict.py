"""``texseg predict``: segment image files of any size with a trained model."""

from __future__ import annotations

from pathlib import Path

import click

from texseg.cli import cli
from texseg.errors import ExitCode


def _expand(inputs: tuple[str, ...]) -> list[Path]:
    """Files as given, folders replaced by the image files directly inside them."""
    from texseg.inference.io import list_images

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        files.extend(list_images(p) if p.is_dir() else [p])
    return files


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="folder for NAME.mask.png, NAME.prob.npy and NAME.overlay.png")
@click.option("--tile", type=click.INT, default=None,
              help="window side for sliding-window inference; 0: always whole image  "
                   "[default: whole image up to 1024x1024 pixels, else 512]")
@click.option("--overlap", type=click.FLOAT, default=0.25, show_default=True, help="window overlap fraction")
@click.option("--scale", type=click.FLOAT, default=1.0, show_default=True,
              help="resample each image by this factor before predicting (result at the input's size)")
@click.option("--batch-size", type=click.INT, default=1, show_default=True, help="windows per forward pass")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--overwrite", is_flag=True, help="replace existing outputs (default: keep them)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def predict(run_dir: str, inputs: tuple[str, ...], out: str, tile: int | None, overlap: float, scale: float,
            batch_size: int, device: str, overwrite: bool, quiet: bool) -> int:
    """Segment image files (PNG, JPEG, TIFF 8/16-bit, BMP; gray, RGB or RGBA).

    INPUTS are image files or folders of them. Colour becomes luminance
    (0.299 R + 0.587 G + 0.114 B, alpha ignored) and each image is min-max normalised
    as a whole, as in training. A file that cannot be used gets one error line; the
    others are still processed and the exit code is 2.
    """
    from texseg._validate import check_int, check_positive
    from texseg.checkpoint import load_model
    from texseg.device import resolve_device
    from texseg.errors import TexsegError
    from texseg.inference.predict import output_paths, predict_file
    from texseg.training.progress import Progress

    if tile is not None and tile != 0:
        check_int("--tile", tile, minimum=16)
    check_positive("--overlap", overlap, allow_zero=True)
    if overlap > 0.9:
        raise ValueError(f"--overlap must be a fraction in [0, 0.9], got {overlap}")
    check_positive("--scale", scale)
    check_int("--batch-size", batch_size, minimum=1)
    model = load_model(run_dir, device=resolve_device(device))
    files = _expand(inputs)
    if not files:
        raise ValueError(f"no image files in {', '.join(inputs)}")
    Path(out).mkdir(parents=True, exist_ok=True)
    failed, written, kept = 0, 0, 0
    seen: dict[Path, Path] = {}
    # A bar on a terminal, plain lines in a log (never carriage returns), as `texseg train` does.
    bar = Progress(len(files), 0, "img", enabled=not quiet and len(files) > 1, what="image", desc="predict")
    try:
        for done, path in enumerate(files, 1):
            try:
                mask_path = output_paths(path, out)["mask"]
                try:
                    if mask_path in seen:
                        raise ValueError(f"{path}: same output name as {seen[mask_path]}; rename one of them")
                    seen[mask_path] = path
                    result = predict_file(model, path, out, tile=tile, overlap=overlap, scale=scale,
                                          batch_size=batch_size, overwrite=overwrite)
                except (TexsegError, ValueError) as e:
                    failed += 1
                    bar.write(f"texseg: error: {e}")
                    continue
                except OSError as e:
                    failed += 1
                    name = e.filename or path
                    bar.write(f"texseg: error: {name}: {e.strerror or e}")
                    continue
                written += bool(result.written)
                kept += not result.written
            finally:  # counted once handled, whatever the outcome
                bar.update(1, done)
    finally:
        bar.close()
    note = " (their outputs exist; --overwrite replaces them)" if kept else ""
    click.echo(f"{written} segmented, {kept} kept{note}, {failed} failed -> {out}")
    return ExitCode.USAGE if failed else ExitCode.OK
