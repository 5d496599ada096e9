"""Training throughput of texseg's engine against batch size, threads and compilation, in one process.

    python benchmarks/bench_throughput.py --device cuda --models cnn,unet --batches 8,32,128,512,1024
    python benchmarks/bench_throughput.py --device cpu --threads 1,2,4,8,16 --batches 4,16
    python benchmarks/bench_throughput.py --device cuda --models unet --batches 256 --compile both

For every (model, batch size, threads, compile) it times two loops over the same engine
(`texseg.training.engine`: scene generation on the device, forward, loss, backward, Adam):

- ``waiting``: the step as the notebook and texseg <= 0.1 ran it, reading the loss back
  (and synchronising) after every step;
- ``texseg``: the training loop's way, steps queued and their results read every
  ``--read-every`` steps (:class:`texseg.training.engine.StepTally`).

It prints images/s (median of --repeats windows of --seconds), the ratio texseg/waiting,
the TFLOP/s that gives (FLOPs of one training step counted by torch's FlopCounterMode) and,
with --peak-tflops or a known GPU, the fraction of the chip's peak. On a CPU both loops are
the same work (a CPU has nothing to queue on): their ratio shows the bookkeeping's cost.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from texseg.device import autocast_dtype, cpu_description
from texseg.training.config import TrainConfig
from texseg.training.engine import StepTally, build_trainer, train_step

# Dense peak TFLOP/s (bf16 tensor cores, fp32) of GPUs this has been run on; others: --peak-tflops.
PEAKS = {"H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5), "L4": (121.0, 30.3)}


def peak_tflops(device: torch.device, bf16: bool, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (p_bf16, p_fp32) in PEAKS.items():
        if key in name:
            return p_bf16 if bf16 else p_fp32
    return None


def step_flops(config: TrainConfig) -> float:
    """FLOPs of one training step (forward + backward) at ``config.batch_size``."""
    t = build_trainer(config)
    with FlopCounterMode(display=False) as counter:
        train_step(t, 1e-3)
    return float(counter.get_total_flops())


def images_per_second(config: TrainConfig, read_every: int, seconds: float, repeats: int) -> list[float]:
    """Median-ready images/s of ``repeats`` windows; read_every=1 reads (and waits) after every step."""
    t = build_trainer(config)
    tally = StepTally(t.device)
    for _ in range(3):  # warm-up (and compilation, when on)
        tally.add(train_step(t, 1e-3), 0)
    tally.read()
    rates = []
    for _ in range(repeats):
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or steps < 2:
            tally.add(train_step(t, 1e-3), steps)
            steps += 1
            if steps % read_every == 0:
                tally.read()
        tally.read()
        rates.append(steps * config.batch_size / (time.perf_counter() - t0))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="cnn,unet")
    ap.add_argument("--batches", default="8,32,128")
    ap.add_argument("--threads", default=None, help="CPU thread counts to scan (default: torch's)")
    ap.add_argument("--compile", choices=("off", "on", "both"), default="off")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--read-every", type=int, default=32, help="texseg loop: steps between reads")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()

    device = torch.device(args.device)
    cpu = cpu_description()
    bf16 = args.precision == "bf16" or (args.precision == "auto" and autocast_dtype("auto", device) is not None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu["model"]
    print(f"{name}; torch {torch.__version__}; CPU {cpu['model']} ({cpu['cores']} cores, "
          f"{', '.join(cpu['flags'])}, kernels {cpu['capability']}); precision {'bf16' if bf16 else 'fp32'}; "
          f"{args.image_size}x{args.image_size}; median of {args.repeats} x {args.seconds:g} s")
    peak = peak_tflops(device, bf16, args.peak_tflops)
    threads = [int(x) for x in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    print(f"{'model':<8} {'batch':>6} {'thr':>4} {'comp':>5} {'waiting img/s':>14} {'texseg img/s':>13} "
          f"{'ratio':>6} {'GFLOP/img':>9} {'TFLOP/s':>8} {'% peak':>7}")
    for model in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            base = TrainConfig(model=model, batch_size=batch, image_size=args.image_size, device=args.device,
                               precision=args.precision, lr=1e-3, iterations=1, val_size=1, figures=False)
            flops = step_flops(base) / batch
            for n in threads:
                for comp in compiles:
                    config = TrainConfig(**{**base.to_dict(), "threads": n, "compile": comp})
                    try:
                        waiting = statistics.median(images_per_second(config, 1, args.seconds, args.repeats))
                        ours = statistics.median(images_per_second(config, args.read_every, args.seconds,
                                                                   args.repeats))
                    except torch.OutOfMemoryError:
                        print(f"{model:<8} {batch:>6} {n:>4} {comp!s:>5}  out of memory")
                        torch.cuda.empty_cache()
                        continue
                    tflops = ours * flops / 1e12
                    share = f"{100 * tflops / peak:6.1f}%" if peak else "      -"
                    print(f"{model:<8} {batch:>6} {n:>4} {comp!s:>5} {waiting:>14.1f} {ours:>13.1f} "
                          f"{ours / waiting:>6.2f} {flops / 1e9:>9.2f} {tflops:>8.2f} {share}", flush=True)
    print("FLOPs are those of the whole training step (forward and backward) per image, as FlopCounterMode "
          "counts them (convolutions and matrix products).")

if __name__ == "__main__":
    main()
