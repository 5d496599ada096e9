"""Images/s of data-parallel training: 1 process against N processes (torchrun, gloo on CPU).

Each process uses --threads 1 so that N processes use N cores; the per-process batch is
the same, so N processes train on N times the images per step. Prints the median of
--repeats runs per world size and the ratio to one process.

    python benchmarks/bench_distributed.py --procs 1,2 --model cnn --iterations 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def images_per_second(nproc: int, args: argparse.Namespace, out: Path) -> float:
    cmd = [sys.executable, "-m", "texseg", "train", "--nproc", str(nproc), "--model", args.model,
           "--batch-size", str(args.batch_size), "--iterations", str(args.iterations), "--threads", "1",
           "--precision", "fp32", "--no-figures", "--quiet", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    s = json.loads((out / "summary.json").read_text())
    return s["iterations"] * args.batch_size * s["world_size"] / s["train_seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", default="1,2", help="world sizes to compare")
    p.add_argument("--model", default="cnn")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"cores: {len(os.sched_getaffinity(0))}; model {args.model}, batch {args.batch_size} per process, "
          f"128x128, fp32, 1 thread per process")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.procs.split(",")):
            rates = [images_per_second(n, args, Path(tmp) / f"n{n}-{i}") for i in range(args.repeats)]
            rate = statistics.median(rates)
            base = base or rate
            print(f"{n} process(es): {rate:8.1f} images/s (median of {args.repeats}: "
                  f"{', '.join(f'{r:.1f}' for r in rates)})  x{rate / base:.2f}")


if __name__ == "__main__":
    main()
