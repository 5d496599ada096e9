"""``texseg predict``: segment image files of any size with a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from texseg.cli import _flag_names, as_cli_message, cli
from texseg.errors import ExitCode, ImageReadError
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
@click.option("--precision", default="auto", show_default=True,
              help="auto (bf16 where the CPU/GPU has native bf16, else fp32), fp32 or bf16")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--max-pixels", type=click.INT, default=MAX_PIXELS, show_default=True,
              help="refuse images over this many pixels, from their header (decompression bombs); 0: no limit")
@click.option("--regions", type=click.INT, default=None,
              help="texnet models (texseg:general): the number of regions, 2..8 [default: estimated per image]")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="texnet models: an image patch of the texture to find (one-shot); the mask is 1 where it is")
@click.option("--gabor-weight", type=click.FLOAT, default=0.0, show_default=True,
              help="texnet models with --regions: weight of the image's Gabor filter-bank energies set beside the "
                   "embeddings (e.g. 1; slower); 0: the embeddings alone")
@click.option("--overwrite", is_flag=True, help="replace existing outputs (default: keep them)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def predict(run_dir: str, inputs: tuple[str, ...], out: str, tile: int | None, overlap: float, scale: float,
            batch_size: int, precision: str, device: str, max_pixels: int, regions: int | None,
            reference: str | None, gabor_weight: float, overwrite: bool, quiet: bool) -> int:
    """Segment image files (PNG, JPEG, TIFF 8/16-bit/float, BMP, GIF, WebP; gray, RGB or RGBA).

    INPUTS are image files or folders of them (a folder's NAME.mask.png and
    NAME.overlay.png, texseg's own outputs, are skipped). For a grey model colour
    becomes luminance (0.299 R + 0.587 G + 0.114 B, alpha ignored); a colour model
    (trained with --color) reads RGB (gray repeated, alpha dropped). Each image is min-max
    normalised as a whole, as in training. A file that cannot be used, or would not fit in memory,
    gets one error line; the others are still processed and the exit code is 2.
    Ctrl-C or SIGTERM stops between files and between window batches (exit 130).

    RUN_DIR is a run folder of `texseg train` or `texseg train-general`, a shipped model
    such as `texseg:general` (see `texseg models`), or an ONNX file of `texseg export`
    (run by onnxruntime; the onnx extra). A texture-embedding model finds the regions of
    textures it never saw, with --regions K, K estimated, or --reference.
    """
    from texseg._validate import check_int, check_positive
    from texseg.cli._options import use_free_cores
    from texseg.inference.grouping import GroupOptions
    from texseg.inference.predict import PredictSettings

    use_free_cores()
    flags = _flag_names(click.get_current_context())
    settings = PredictSettings(tile=tile, overlap=overlap, scale=scale, batch_size=batch_size, precision=precision,
                               overwrite=overwrite, max_pixels=check_int("--max-pixels", max_pixels, minimum=0) or None)
    if regions is not None:
        check_int("--regions", regions, 2, 8)
    options = GroupOptions(gabor_weight=check_positive("--gabor-weight", gabor_weight, allow_zero=True))
    # Each of these would be silently ignored: --reference finds one texture (two labels), and only
    # K given sets the Gabor energies beside the embeddings.
    if regions is not None and reference is not None:
        raise ValueError("--regions and --reference exclude each other: --reference finds where one texture is "
                         "(labels 0 and 1); give one of them")
    given = click.get_current_context().get_parameter_source("gabor_weight") == ParameterSource.COMMANDLINE
    if given and regions is None:
        raise ValueError("--gabor-weight applies with --regions K only (K estimated and --reference group the "
                         "embeddings without it); add --regions or drop --gabor-weight")
    _check_out(Path(out), inputs)
    model = _load(run_dir, device, regions is not None or reference is not None)
    patch = _read_reference(reference) if reference is not None else None
    files, skipped = _expand(inputs)
    if not files:
        raise ValueError(f"no image files in {', '.join(inputs)}")
    Path(out).mkdir(parents=True, exist_ok=True)
    counts = _predict_all(model, files, out, settings, {"regions": regions, "reference": patch,
                                                                 "grouping": options}, flags, quiet,
                          skipped)
    return ExitCode.USAGE if counts["failed"] else ExitCode.OK


def _read_reference(path: str) -> Any:
    """The --reference patch's pixels ((H, W) float32); a file that cannot be read names the option it came from."""
    from texseg.images import read_image

    try:
        return read_image(path)
    except ImageReadError as e:
        raise ValueError(f"--reference: {e}") from None


def _load(run_dir: str, device: str, grouping: bool) -> Any:
    """The model of RUN_DIR (run folder, ``texseg:NAME`` or ``.onnx`` file); refuses --regions for a logits model."""
    from texseg.checkpoint import load_model, load_pretrained
    from texseg.device import resolve_device
    from texseg.inference.embedding import is_embedding_model
    from texseg.inference.onnx import load_onnx
    from texseg.models.pretrained import is_pretrained_name

    if run_dir.endswith(".onnx"):
        model = load_onnx(run_dir)
    else:
        model = (load_pretrained if is_pretrained_name(run_dir) else load_model)(run_dir, device=resolve_device(device))
    if grouping and not is_embedding_model(model):
        regions = (model.run_info or {}).get("num_regions", "its")
        raise ValueError(f"--regions and --reference apply to texture-embedding models (texseg:general); "
                         f"{run_dir} segments {regions} regions")
    return model


def _predict_all(model: Any, files: list[Path], out: str, settings: Any, grouping: dict[str, Any],
                 flags: dict[str, str], quiet: bool, skipped: int) -> dict[str, int]:
    """Predict every file, one error line per failure; print the summary. Returns the counts."""
    from texseg.signals import Interrupted, stop_point
    from texseg.training.progress import Progress

    counts = {"written": 0, "kept": 0, "failed": 0, "skipped": skipped}
    inputs_resolved = {p.resolve() for p in files if p.exists()}
    seen: dict[Path, Path] = {}
    # A bar on a terminal, plain lines in a log (never carriage returns), as `texseg train` does.
    bar = Progress(len(files), 0, "img", enabled=not quiet and len(files) > 1, what="image", desc="predict")
    try:
        for done, path in enumerate(files, 1):
            stop_point()  # between two files
            try:
                message = _predict_one(model, path, out, settings, grouping, seen, inputs_resolved, counts)
            finally:  # counted once handled, whatever the outcome
                bar.update(1, done)
            if message:
                counts["failed"] += 1
                bar.write(f"texseg: error: {as_cli_message(message, flags)}")
    except Interrupted:
        bar.close()
        _summary(counts, out, ", stopped early")
        raise
    bar.close()
    _summary(counts, out)
    return counts


def _summary(counts: dict[str, int], out: str, end: str = "") -> None:
    note = " (their outputs exist; --overwrite replaces them)" if counts["kept"] else ""
    skip = f", {counts['skipped']} of texseg's own outputs skipped" if counts["skipped"] else ""
    click.echo(f"{counts['written']} segmented, {counts['kept']} kept{note}, {counts['failed']} failed{skip}{end} "
               f"-> {out}")


def _predict_one(model: Any, path: Path, out: str, settings: Any, grouping: dict[str, Any], seen: dict[Path, Path],
                 inputs_resolved: set[Path], counts: dict[str, int]) -> str | None:
    """Predict one file; the error message when it failed (None when it did not)."""
    from texseg.errors import TexsegError
    from texseg.inference.predict import output_paths, predict_file

    targets = output_paths(path, out)
    try:
        if targets["mask"] in seen:
            raise ValueError(f"{path}: same output name as {seen[targets['mask']]}; rename one of them")
        seen[targets["mask"]] = path
        clash = [p for p in targets.values() if p.exists() and p.resolve() in inputs_resolved]
        if clash:
            raise ValueError(f"{path}: its output {clash[0]} is also an input; choose another `out`")
        result = predict_file(model, path, out, settings, **grouping)
    except (TexsegError, ValueError) as e:
        return str(e)
    except OSError as e:
        return f"{e.filename or path}: {e.strerror or e}"
    except (MemoryError, RuntimeError) as e:
        if not _is_memory_error(e):
            raise
        return (f"{path}: not enough memory ({str(e).splitlines()[0][:200] if str(e) else 'MemoryError'}); "
                "use a smaller `scale` or `tile`")
    counts["written" if result.written else "kept"] += 1
    return None
