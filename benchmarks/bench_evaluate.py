"""Cost of validation: the eager forward pass validation used before vs the shared inferer it uses now.

Run side by side in one process, on the same images and weights: ``eager`` is the loop
:func:`texseg.evaluation.score_batches` ran until it shared deployment's forward pass
(``model(x)`` under ``no_grad``, one confusion matrix); ``inferer`` is ``score_batches``
now (:func:`texseg.inference.inferer.forward`, fp32: inference mode, channels-last, the
fused inference copy). Before every round the weights change a little, as they do between
two validations of a training run, so the fused copy is rebuilt each time as it is there.
The ratio is eager time over inferer time (above 1: the inferer is faster); the metrics of
both are printed to show they agree.

    PYTHONPATH=src python benchmarks/bench_evaluate.py [--images 64] [--size 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

from texseg.data.scene import SceneSpec, generate, target_from_labels
from texseg.device import cpu_description
from texseg.evaluation import ConfusionMatrix, evaluate
from texseg.models import create_model


@torch.no_grad()
def eager_evaluate(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int = 32) -> dict:
    """Validation as it was: the model's own forward pass, in eval mode."""
    cm = ConfusionMatrix(2)
    model.eval()
    for i in range(0, images.shape[0], batch_size):
        cm.update(model(images[i:i + batch_size]), targets[i:i + batch_size])
    return cm.compute()


def nudge(model: nn.Module) -> None:
    """A small weight change, as one optimisation step makes (the inferer's cached copy goes stale)."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.0001)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default="unet,cnn")
    args = ap.parse_args()
    cpu = cpu_description()
    spec = SceneSpec(image_size=args.size)
    images, labels = generate(spec, args.images, generator=torch.Generator().manual_seed(0))
    targets = target_from_labels(labels, spec.num_regions)
    print(f"CPU {cpu['model']} ({cpu['cores']} cores, {', '.join(cpu['flags'])}); torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.2f}; {args.images} images of {args.size}x{args.size}; "
          f"best of {args.repeats}, the two alternating")
    print(f"{'model':<11} {'threads':>7} {'eager s':>8} {'inferer s':>9} {'ratio':>6}  IoU eager / inferer")
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        for name in args.models.split(","):
            model = create_model(name)
            model.train()
            model(images[:4])  # BatchNorm running statistics that are not the identity
            best = [float("inf"), float("inf")]
            for _ in range(args.repeats):
                for i, fn in enumerate((eager_evaluate, evaluate)):
                    nudge(model)
                    start = time.perf_counter()
                    metrics = fn(model, images, targets) if i == 0 else fn(model, images, targets, 2)
                    best[i] = min(best[i], time.perf_counter() - start)
                    iou = metrics["iou"]
                    if i == 0:
                        eager_iou = iou
            print(f"{name:<11} {threads:>7} {best[0]:>8.3f} {best[1]:>9.3f} {best[0] / best[1]:>6.2f}  "
                  f"{eager_iou:.4f} / {iou:.4f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
