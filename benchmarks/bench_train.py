"""Training speed and the 30-second target, texseg against the notebook's loop, in one run.

Run: python benchmarks/bench_train.py [--budget 30] [--seconds 10] [--skip-target]

1. The target: `texseg train`'s defaults for --budget seconds of training, then the IoU
   on a 256-image held-out set (eval mode, threshold 0.5).
2. it/s and peak memory of one training step loop (batch 8, 128x128, the notebook's
   difficulty, texseg's generator, Adam, BCE, default precision) for every registered
   model, each in its own process so peak memory is its own.
3. The notebook's loop as it was: its generator + MyFirtsCNN + Adam + MSE, fp32.
Ratios are texseg it/s over the notebook loop's it/s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def steps_per_second(step, seconds: float, warmup: int = 3, min_steps: int = 2) -> float:
    for _ in range(warmup):
        step()
    n, t0 = 0, time.perf_counter()
    while n < min_steps or time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


def one_model(name: str, seconds: float) -> dict:
    """Measure the training step of one registered model (run in a subprocess)."""
    from texseg.data import SceneSpec, generate, target_from_labels
    from texseg.device import autocast_dtype
    from texseg.models import count_parameters, create_model
    from texseg.training.losses import create_loss

    warnings.simplefilter("ignore", UserWarning)
    torch.manual_seed(0)
    spec = SceneSpec.notebook(128, 0.2, 1.2, 128 / 5)
    model = create_model(name).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = create_loss("bce")
    amp = autocast_dtype("auto", torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)

    def step():
        x, labels = generate(spec, 8, generator=gen)
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        loss = loss_fn(logits, target_from_labels(labels, 2))
        opt.zero_grad()
        loss.backward()
        opt.step()

    its = steps_per_second(step, seconds)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": name, "it_per_s": its, "peak_rss_mib": peak_mib, "parameters": count_parameters(model),
            "precision": "bf16" if amp else "fp32"}


def notebook_loop(steps: int = 2) -> dict:
    """The notebook's training loop (its generator dominates: seconds per step)."""
    from notebook_reference import MyFirtsCNN, notebook_generate_data

    torch.manual_seed(0)
    model = MyFirtsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        x, omega_1, _ = notebook_generate_data(8, 128, 0.2, 1.2, 128 / 5, dtype=torch.float32)
        opt.zero_grad()
        loss = torch.mean((model(x) - omega_1) ** 2)
        loss.backward()
        opt.step()

    its = steps_per_second(step, 0.0, warmup=0, min_steps=steps)
    return {"model": "notebook loop (seed generator + MyFirtsCNN + Adam + MSE)", "it_per_s": its,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def target(budget: float) -> dict:
    from texseg.data import generate, target_from_labels
    from texseg.evaluation import evaluate
    from texseg.training.config import TrainConfig
    from texseg.training.loop import train

    config = TrainConfig(time_budget=budget)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, Path(tmp) / "run", progress=False)
        from texseg.checkpoint import load_model

        model = load_model(result.run_dir)
    images, labels = generate(config.scene(), 256, generator=torch.Generator().manual_seed(2024))
    metrics = evaluate(model, images, target_from_labels(labels, 2), 2)
    return {"summary": result.summary, "heldout256": metrics}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=30.0, help="training seconds for the target run")
    ap.add_argument("--seconds", type=float, default=10.0, help="timing window per model")
    ap.add_argument("--skip-target", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_model(args.one, args.seconds)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_target:
        t = target(args.budget)
        s = t["summary"]
        print(f"\n[target] texseg train defaults ({s['model']}, {s['precision']}), {s['train_seconds']:.1f} s "
              f"training, {s['iterations']} steps ({s['it_per_s']:.1f} it/s)")
        print(f"  held-out IoU (256 images): {t['heldout256']['iou']:.4f}   "
              f"(validation set of the run, 64 images: {s['val']['iou']:.4f})   target >= 0.985")

    from texseg.models import list_models

    rows = []
    for name in list_models():
        out = subprocess.run([sys.executable, __file__, "--one", name, "--seconds", str(args.seconds)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    nb = notebook_loop()
    print("\n[speed] training steps, batch 8, 128x128, CPU")
    print(f"  {'model':<12} {'params':>9} {'prec':>5} {'it/s':>8} {'peak RSS':>10} {'vs notebook':>12}")
    for r in rows:
        print(f"  {r['model']:<12} {r['parameters']:>9,} {r['precision']:>5} {r['it_per_s']:>8.2f} "
              f"{r['peak_rss_mib']:>8.0f} MiB {r['it_per_s'] / nb['it_per_s']:>11.0f}x")
    print(f"  {nb['model']}: {nb['it_per_s']:.3f} it/s, peak RSS {nb['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
