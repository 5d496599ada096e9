"""Score a texture-embedding model (texseg:general or a train-general run) against the classical methods.

Prints, per suite, the per-image matched mIoU (mean and 95% t-interval over the images)
of the model with K given (its embeddings with the image's Gabor energies beside them, the
default grouping; with ``--embeddings-alone`` also without them), of ``gabor-kmeans``, ``local-energy`` and the constant
baseline, each method's megapixels/s measured in this run, then the K-free mode (the
fraction of images whose number of regions it estimates right, on K = 2..5 scenes) and
the one-shot mode (mIoU of "where is the texture of this patch", the patch a 24 x 24
square inside region 0 of the truth).

Usage::

    python benchmarks/general_eval.py --model texseg:general --folders suites/oa-val suites/gimp
    python benchmarks/general_eval.py --model RUN --suites notebook --methods --no-kfree
    python benchmarks/general_eval.py --embeddings-alone ...   # also K given without the Gabor energies
    python benchmarks/general_eval.py --gabor-weight 1 ...     # also K given with them at weight 1
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from scipy import ndimage, stats

from texseg.benchmark.suites import resolve_suite
from texseg.device import cpu_description
from texseg.evaluation.region_metrics import region_metrics
from texseg.segmenters import load_segmenter

NAMED = ("notebook", "medium", "hard", "k4", "fine", "real", "k2to5", "families")


def _interval(values: list[float]) -> tuple[float, float, float]:
    a = np.asarray(values, dtype=np.float64)
    half = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else 0.0
    return float(a.mean()), float(max(0.0, a.mean() - half)), float(min(1.0, a.mean() + half))


def _score(seg, images: torch.Tensor, labels: torch.Tensor, ks: list[int]) -> tuple[list[float], float]:
    """Per-image matched mIoU (each image segmented into its own K) and megapixels/s."""
    start = time.perf_counter()
    pred = torch.zeros_like(labels)
    if seg is not None:
        for k in sorted(set(ks)):
            idx = [i for i, ki in enumerate(ks) if ki == k]
            pred[idx] = seg.segment(images[idx], k)
    seconds = time.perf_counter() - start
    mp_s = images.numel() / 1e6 / max(seconds, 1e-9)
    return [region_metrics(t[0].numpy(), p[0].numpy(), k)["miou"] for t, p, k in zip(labels, pred, ks)], mp_s


def _kfree(seg, suite: str, split: str = "test") -> tuple[float, float]:
    """Fraction of a K = 2..5 suite's images whose K is estimated right, and their mIoU."""
    images, labels = resolve_suite(suite).load(split)
    pred = seg.estimate(images)
    right = [len(np.unique(p.numpy())) == len(np.unique(t.numpy())) for t, p in zip(labels, pred)]
    scores = [region_metrics(t[0].numpy(), p[0].numpy())["miou"] for t, p in zip(labels, pred)]
    return float(np.mean(right)), float(np.mean(scores))


def _one_shot(seg, images: torch.Tensor, labels: torch.Tensor, side: int = 24) -> list[float]:
    scores = []
    for image, truth in zip(images, labels):
        inside = ndimage.binary_erosion(truth[0].numpy() == 0, np.ones((side, side)))
        ys, xs = np.nonzero(inside)
        if not len(ys):
            continue
        y, x = ys[len(ys) // 2] - side // 2, xs[len(xs) // 2] - side // 2
        patch = image[None, :, y:y + side, x:x + side]
        mask = seg.find(image[None], patch)[0, 0].numpy()
        scores.append(region_metrics((truth[0].numpy() == 0).astype(np.int64), 1 - mask, 2)["miou"])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="texseg:general")
    parser.add_argument("--suites", default=",".join(NAMED), help="named suites, comma-separated ('' for none)")
    parser.add_argument("--folders", nargs="*", default=[], help="folder suites (images/ + masks/)")
    parser.add_argument("--methods", action="store_true", help="also score gabor-kmeans and local-energy")
    parser.add_argument("--embeddings-alone", action="store_true",
                        help="also score the model grouping its embeddings alone (gabor_weight=0), K given")
    parser.add_argument("--gabor-weight", type=float, action="append", default=[],
                        help="also score the model, K given, with the Gabor energies at this weight (repeatable)")
    parser.add_argument("--no-kfree", action="store_true")
    parser.add_argument("--split", default="test", choices=("test", "tune"),
                        help="named suites' split (K given, K-free and one-shot): tune for choosing, test for the "
                             "figures; a folder suite is scored on its own images whatever the split")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_segmenter(args.model)
    segmenters = {args.model: model, "constant": None}
    if args.embeddings_alone:
        segmenters[f"{args.model} (embeddings alone)"] = load_segmenter(args.model, gabor_weight=0)
    for weight in args.gabor_weight:
        segmenters[f"{args.model} --gabor-weight {weight:g}"] = load_segmenter(args.model, gabor_weight=weight)
    if args.methods:
        segmenters.update({m: load_segmenter(m) for m in ("gabor-kmeans", "local-energy")})
    print(f"# {cpu_description()}; load average {os.getloadavg()[0]:.1f}")
    results: dict[str, dict[str, object]] = {}
    for name in [s for s in args.suites.split(",") if s] + args.folders:
        suite = resolve_suite(name)
        images, labels = suite.load("test" if name in args.folders else args.split)
        ks = suite.regions_per_image(labels)
        row: dict[str, object] = {}
        for seg_name, seg in segmenters.items():
            scores, mp_s = _score(seg, images, labels, suite.regions_per_image(labels))
            mean, lo, hi = _interval(scores)
            row[seg_name] = {"miou": round(mean, 4), "ci": [round(lo, 4), round(hi, 4)],
                             "mp_s": round(mp_s, 3) if seg is not None else None}
        if set(ks) == {2}:
            mean, lo, hi = _interval(_one_shot(model, images, labels))
            row["one-shot"] = {"miou": round(mean, 4), "ci": [round(lo, 4), round(hi, 4)]}
        results[suite.name] = row
        print(f"{suite.name:<10} " + "  ".join(
            f"{k} {v['miou']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]"
            + (f" {v['mp_s']:.2f} MP/s" if v.get("mp_s") else "") for k, v in row.items()), flush=True)
    if not args.no_kfree:
        for suite in ("k2to5", "families"):
            right, miou = _kfree(model, suite, args.split)
            results[f"kfree-{suite}"] = {"k_right": round(right, 4), "miou": round(miou, 4)}
            print(f"K-free on {suite} ({args.split}): K right on {right:.1%} of the images, mIoU {miou:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
