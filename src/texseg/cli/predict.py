"""``texseg predict``: segment image files of any size with a trained model."""

from __future__ import annotations

from pathlib import Path

import click

from texseg.cli import _flag_names, as_cli_message, cli
from texseg.errors import ExitCode
from texseg.images import MAX_PIXELS


def _expand(inputs: tuple[str, ...]) -> tuple[list[Path], int]:
    """Files as given, folders replaced by the image files directly inside them, and how many were skipped.

    A folder's ``NAME.mask.png`` and ``NAME.overlay.png`` are texseg's own outputs (of an
    earlier run into that folder): they are never taken as inputs.
    """
    from texseg.images import list_images
    from texseg.inference.predict import OUTPUT_IMAGE_SUFFIXES

    files: list[Path] = []
    skipped = 0
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list_images(p, skip_suffixes=OUTPUT_IMAGE_SUFFIXES)
            skipped += len(list_images(p)) - len(found)
            files.extend(found)
        else:
            files.append(p)
    return files, skipped


def _check_out(out: Path, inputs: tuple[str, ...]) -> None:
    """Refuse an --out folder that is an input folder: outputs would mix with (and could replace) the inputs."""
    for item in inputs:
        p = Path(item)
        if p.is_dir() and out.exists() and out.resolve() == p.resolve():
            raise ValueError(f"--out {out} is also an input folder: its outputs would mix with its images and "
                             "could replace them; choose another folder")


def _is_memory_error(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and any(
        s in str(e) for s in ("can't allocate", "out of memory", "DefaultCPUAllocator", "not enough memory")))


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="folder for NAME.mask.png, NAME.prob.npy and NAME.overlay.png (not an input folder)")
@click.option("--tile", type=click.INT, default=None,
              help="window side for sliding-window inference; 0: always whole image  "
                   "[default: whole image up to 1024x1024 pixels, else 512]")
@click.option("--overlap", type=click.FLOAT, default=0.25, show_default=True, help="window overlap fraction")
@click.option("--scale", type=click.FLOAT, default=1.0, show_default=True,
              help="resample each image by this factor before predicting (result at the input's size)")
@click.option("--batch-size", type=click.INT, default=1, show_default=True, help="windows per forward pass")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--max-pixels", type=click.INT, default=MAX_PIXELS, show_default=True,
              help="refuse images over this many pixels, from their header (decompression bombs); 0: no limit")
@click.option("--regions", type=click.INT, default=None,
              help="texnet models (texseg:general): the number of regions, 2..8 [default: estimated per image]")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="texnet models: an image patch of the texture to find (one-shot); the mask is 1 where it is")
