"""Time to held-out IoU 0.985 on a CPU: texseg's defaults before and after issue #12, side by side.

Run: python benchmarks/bench_cpu_target.py [--budget 30] [--seeds 2] [--repeats 1] [--proposed JSON]

``before`` is the default of texseg 0.1 on every device (unet base_width 16, batch 4, lr
1e-2); ``defaults`` is what ``texseg train`` picks on this CPU now (``texseg devices``);
``--proposed`` adds a third design to try.

Prints the CPU's model and the flags that decide texseg's precision path (avx2, avx512f,
avx512_bf16, amx_tile, torch's CPU capability) and the path chosen (``precision="auto"``),
then trains each design for ``--budget`` seconds per seed (the designs interleaved, so
both see the same machine load) and reports, per run and as medians over the runs:

- ``iou@end``: mean IoU over the two regions on 256 fresh held-out scenes (seed 2024,
  eval mode, threshold 0.5; as ``benchmarks/bench_train.py``'s target);
- ``iou@30s``: the run's own validation IoU (64 images) at its last evaluation within 30 s
  of training (with ``--budget 30`` this is the end of the run);
- ``t(0.985)``: the first ``train_seconds`` in ``metrics.csv`` at which the validation IoU
  reaches 0.985 ("not reached" otherwise), and the step it happened at;
- steps, it/s and the 1-minute load average before the run (wall-clock figures are only
  comparable at the same load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

TARGET = 0.985
AT_SECONDS = 30.0
HELD_OUT, HELD_OUT_SEED = 256, 2024

# texseg 0.1's defaults, whatever the device.
BEFORE: dict = {"model_kwargs": {}, "batch_size": 4, "lr": 0.01, "compile": False}


def load_average() -> float:
    return os.getloadavg()[0]


def time_to(rows: list[dict], target: float) -> tuple[float | None, int | None]:
    """First (train_seconds, step) of the curve whose val_iou reaches ``target`` (None, None if never)."""
    for row in rows:
        if row["val_iou"] >= target:
            return row["train_seconds"], int(row["step"])
    return None, None


def iou_at(rows: list[dict], seconds: float) -> float | None:
    """Validation IoU at the last evaluation within ``seconds`` of training."""
    within = [row for row in rows if row["train_seconds"] <= seconds + 1e-6]
    return within[-1]["val_iou"] if within else None


def one_run(name: str, overrides: dict, budget: float, seed: int, held_out: tuple[torch.Tensor, torch.Tensor]) -> dict:
    from texseg.checkpoint import load_model
    from texseg.evaluation import evaluate
    from texseg.training.config import TrainConfig
    from texseg.training.loop import train
    from texseg.training.rundir import read_metrics

    config = TrainConfig(**{**overrides, "time_budget": budget, "seed": seed, "figures": False})
    load = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, Path(tmp) / "run", progress=False)
        rows = read_metrics(result.run_dir)
        model = load_model(result.run_dir)
    images, targets = held_out
    s = result.summary
    seconds, step = time_to(rows, TARGET)
    return {"design": name, "seed": seed, "load": load, "steps": s["iterations"], "it_per_s": s["it_per_s"],
            "train_seconds": s["train_seconds"], "precision": s["precision"],
            "iou_end": evaluate(model, images, targets, 2)["iou"], "iou_30s": iou_at(rows, AT_SECONDS),
            "t_target": seconds, "step_target": step}


def fmt(value: float | None, spec: str, missing: str = "not reached") -> str:
    return missing if value is None else format(value, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=30.0, help="training seconds per run")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per design (0, 1, ...)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per design and seed")
    ap.add_argument("--proposed", type=json.loads, default=None,
                    help="TrainConfig fields of a third design to try (JSON)")
    ap.add_argument("--skip-baseline", action="store_true", help="do not run `before`")
    ap.add_argument("--json", type=Path, help="also write every run's numbers to this file")
    args = ap.parse_args()
    warnings.simplefilter("ignore", UserWarning)

    from texseg.data import generate, target_from_labels
    from texseg.device import RELEVANT_CPU_FLAGS, autocast_dtype, cpu_description, fast_bf16
    from texseg.training.config import TrainConfig

    info = cpu_description()
    amp = autocast_dtype("auto", torch.device("cpu"))
    flags = " ".join(f"{k}={'yes' if k in info['flags'] else 'no'}" for k in RELEVANT_CPU_FLAGS)
    print(f"CPU: {info['model']} ({os.cpu_count()} logical CPUs)")
    print(f"  flags: {flags}; torch CPU capability: {info['capability']}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"precision path (precision='auto' on cpu): {'bf16 autocast' if amp else 'fp32'} "
          f"(fast bf16 on this CPU: {'yes' if fast_bf16(torch.device('cpu')) else 'no'})")
    designs = {} if args.skip_baseline else {"before": BEFORE}
    designs["defaults"] = {}
    if args.proposed is not None:
        designs["proposed"] = dict(args.proposed)
    for name, overrides in designs.items():
        TrainConfig(**{**overrides, "time_budget": args.budget}).validate()
        print(f"  {name}: {json.dumps(overrides) if overrides else 'texseg train defaults'}")
    print(f"budget {args.budget:g} s per run, seeds {args.seeds}, repeats {args.repeats}, held-out "
          f"{HELD_OUT} scenes (seed {HELD_OUT_SEED}), target mean IoU {TARGET}\n")

    scene = TrainConfig().scene()
    images, labels = generate(scene, HELD_OUT, generator=torch.Generator().manual_seed(HELD_OUT_SEED))
    held_out = (images, target_from_labels(labels, 2))

    header = (f"{'design':<9} {'seed':>4} {'load':>5} {'steps':>6} {'it/s':>6} {'iou@end':>8} {'iou@30s':>8} "
              f"{'t(0.985)':>12}")
    print(header)
    runs = []
    start = time.perf_counter()
    for seed in range(args.seeds):
        for _ in range(args.repeats):
            for name, overrides in designs.items():
                r = one_run(name, overrides, args.budget, seed, held_out)
                runs.append(r)
                target = "not reached" if r["t_target"] is None else f"{r['t_target']:.1f}s@{r['step_target']}"
                print(f"{name:<9} {seed:>4} {r['load']:>5.2f} {r['steps']:>6} {r['it_per_s']:>6.2f} "
                      f"{r['iou_end']:>8.4f} {fmt(r['iou_30s'], '8.4f', '       -')} {target:>12}", flush=True)

    print(f"\nmedians over {args.seeds * args.repeats} runs ({time.perf_counter() - start:.0f} s wall, "
          f"load now {load_average():.2f}):")
    for name in designs:
        mine = [r for r in runs if r["design"] == name]
        reached = [r["t_target"] for r in mine if r["t_target"] is not None]
        t_med = f"{statistics.median(reached):.1f} s" if len(reached) == len(mine) else \
            f"reached in {len(reached)}/{len(mine)} runs" + (f" (median {statistics.median(reached):.1f} s)"
                                                              if reached else "")
        ious30 = [r["iou_30s"] for r in mine if r["iou_30s"] is not None]
        print(f"  {name:<9} held-out IoU {statistics.median(r['iou_end'] for r in mine):.4f}  "
              f"val IoU@30s {fmt(statistics.median(ious30) if ious30 else None, '.4f', '-')}  "
              f"{statistics.median(r['it_per_s'] for r in mine):.2f} it/s  time to {TARGET}: {t_med}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": info, "precision": "bf16" if amp else "fp32",
                                         "torch": torch.__version__, "threads": torch.get_num_threads(),
                                         "designs": designs, "runs": runs}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
