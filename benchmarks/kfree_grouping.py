"""Compare ways of grouping texseg:general's embeddings when K is unknown, and for one-shot.

Embeds the images of the ``tune`` (or ``test``) split of the ``k2to5`` and ``families``
suites once, caches the embeddings and true masks in an .npz under /tmp, then scores
grouping rules on the cached embeddings only: the fraction of images whose number of
regions is right, and their matched mIoU. One-shot rules are scored on the ``real``
suite (the patch a 24 x 24 square inside region 0, embedded in context as in
``benchmarks/general_eval.py``).

Usage::

    python benchmarks/kfree_grouping.py --split tune
    python benchmarks/kfree_grouping.py --split test --rules silhouette,merge
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from texseg.benchmark.suites import resolve_suite
from texseg.device import cpu_description
from texseg.evaluation.region_metrics import region_metrics
from texseg.inference import grouping
from texseg.inference.embedding import embed_with_reference
from texseg.segmenters import load_segmenter

DELTA_V, DELTA_D = 0.5, 1.5  # texseg.training.general defaults, those texseg:general was trained with


def _cache(split: str, model_name: str) -> dict[str, np.ndarray]:
    path = Path(f"/tmp/kfree_grouping_{split}.npz")
    if path.exists():
        return dict(np.load(path))
    seg = load_segmenter(model_name)
    out: dict[str, np.ndarray] = {}
    for suite in ("k2to5", "families"):
        images, labels = resolve_suite(suite).load(split)
        out[f"{suite}_emb"] = seg.embeddings(images).numpy().astype(np.float32)
        out[f"{suite}_truth"] = labels[:, 0].numpy().astype(np.int64)
    # one-shot on `real` (a test-only figure in general_eval; its tune split is what we choose on)
    images, labels = resolve_suite("real").load(split)
    embs, refs, truths = [], [], []
    for image, truth in zip(images, labels):
        side = 24
        inside = ndimage.binary_erosion(truth[0].numpy() == 0, np.ones((side, side)))
        ys, xs = np.nonzero(inside)
        if not len(ys):
            continue
        y, x = ys[len(ys) // 2] - side // 2, xs[len(xs) // 2] - side // 2
        patch = image[0, y:y + side, x:x + side].numpy()
        emb, ref = embed_with_reference(seg.model, image[0].numpy(), patch)
        embs.append(emb.numpy())
        refs.append(ref.numpy())
        truths.append(truth[0].numpy())
    out["real_emb"], out["real_ref"], out["real_truth"] = np.stack(embs), np.stack(refs), np.stack(truths)
    np.savez(path, **out)
    return out


def _points(emb: np.ndarray) -> np.ndarray:
    d = emb.shape[0]
    return grouping.smooth_embeddings(torch.from_numpy(emb)).reshape(d, -1).T.double().numpy()


def _km(sample, k, seed=0):
    with threadpool_limits(1):
        return KMeans(n_clusters=k, n_init=3, random_state=seed).fit(sample)


# ---- K-free rules: each returns labels of the points, from (points, sample)

def rule_current(emb):
    return grouping.cluster_embeddings(torch.from_numpy(emb), None).numpy()


def _silhouette(points, sample, min_area=0.03):
    fits = [_km(sample, c) for c in range(2, 9)]
    with threadpool_limits(1):
        scores = [silhouette_score(sample, f.labels_) if np.bincount(f.labels_).min() >= min_area * len(sample)
                  else -1.0 for f in fits]
    return fits[int(np.argmax(scores))].predict(points)


def _merge(points, sample, thr, over=8, min_area=0.01, linkage="average"):
    """Over-cluster with k-means, then merge centres (agglomerative) closer than thr; drop tiny clusters."""
    km = _km(sample, over)
    centres = km.cluster_centers_
    counts = np.bincount(km.labels_, minlength=over)
    agg = AgglomerativeClustering(n_clusters=None, distance_threshold=thr, linkage=linkage).fit(centres)
    lab = agg.labels_
    # merged centres: weighted means
    groups = np.unique(lab)
    mc = np.stack([(centres[lab == g] * counts[lab == g, None]).sum(0) / max(counts[lab == g].sum(), 1)
                   for g in groups])
    area = np.array([counts[lab == g].sum() for g in groups]) / counts.sum()
    keep = area >= min_area
    if keep.sum() < 2:
        keep = np.argsort(-area)[:2]
        mc = mc[keep]
    else:
        mc = mc[keep]
    d = ((points[:, None, :] - mc[None]) ** 2).sum(-1)
    return d.argmin(1)


def _agglo_pixels(points, sample, thr, linkage="ward", min_area=0.02):
    with threadpool_limits(1):
        agg = AgglomerativeClustering(n_clusters=None, distance_threshold=thr, linkage=linkage).fit(sample[:1024])
    lab = agg.labels_
    s = sample[:1024]
    groups = [g for g in np.unique(lab) if (lab == g).mean() >= min_area]
    if len(groups) < 2:
        groups = list(np.argsort(-np.bincount(lab))[:2])
    mc = np.stack([s[lab == g].mean(0) for g in groups])
    return ((points[:, None, :] - mc[None]) ** 2).sum(-1).argmin(1)


def _gmm_bic(points, sample):
    best, bic = None, np.inf
    with threadpool_limits(1):
        for k in range(2, 9):
            g = GaussianMixture(k, covariance_type="spherical", random_state=0, n_init=1).fit(sample)
            b = g.bic(sample)
            if b < bic:
                best, bic = g, b
    return best.predict(points)


def kfree_rules() -> dict:
    rules = {"current": None,
             "silhouette-1%": lambda p, s: _silhouette(p, s, 0.01),
             "gmm-bic": _gmm_bic}
    for thr in (1.0, 1.5, 2.0, 2.5):
        rules[f"merge-avg-{thr}"] = (lambda t: lambda p, s: _merge(p, s, t))(thr)
        rules[f"merge-single-{thr}"] = (lambda t: lambda p, s: _merge(p, s, t, linkage="single"))(thr)
    for over in (10, 12):
        for thr in (1.5, 2.0):
            rules[f"merge-avg-{thr}-over{over}"] = (lambda t, o: lambda p, s: _merge(p, s, t, over=o))(thr, over)
    return rules


def _eval_kfree(data, rules, only=None):
    for name, rule in rules.items():
        if only and name not in only:
            continue
        for suite in ("k2to5", "families"):
            embs, truths = data[f"{suite}_emb"], data[f"{suite}_truth"]
            right, mious = [], []
            start = time.perf_counter()
            for emb, truth in zip(embs, truths):
                if rule is None:
                    pred = rule_current(emb)
                else:
                    points = _points(emb)
                    sample = grouping._sample(points, 0)
                    pred = rule(points, sample).reshape(truth.shape)
                right.append(len(np.unique(pred)) == len(np.unique(truth)))
                mious.append(region_metrics(truth, pred)["miou"])
            sec = (time.perf_counter() - start) / len(embs)
            print(f"{name:<24} {suite:<9} K right {np.mean(right):6.1%}  mIoU {np.mean(mious):.3f}  "
                  f"{sec:.2f} s/image", flush=True)


# ---- one-shot rules: (emb, ref) -> mask

def _dist(emb, ref):
    return np.linalg.norm(grouping.smooth_embeddings(torch.from_numpy(emb)).numpy() - ref[:, None, None], axis=0)


def os_otsu(emb, ref):
    d = _dist(emb, ref)
    return d <= threshold_otsu(d)


def os_fixed(t):
    return lambda emb, ref: _dist(emb, ref) <= t


def os_otsu_clip(lo, hi):
    def f(emb, ref):
        d = _dist(emb, ref)
        return d <= np.clip(threshold_otsu(d), lo, hi)
    return f


def os_kfree_near(t):
    """K-free clusters (merge rule), keep the clusters whose centre is within t of the reference."""
    def f(emb, ref):
        points = _points(emb)
        sample = grouping._sample(points, 0)
        lab = _merge(points, sample, 2.0).reshape(emb.shape[1:])
        d = _dist(emb, ref)
        keep = [g for g in np.unique(lab) if np.median(d[lab == g]) <= t]
        if not keep:
            keep = [min(np.unique(lab), key=lambda g: np.median(d[lab == g]))]
        return np.isin(lab, keep)
    return f


def os_refine(t):
    """Threshold at t, then re-estimate the reference mean from the found region, threshold again."""
    def f(emb, ref):
        se = grouping.smooth_embeddings(torch.from_numpy(emb)).numpy()
        d = np.linalg.norm(se - ref[:, None, None], axis=0)
        m = d <= t
        for _ in range(2):
            if m.sum() < 16:
                break
            r = se[:, m].mean(1)
            d = np.linalg.norm(se - r[:, None, None], axis=0)
            m = d <= t
        return m
    return f


def os_recentred(emb, ref):
    """What grouping.reference_mask does now: re-centre on the nearest 10% of pixels, then Otsu twice."""
    return grouping.reference_mask(torch.from_numpy(emb), torch.from_numpy(ref)).numpy().astype(bool)


def oneshot_rules() -> dict:
    rules = {"otsu": os_otsu, "recentred (grouping.reference_mask)": os_recentred}
    for t in (0.75, 1.0, 1.25, 1.5, 2.0):
        rules[f"fixed-{t}"] = os_fixed(t)
    rules["otsu-clip-0.75-1.5"] = os_otsu_clip(0.75, 1.5)
    rules["otsu-clip-1.0-2.0"] = os_otsu_clip(1.0, 2.0)
    for t in (1.0, 1.5):
        rules[f"refine-{t}"] = os_refine(t)
    for t in (1.0, 1.5, 2.0):
        rules[f"kfree-near-{t}"] = os_kfree_near(t)
    return rules


def _eval_oneshot(data, rules, only=None):
    for name, rule in rules.items():
        if only and name not in only:
            continue
        scores = []
        for emb, ref, truth in zip(data["real_emb"], data["real_ref"], data["real_truth"]):
            mask = rule(emb, ref).astype(np.int64)
            scores.append(region_metrics((truth == 0).astype(np.int64), 1 - mask, 2)["miou"])
        print(f"one-shot {name:<22} real mIoU {np.mean(scores):.3f} (n={len(scores)})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="tune", choices=("tune", "test"))
    parser.add_argument("--model", default="texseg:general")
    parser.add_argument("--rules", default="", help="comma-separated rule names (default: all)")
    parser.add_argument("--no-oneshot", action="store_true")
    parser.add_argument("--no-kfree", action="store_true")
    args = parser.parse_args()
    only = set(args.rules.split(",")) if args.rules else None
    print(f"# {cpu_description()}; load average {os.getloadavg()[0]:.1f}; split {args.split}", flush=True)
    data = _cache(args.split, args.model)
    print("# cached: " + ", ".join(f"{k} {v.shape}" for k, v in data.items()), flush=True)
    if not args.no_oneshot:
        _eval_oneshot(data, oneshot_rules(), only)
    if not args.no_kfree:
        _eval_kfree(data, kfree_rules(), only)


if __name__ == "__main__":
    main()
