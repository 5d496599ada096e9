"""Cost of scoring a validation batch: the old confusion matrix (torchmetrics) vs texseg's one bincount.

Run side by side in one process, on the same labels: ``before`` is the confusion matrix the
evaluation used until per-image matching (``torchmetrics`` ``multiclass_confusion_matrix``);
``fixed`` is :class:`texseg.evaluation.ConfusionMatrix` with ``matching="none"`` (the default
path, label mode fixed), ``image`` the same with per-image matching (label mode any). The
ratio is the time of each over ``before`` (1.0 = as fast; above 1 = slower).

    PYTHONPATH=src python benchmarks/bench_matching.py [--batch 32] [--size 128] [--repeats 50]
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from texseg.device import cpu_description
from texseg.evaluation import ConfusionMatrix


class TorchmetricsMatrix(ConfusionMatrix):
    """The ConfusionMatrix as it was: the same checks, the matrix from torchmetrics."""

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        batch = multiclass_confusion_matrix(pred.flatten(), target.flatten(), self.num_classes,
                                            validate_args=False).long()
        self._matrix = batch if self._matrix is None else self._matrix + batch


def score(matrix: type[ConfusionMatrix], k: int, matching: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    cm = matrix(k, matching)
    cm.update(logits, target)
    cm.compute()


def interleaved(calls: list[Callable[[], object]], repeats: int) -> list[float]:
    """The fastest of ``repeats`` rounds of each call, in seconds; the calls alternate, so load hits all alike."""
    for fn in calls:
        fn()  # warm-up
    best = [float("inf")] * len(calls)
    for _ in range(repeats):
        for i, fn in enumerate(calls):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    cpu = cpu_description()
    print(f"CPU {cpu['model']} ({cpu['cores']} cores, {', '.join(cpu['flags'])}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}; "
          f"batch {args.batch} x {args.size}x{args.size}; best of {args.repeats}")
    print(f"{'K':>2} {'before ms':>10} {'fixed ms':>9} {'ratio':>6} {'image ms':>9} {'ratio':>6}")
    gen = torch.Generator().manual_seed(0)
    for k in (2, 4, 8):
        channels = 1 if k == 2 else k
        logits = torch.randn(args.batch, channels, args.size, args.size, generator=gen)
        target = torch.randint(0, k, (args.batch, 1, args.size, args.size), generator=gen)
        if k == 2:
            target = target.float()

        t0, t1, t2 = interleaved([functools.partial(score, TorchmetricsMatrix, k, "none", logits, target),
                                  functools.partial(score, ConfusionMatrix, k, "none", logits, target),
                                  functools.partial(score, ConfusionMatrix, k, "image", logits, target)], args.repeats)
        print(f"{k:>2} {1e3 * t0:>10.2f} {1e3 * t1:>9.2f} {t1 / t0:>6.2f} {1e3 * t2:>9.2f} {t2 / t0:>6.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
