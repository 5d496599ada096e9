"""Choose the defaults of the classical segmenters on the suites' *tune* split.

The tune split is drawn from each suite's scene with a seed of its own, so the test
images that `texseg benchmark` scores are never seen here. For every method, every
point of a small grid is scored by the mean matched IoU over a few tuning images of
several suites; the table is printed as Markdown (see docs/benchmark.md).

    python benchmarks/tune_classical.py [--images 8] [--methods local-energy,gabor-kmeans,random-forest]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from texseg.benchmark import get_suite
from texseg.evaluation.region_metrics import region_metrics
from texseg.segmenters import load_segmenter

SUITES = ("notebook", "hard", "k4", "fine")
GRIDS = {
    "local-energy": {"scale": [0.3, 0.5, 0.7, 1.0, 2.0], "window": [2.0, 3.0, 4.0, 6.0, 8.0]},
    "gabor-kmeans": {"frequencies": [(0.05, 0.1, 0.2, 0.35), (0.1, 0.2, 0.35), (0.07, 0.14, 0.28)],
                     "smoothing": [0.5, 1.0, 2.0], "coordinates": [0.0, 0.5]},
    "random-forest": {"sigma_min": [0.5, 1.0], "sigma_max": [8.0, 16.0]},
}


def score(method: str, params: dict, data: dict, train: dict) -> tuple[list[float], float]:
    """Mean matched IoU per suite, and seconds per image."""
    seg = load_segmenter(method, **params)
    out, seconds, n = [], 0.0, 0
    for name, (images, labels) in data.items():
        k = int(labels.max()) + 1
        if seg.supervised:
            seg.fit(*train[name])
        start = time.perf_counter()
        pred = seg.segment(images, k)
        seconds += time.perf_counter() - start
        n += len(images)
        out.append(float(np.mean([region_metrics(t.numpy(), p.numpy(), k)["miou"] for t, p in zip(labels, pred)])))
    return out, seconds / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--methods", default=",".join(GRIDS))
    args = ap.parse_args()
    suites = {name: get_suite(name) for name in SUITES}
    data = {name: s.load("tune", args.images) for name, s in suites.items()}
    train = {name: s.load("train", 8) for name, s in suites.items()}
    for method in args.methods.split(","):
        grid = GRIDS[method]
        print(f"\n### {method} (mean matched IoU on {args.images} tune images per suite)\n")
        print("| " + " | ".join(list(grid) + list(SUITES) + ["mean", "s/image"]) + " |")
        print("|" + "---|" * (len(grid) + len(SUITES) + 2))
        for values in itertools.product(*grid.values()):
            params = dict(zip(grid, values))
            per_suite, spi = score(method, params, data, train)
            cells = [",".join(f"{x:g}" for x in v) if isinstance(v, tuple) else f"{v:g}" for v in values]
            print("| " + " | ".join(cells + [f"{x:.3f}" for x in per_suite]
                                    + [f"**{np.mean(per_suite):.3f}**", f"{spi:.3f}"]) + " |", flush=True)


if __name__ == "__main__":
    main()
