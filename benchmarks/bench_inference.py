"""Megapixels/s of texseg's inference on a CPU: every registered model, texseg:general, classical methods.

Run: python benchmarks/bench_inference.py [--size 1024] [--repeats 3] [--threads 2] [--rounds 2]
     [--before /work/main/src]

One 1024x1024 generated scene (8-bit, as a file would be), best of ``--repeats`` calls:

* every registered model (untrained, fixed seed: speed does not depend on the weights)
  through ``texseg.predict(model, image)`` (normalisation, forward pass, probabilities at
  the input's size: what a user calls);
* ``texseg:general`` through its segmenter (embedding network + k-means grouping, K = 2);
* ``local-energy`` and ``gabor-kmeans`` (classical, for scale);
* the ONNX export of each model run by onnxruntime through the same ``texseg.predict`` path.

``before`` is the same measurement with ``--before`` (an older texseg's ``src``, e.g.
/work/main/src) first on PYTHONPATH, ``after`` with this checkout's: each in its own child
process per row, the two alternating row by row for ``--rounds`` rounds in this one
benchmark run (best per row), so both sides of a row see the same machine load.
Each row also gives the model's FLOPs per pixel (``torch.utils.flop_counter.FlopCounterMode``
on a 64x64 forward pass; a multiply-add counts 2) and the share of the CPU's peak fp32 FLOP
rate reached: peak = threads x GHz (``cpu MHz`` of /proc/cpuinfo) x FLOPs/cycle, where
FLOPs/cycle is 32 for AVX-512 or AVX2+FMA on AMD Zen (two 256-bit FMA pipes, AVX-512
double-pumped: 2 x 8 lanes x 2), 64 on Intel cores with two 512-bit FMA units, 16 otherwise.
bf16 (avx512_bf16's dot products) can exceed the fp32 peak, so the share can pass 100%.
Prints the CPU flags (``texseg.device.cpu_description``) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _best(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN primitives, first allocations
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _flops_per_pixel(model) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, getattr(model, "in_channels", 1), 64, 64, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() / 64**2


def child(args: argparse.Namespace) -> None:
    """Measure every row with whatever texseg is first on sys.path; print one JSON object."""
    import torch

    torch.set_num_threads(args.threads)
    import texseg
    from texseg.data import SceneSpec, generate

    x, _ = generate(SceneSpec.notebook(args.size, 0.2, 1.2, 12.8), 1, generator=torch.Generator().manual_seed(0))
    image = (x[0, 0].numpy() * 255).astype(np.uint8)
    tensor = torch.from_numpy(image.astype(np.float32) / 255)[None, None]
    mp = args.size**2 / 1e6
    rows = {}
    want = set(args.only.split(",")) if args.only else None
    for name in texseg.list_models():
        if want is not None and name not in want:
            continue
        torch.manual_seed(0)
        model = texseg.create_model(name).eval().to(args.device)
        rows[name] = {"mps": mp / _best(lambda m=model: texseg.predict(m, image), args.repeats),
                      "flops": _flops_per_pixel(model)}
    if want is None or "texseg:general" in want:
        general = texseg.load_segmenter("texseg:general")
        general.model.to(args.device)
        rows["texseg:general"] = {"mps": mp / _best(lambda: general.segment(tensor, 2), args.repeats),
                                  "flops": _flops_per_pixel(general.model)}
    if args.classical:
        for name in CLASSICAL:
            seg = texseg.load_segmenter(name)
            rows[name] = {"mps": mp / _best(lambda s=seg: s.segment(tensor, 2), args.repeats), "flops": None}
    if args.onnx:
        rows.update(_onnx_rows(args, image, mp))
    print(json.dumps(rows))


def _onnx_rows(args: argparse.Namespace, image: np.ndarray, mp: float) -> dict[str, dict]:
    import torch

    import texseg
    from texseg.inference.embedding import segment_embedded
    from texseg.inference.onnx import load_onnx

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [*texseg.list_models(), "texseg:general"]:
            torch.manual_seed(0)
            model = texseg.load_pretrained(name) if name.startswith("texseg:") else texseg.create_model(name).eval()
            onnx = load_onnx(texseg.export_onnx(model, Path(tmp) / "m.onnx"), threads=args.threads)
            if name.startswith("texseg:"):
                def run(o=onnx):
                    return segment_embedded(o, image.astype(np.float32), regions=2)
            else:
                def run(o=onnx):
                    return texseg.predict(o, image)
            rows[f"{name} (onnxruntime)"] = {"mps": mp / _best(run, args.repeats), "flops": _flops_per_pixel(model)}
    return rows


CLASSICAL = ("local-energy", "gabor-kmeans")


def _measure(src: str, args: argparse.Namespace, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": src, "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT", "10000")}
    cmd = [sys.executable, __file__, "--child", "--size", str(args.size), "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--device", args.device, *extra]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peak_gflops(threads: int, flags: list[str], model: str) -> tuple[float, str]:
    mhz = 0.0
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                mhz = max(mhz, float(line.split(":")[1]))
    amd = "AMD" in model
    per_cycle = 32 if ("avx512f" in flags and amd) or "avx2" in flags else 16
    if "avx512f" in flags and not amd:
        per_cycle = 64
    return threads * mhz / 1000 * per_cycle, f"{threads} cores x {mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (models only; classical and ONNX rows: CPU)")
    p.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime rows")
    p.add_argument("--rounds", type=int, default=2, help="before/after child processes, alternating")
    p.add_argument("--before", default="/work/main/src", help="src folder of the texseg to compare with ('' : none)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--classical", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--onnx", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--only", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, SRC)
    from texseg.device import cpu_description

    cpu = cpu_description()
    peak, how = _peak_gflops(args.threads, cpu["flags"], cpu["model"])  # the % column is of the CPU's peak
    print(f"CPU: {cpu['model']} ({cpu['cores']} cores), flags {' '.join(cpu['flags'])}, torch {cpu['capability']}")
    print(f"peak fp32 estimate: {peak:.0f} GFLOP/s = {how}; threads {args.threads}; "
          f"{args.size}x{args.size}, best of {args.repeats}")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    import texseg

    before: dict = {}
    after: dict = {}
    # One child per row and version, before and after alternating row by row (best of the
    # rounds): the machine's load changes by the minute, and both sides of a row see the same.
    for name in [*texseg.list_models(), "texseg:general"]:
        for _ in range(args.rounds):
            for rows, src in ((before, args.before), (after, SRC)):
                if src:
                    row = _measure(src, args, "--only", name).get(name)
                    if row and (name not in rows or row["mps"] > rows[name]["mps"]):
                        rows[name] = row
    after.update(_measure(SRC, args, "--only", "none", "--classical", *([] if args.no_onnx else ["--onnx"])))
    print(f"load average after:  {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    ref = after["local-energy"]["mps"]
    print(f"\n{'method':<28} {'kFLOP/px':>9} {'before MP/s':>12} {'after MP/s':>11} {'speed-up':>9} "
          f"{'x local-energy':>15} {'% fp32 peak':>12}")
    for name, row in after.items():
        old = before.get(name, {}).get("mps")
        flops = row["flops"]
        share = f"{100 * row['mps'] * 1e6 * flops / (peak * 1e9):.0f}%" if flops else "-"
        print(f"{name:<28} {flops / 1e3 if flops else float('nan'):>9.1f} "
              f"{old if old else float('nan'):>12.2f} {row['mps']:>11.2f} "
              f"{row['mps'] / old if old else float('nan'):>8.1f}x {row['mps'] / ref:>14.2f}x {share:>12}")


if __name__ == "__main__":
    main()
