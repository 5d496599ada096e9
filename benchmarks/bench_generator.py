"""texseg's generator against the notebook's direct convolution, in one process.

Run: python benchmarks/bench_generator.py [--ref-repeats 3] [--threads 2]

Prints the median time of each at batch 8, 128x128 on CPU, their ratio, the largest
image difference and mask mismatches between them for the same seed, and texseg's
images/s at batch 64 for 128x128 and 512x512.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from notebook_reference import notebook_generate_data  # noqa: E402
from texseg.data import SceneSpec, generate, generate_data  # noqa: E402


def median_seconds(fn, repeats: int, device: str = "cpu") -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref-repeats", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    print(f"torch {torch.__version__}, {args.threads} threads, {dev}"
          + (f" ({torch.cuda.get_device_name()})" if dev != "cpu" else ""))

    # Notebook defaults of section 3.3: sigma1=0.2, sigma2=1.2, sigma=N/5.
    params = (8, 128, 0.2, 1.2, 128 / 5)
    generate_data(*params, device=dev)  # warm-up (caches, thread pool, CUDA context)
    notebook_generate_data(*params, device=dev)
    t_ours = median_seconds(lambda: generate_data(*params, device=dev), args.repeats, dev)
    t_ref = median_seconds(lambda: notebook_generate_data(*params, device=dev), args.ref_repeats, dev)
    print(f"batch 8, 128x128: notebook {t_ref * 1e3:9.1f} ms   texseg {t_ours * 1e3:7.2f} ms   "
          f"ratio {t_ref / t_ours:7.0f}x")

    torch.manual_seed(0)
    ref_img, ref_mask, _ = notebook_generate_data(*params, device=dev)
    torch.manual_seed(0)
    img, mask = generate_data(*params, device=dev)
    print(f"same seed: max |image diff| {(img - ref_img).abs().max().item():.2e}, "
          f"mask mismatches {(mask != ref_mask).sum().item()} of {mask.numel()}")

    for n in (128, 512):
        spec = SceneSpec.notebook(n, 0.2, 1.2, n / 5)
        generate(spec, 64, device=dev)
        t = median_seconds(lambda s=spec: generate(s, 64, device=dev), 5 if n == 128 else 3, dev)
        print(f"batch 64, {n}x{n}: {64 / t:8.1f} images/s")


if __name__ == "__main__":
    main()