@click.option("--overwrite", is_flag=True, help="replace existing outputs (default: keep them)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def predict(run_dir: str, inputs: tuple[str, ...], out: str, tile: int | None, overlap: float, scale: float,
            batch_size: int, device: str, max_pixels: int, regions: int | None, reference: str | None,
            overwrite: bool, quiet: bool) -> int:
    """Segment image files (PNG, JPEG, TIFF 8/16-bit/float, BMP, GIF, WebP; gray, RGB or RGBA).

    INPUTS are image files or folders of them (a folder's NAME.mask.png and
    NAME.overlay.png, texseg's own outputs, are skipped). For a grey model colour
    becomes luminance (0.299 R + 0.587 G + 0.114 B, alpha ignored); a colour model
    (trained with --color) reads RGB (gray repeated, alpha dropped). Each image is min-max
    normalised as a whole, as in training. A file that cannot be used, or would not fit in memory,
    gets one error line; the others are still processed and the exit code is 2.
    Ctrl-C or SIGTERM stops between files and between window batches (exit 130).

    RUN_DIR is a run folder of `texseg train` or `texseg train-general`, or a shipped
    model such as `texseg:general` (see `texseg models`): a texture-embedding model finds
    the regions of textures it never saw, with --regions K, K estimated, or --reference.
    """
    from texseg._validate import check_int, check_positive
    from texseg.checkpoint import load_model, load_pretrained
    from texseg.device import resolve_device
    from texseg.errors import TexsegError
    from texseg.images import read_image
    from texseg.inference.embedding import is_embedding_model
    from texseg.inference.predict import output_paths, predict_file
    from texseg.models.pretrained import is_pretrained_name
    from texseg.signals import Interrupted, stop_point
    from texseg.training.progress import Progress

    if tile is not None and tile != 0:
        check_int("--tile", tile, minimum=16)
    check_positive("--overlap", overlap, allow_zero=True)
    if overlap > 0.9:
        raise ValueError(f"--overlap must be a fraction in [0, 0.9], got {overlap}")
    check_positive("--scale", scale)
    check_int("--batch-size", batch_size, minimum=1)
    check_int("--max-pixels", max_pixels, minimum=0)
    if regions is not None:
        check_int("--regions", regions, 2, 8)
    flags = _flag_names(click.get_current_context())
    _check_out(Path(out), inputs)
    model = (load_pretrained if is_pretrained_name(run_dir) else load_model)(run_dir, device=resolve_device(device))
    if not is_embedding_model(model) and (regions is not None or reference is not None):
        raise ValueError(f"--regions and --reference apply to texture-embedding models (texseg:general); "
                         f"{run_dir} segments {model.run_info['num_regions']} regions")
    patch = read_image(reference) if reference is not None else None
    files, skipped = _expand(inputs)
    if not files:
        raise ValueError(f"no image files in {', '.join(inputs)}")
    Path(out).mkdir(parents=True, exist_ok=True)
    inputs_resolved = {p.resolve() for p in files if p.exists()}
    failed, written, kept = 0, 0, 0
    seen: dict[Path, Path] = {}

    def error(message: str) -> None:
        nonlocal failed
        failed += 1
        bar.write(f"texseg: error: {as_cli_message(message, flags)}")

    def summary(end: str = "") -> None:
        note = " (their outputs exist; --overwrite replaces them)" if kept else ""
        skip = f", {skipped} of texseg's own outputs skipped" if skipped else ""
        click.echo(f"{written} segmented, {kept} kept{note}, {failed} failed{skip}{end} -> {out}")

    # A bar on a terminal, plain lines in a log (never carriage returns), as `texseg train` does.
    bar = Progress(len(files), 0, "img", enabled=not quiet and len(files) > 1, what="image", desc="predict")
    try:
        for done, path in enumerate(files, 1):
            stop_point()  # between two files
            try:
                targets = output_paths(path, out)
                mask_path = targets["mask"]
                try:
                    if mask_path in seen:
                        raise ValueError(f"{path}: same output name as {seen[mask_path]}; rename one of them")
                    seen[mask_path] = path
                    clash = [p for p in targets.values() if p.exists() and p.resolve() in inputs_resolved]
                    if clash:
                        raise ValueError(f"{path}: its output {clash[0]} is also an input; choose another `out`")
                    result = predict_file(model, path, out, tile=tile, overlap=overlap, scale=scale,
                                          batch_size=batch_size, overwrite=overwrite, max_pixels=max_pixels or None,
                                          regions=regions, reference=patch)
                except (TexsegError, ValueError) as e:
                    error(str(e))
                    continue
                except OSError as e:
                    error(f"{e.filename or path}: {e.strerror or e}")
                    continue
                except (MemoryError, RuntimeError) as e:
                    if not _is_memory_error(e):
                        raise
                    error(f"{path}: not enough memory ({str(e).splitlines()[0][:200] if str(e) else 'MemoryError'}); "
                          "use a smaller `scale` or `tile`")
                    continue
                written += bool(result.written)
                kept += not result.written
            finally:  # counted once handled, whatever the outcome
                bar.update(1, done)
    except Interrupted:
        bar.close()
        summary(", stopped early")
        raise
    bar.close()
    summary()
    return ExitCode.USAGE if failed else ExitCode.OK
