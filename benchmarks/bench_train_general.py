"""train-general's step: collages drawn with all torch threads (before) vs one thread (now), idle and loaded.

Run: PYTHONPATH=src python benchmarks/bench_train_general.py [--loads 0,2] [--steps 6] [--repeats 3]

For each background load (L busy single-thread processes, started here and ended by PID in
``finally``) one process times the recipe's step (texnet width 32, batch 8, 128x128
collages of the shipped recipe's spec, the discriminative loss, AdamW) both ways, the two
alternating: ``before`` draws the batch with all the threads torch uses for the step,
``now`` with one (``training/general.py``'s ``_one_thread``). Printed: seconds per step, the
part spent drawing the batch, and the ratio before / now (above 1: now is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from texseg.data.procedural import CollageSpec, generate_collage
from texseg.device import cpu_description
from texseg.models.texnet import TextureEmbeddingNet
from texseg.training.general import discriminative_loss

SPIN = "import time,sys\nend=time.time()+float(sys.argv[1])\nwhile time.time()<end:\n    pass\n"


def step(model: TextureEmbeddingNet, opt: torch.optim.Optimizer, spec: CollageSpec, gen: torch.Generator,
         one_thread: bool) -> tuple[float, float]:
    """One training step; (its seconds, the seconds of drawing its batch)."""
    threads = torch.get_num_threads()
    start = time.perf_counter()
    if one_thread:
        torch.set_num_threads(1)
    images, labels = generate_collage(spec, 8, generator=gen)
    torch.set_num_threads(threads)
    drawn = time.perf_counter()
    loss = discriminative_loss(model(images), labels, 0.3, 1.5)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start, drawn - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", default="0,2", help="comma-separated counts of busy background processes")
    ap.add_argument("--steps", type=int, default=6, help="steps per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-load-seconds", type=float, default=600.0)
    args = ap.parse_args()
    cpu = cpu_description()
    print(f"CPU {cpu['model']} ({cpu['cores']} cores, {', '.join(cpu['flags'])}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}")
    print(f"{'load':>4} {'before s/step':>13} {'(drawing)':>9} {'now s/step':>10} {'(drawing)':>9} {'ratio':>6}  "
          "load average")
    spec = CollageSpec(gaussian_scenes=0.5, nonstationary=0.5)
    torch.manual_seed(0)
    model = TextureEmbeddingNet(width=32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    gen = torch.Generator().manual_seed(0)
    step(model, opt, spec, gen, True)  # warm-up
    for load in (int(x) for x in args.loads.split(",")):
        procs = [subprocess.Popen([sys.executable, "-c", SPIN, str(args.max_load_seconds)]) for _ in range(load)]
        try:
            results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for _ in range(args.repeats):
                for one in (False, True):
                    results[one] += [step(model, opt, spec, gen, one) for _ in range(args.steps)]
            med = {one: (statistics.median(t for t, _ in r), statistics.median(d for _, d in r))
                   for one, r in results.items()}
            print(f"{load:>4} {med[False][0]:>13.3f} {med[False][1]:>9.3f} {med[True][0]:>10.3f} "
                  f"{med[True][1]:>9.3f} {med[False][0] / med[True][0]:>6.2f}  {os.getloadavg()[0]:.2f}")
        finally:
            for p in procs:
                p.kill()
            for p in procs:
                p.wait()


if __name__ == "__main__":
    main()
