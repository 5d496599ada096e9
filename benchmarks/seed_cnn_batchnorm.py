"""The notebook CNN's shared BatchNorm: train-mode vs eval-mode accuracy, measured.

Run: python benchmarks/seed_cnn_batchnorm.py [--seconds 60]

Trains `seed-cnn` (one BatchNorm shared by three blocks, as in the notebook) and `cnn`
(one BatchNorm per block) with the notebook's settings (Adam 1e-3, MSE, batch 8,
128x128, sigma1=0.2, sigma2=1.2, sigma=N/5) for the same wall time, then scores each on
the same 64 held-out images twice: with batch statistics (train mode, as the notebook
measured) and with running statistics (eval mode, as any deployed model runs).
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
from pathlib import Path

import torch

from texseg.data import generate, target_from_labels
from texseg.evaluation import ConfusionMatrix
from texseg.training.config import TrainConfig
from texseg.training.loop import train


@torch.no_grad()
def score(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, train_mode: bool) -> dict:
    model = copy.deepcopy(model)  # train-mode forward passes update the running statistics
    model.train(train_mode)
    cm = ConfusionMatrix(2)
    for i in range(0, len(images), 8):  # batches of 8, as the notebook's
        cm.update(model(images[i:i + 8]), targets[i:i + 8])
    return cm.compute()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    from texseg.checkpoint import load_model

    rows = []
    tmp = Path(tempfile.mkdtemp())
    try:
        for name in ("seed-cnn", "cnn"):
            cfg = TrainConfig(model=name, loss="mse", optimizer="adam", lr=1e-3, schedule="constant",
                              time_budget=args.seconds, precision="fp32", eval_every=10**9)
            result = train(cfg, tmp / name, progress=False)
            model = load_model(result.run_dir)
            images, labels = generate(cfg.scene(), 64, generator=torch.Generator().manual_seed(cfg.val_seed))
            targets = target_from_labels(labels, 2)
            rows.append((name, result.summary["iterations"], score(model, images, targets, True),
                         score(model, images, targets, False)))
    finally:
        shutil.rmtree(tmp)
    print(f"{'model':<9} {'steps':>6} {'acc train-mode':>15} {'acc eval-mode':>14} "
          f"{'IoU train-mode':>15} {'IoU eval-mode':>14}")
    for name, steps, tr, ev in rows:
        print(f"{name:<9} {steps:>6} {tr['accuracy']:>15.4f} {ev['accuracy']:>14.4f} {tr['iou']:>15.4f} "
              f"{ev['iou']:>14.4f}")


if __name__ == "__main__":
    main()
