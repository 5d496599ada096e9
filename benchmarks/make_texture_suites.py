"""Write real-texture benchmark suites (folders of images/ + masks/) from texture files on this machine.

texseg ships no third-party texture images; this script turns textures that a machine
has into folder suites for ``texseg benchmark --suites DIR`` and ``benchmarks/general_eval.py``:
two-region mosaics of the generator's random partitions, each region a crop of a
different texture (``texseg.data.mosaic``), 64 images of 128 x 128 by default.

Sources used for texseg:general's model card (Debian packages, fetched with
``apt-get download PKG && dpkg-deb -x PKG.deb DIR``; nothing is installed):

- validation (model choice): ``openarena-081-textures`` (game textures, unzip its .pk3):
  ``--textures DIR/textures --split val``;
- independent test (never used for a choice): ``gimp-data``'s patterns (GIMP's ``.pat``
  format, read here; they tile seamlessly, so each is tiled to 512 x 512 first):
  ``--gimp-patterns DIR/usr/share/gimp/2.0/patterns``.

Usage::

    python benchmarks/make_texture_suites.py --gimp-patterns PATTERNS --out suites/gimp
    python benchmarks/make_texture_suites.py --textures OA/textures --split val --out suites/oa-val
"""

from __future__ import annotations

import argparse
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from texseg.data import SceneSpec, generate


def read_gimp_pattern(path: Path) -> np.ndarray:
    """A GIMP ``.pat`` file as an (H, W) uint8 luminance array (header: size, version, w, h, bytes, 'GPAT')."""
    data = path.read_bytes()
    header_size, version, width, height, depth = struct.unpack(">5I", data[:20])
    if data[20:24] != b"GPAT" or depth not in (1, 2, 3, 4):
        raise ValueError(f"{path}: not a GIMP pattern")
    pixels = np.frombuffer(data[header_size:header_size + width * height * depth], dtype=np.uint8)
    pixels = pixels.reshape(height, width, depth).astype(np.float32)
    if depth >= 3:
        return (pixels[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.uint8)
    return pixels[..., 0].astype(np.uint8)


def _texture_folder(args: argparse.Namespace, tmp: Path) -> Path:
    """A folder of usable texture PNGs (tiled GIMP patterns, or chosen texture images)."""
    out = tmp / "textures"
    out.mkdir()
    if args.gimp_patterns:
        for i, p in enumerate(sorted(Path(args.gimp_patterns).rglob("*.pat"))):
            a = read_gimp_pattern(p)
            if a.std() < 8:  # nearly flat: no texture to tell apart
                continue
            reps = (-(-512 // a.shape[0]), -(-512 // a.shape[1]))
            Image.fromarray(np.tile(a, reps)[:512, :512]).save(out / f"{i:03d}-{p.stem}.png")
        return out
    files = sorted(p for p in Path(args.textures).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    usable = []
    for p in files:
        with Image.open(p) as im:
            if min(im.size) >= 256 and np.asarray(im.convert("L"), dtype=np.float32).std() >= 12:
                usable.append(p)
    order = np.random.default_rng(0).permutation(len(usable))
    half = len(usable) // 2
    chosen = order[:half] if args.split == "val" else order[half:]
    for i in sorted(chosen)[: args.max_textures]:
        Image.open(usable[i]).convert("L").save(out / f"{i:04d}-{usable[i].stem}.png")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--textures", help="a folder of texture images (searched recursively)")
    source.add_argument("--gimp-patterns", help="GIMP's patterns folder (.pat files)")
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="with --textures: which half of the textures (fixed seed)")
    parser.add_argument("--max-textures", type=int, default=80)
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        folder = _texture_folder(args, Path(tmp))
        spec = SceneSpec(args.size, args.size / 5, (1.0, 2.0), None, texture="mosaic", textures=str(folder))
        images, labels = generate(spec, args.count, generator=torch.Generator().manual_seed(args.seed))
        n_textures = len(list(folder.iterdir()))
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    for i in range(args.count):
        Image.fromarray((images[i, 0].numpy() * 255).round().astype(np.uint8)).save(out / "images" / f"{i:03d}.png")
        Image.fromarray(labels[i, 0].numpy().astype(np.uint8)).save(out / "masks" / f"{i:03d}.png")
    print(f"{args.count} mosaics of {args.size}x{args.size} from {n_textures} textures -> {out}")


if __name__ == "__main__":
    main()
