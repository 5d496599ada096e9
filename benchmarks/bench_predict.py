"""Peak memory and speed of `texseg predict` on one large image, on CPU.

Run: python benchmarks/bench_predict.py [--size 8192] [--model unet] [--tile 512] [--threads 2]

1. writes a SIZE x SIZE 8-bit PNG made of generated scenes (1024 x 1024 each, so that
   making the input does not itself need gigabytes);
2. in a fresh child process: loads a model (registry defaults, fixed-seed weights: speed
   and memory do not depend on the weights), runs ``predict_file`` on it with tiling
   (``--tile``, overlap 0.25) and reports the child's peak resident memory: ``VmHWM`` of
   ``/proc/self/status`` (the high-water mark of this process's own address space:
   the interpreter, torch, the decoded image, accumulators, the outputs being encoded)
   next to its resident memory just before predicting, the wall time and megapixels per second.

Why not ``ru_maxrss``: Linux carries ``ru_maxrss`` over ``fork`` + ``exec``, so a child
started by a parent that once held gigabytes reports the parent's peak (this benchmark's
first version did: 2.3 GiB, of which most was the parent generating the input). The input
is therefore also made in its own process, and both figures are printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _rss_mib() -> float:
    """Current resident set size of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _vm_hwm_mib() -> float:
    """Peak resident set size of this process's address space since its exec (Linux), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(args: argparse.Namespace) -> None:
    import texseg
    from texseg.inference.predict import PredictSettings, predict_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = texseg.create_model(args.model).eval()
    before = _rss_mib()
    t0 = time.perf_counter()
    predict_file(model, args.image, args.out,
                 PredictSettings(tile=args.tile, overlap=0.25, batch_size=args.batch_size, overwrite=True))
    seconds = time.perf_counter() - t0
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_rss_mib": _vm_hwm_mib(), "ru_maxrss_mib": maxrss,
                      "rss_before_mib": before}))


def make_image(path: Path, size: int) -> None:
    import imageio.v3 as iio

    from texseg.data import SceneSpec, generate

    block = min(size, 1024)
    spec = SceneSpec.notebook(block, 0.2, 1.2, block / 8)
    reps = -(-size // block)
    images, _ = generate(spec, reps * reps, generator=torch.Generator().manual_seed(0))
    tiles = (images[:, 0] * 255).round().to(torch.uint8).numpy()
    rows = [np.concatenate(list(tiles[r * reps:(r + 1) * reps]), axis=1) for r in range(reps)]
    iio.imwrite(path, np.concatenate(rows, axis=0)[:size, :size])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--model", default="unet")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--make-image", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.make_image:
        make_image(Path(args.image), args.size)
        return
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "big.png"
        # In its own process, so this one stays small (see the module docstring).
        subprocess.run([sys.executable, __file__, "--make-image", "--image", str(image), "--size", str(args.size)],
                       check=True)
        cmd = [sys.executable, __file__, "--child", "--image", str(image), "--out", str(Path(tmp) / "out"),
               "--model", args.model, "--tile", str(args.tile), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        outputs = {p.name: p.stat().st_size for p in (Path(tmp) / "out").iterdir()}
    mp = args.size**2 / 1e6
    print(f"predict {args.size}x{args.size} ({mp:.1f} MP) with {args.model}, tile {args.tile}, overlap 0.25, "
          f"batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}")
    print(f"  peak RSS      {result['peak_rss_mib']:8.0f} MiB  VmHWM (before predicting: "
          f"{result['rss_before_mib']:.0f} MiB; ru_maxrss {result['ru_maxrss_mib']:.0f} MiB)")
    print(f"  time          {result['seconds']:8.1f} s  (read, predict, write all three outputs)")
    print(f"  speed         {mp / result['seconds']:8.2f} MP/s")
    print(f"  outputs       {', '.join(f'{k} {v / 2**20:.0f} MiB' for k, v in sorted(outputs.items()))}")


if __name__ == "__main__":
    main()
