"""Per-trial overhead of an experiment: training seconds against wall seconds, this tree and a baseline side by side.

Run: python benchmarks/bench_compare_overhead.py [--optimizers sgd,momentum,rmsprop,adam] [--time-budget 8]
     [--seeds 2] [--baseline-src /work/main/src] [--order new,baseline]

It runs the library call behind the student's command

    texseg compare optimizers --model cnn --time-budget 8 --image-size 64 --seeds 2

(learning rates tuned first: every optimizer x 5 candidate lrs at a quarter of the budget,
then optimizers x seeds at the full budget), once with this tree's sources and once with
``--baseline-src`` (e.g. the main checkout), each in its own fresh process, one after the
other, so both pay the same start-up and see the same machine. Per phase (tuning, comparison)
and in total it prints the trials' own training seconds (``train_seconds`` of their summaries),
the wall seconds, the overhead per trial (wall - training, divided over the trials) and
the ratio overhead / training; plus the CPU (model, flags) and the 1-minute load average
before and after each run. The machine may be shared: compare the two runs only at the
same load.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(optimizers: list[str], budget: float, seeds: int, out: str) -> dict:
    """Run the comparison in this process (whatever texseg is importable); return the timings."""
    started = time.perf_counter()
    from texseg.experiments import compare
    from texseg.training.config import TrainConfig

    base = TrainConfig.from_dict({"figures": False, "model": "cnn", "time_budget": budget,
                                  "image_size": 64}).validate()  # what the CLI passes (cli.experiments.base_config)
    stamps: list[float] = []

    def log(line: str) -> None:
        if line.startswith("["):
            stamps.append(time.perf_counter())

    imported = time.perf_counter()
    params = inspect.signature(compare.run_comparison).parameters
    if "settings" in params:  # this tree: the run settings are one object
        outcome = compare.run_comparison(base, "optimizer", optimizers, out,
                                         compare.ComparisonSettings(seeds=seeds, progress=False), log=log)
        tuning, result = outcome.tuning, outcome.result
        tuning_results = tuning.trials if tuning else []
        results = result.trials if result else []
        summaries = [t.train_seconds for t in (*tuning_results, *results)]
    else:
        outcome = compare.run_comparison(base, "optimizer", optimizers, out, seeds=seeds, progress=False, log=log)
        tuning_results = outcome.tuning.outcome.results if outcome.tuning else []
        results = outcome.result.outcome.results if outcome.result else []
        summaries = [r.summary.get("train_seconds", 0.0) for r in (*tuning_results, *results)]
    ended = time.perf_counter()
    n_tune = len(tuning_results)
    # Trial i's wall time: from the previous trial's line (the first: from the call) to its own.
    bounds = [imported, *stamps]
    walls = [b - a for a, b in zip(bounds, bounds[1:])]
    return {"import_s": imported - started, "total_wall_s": ended - started, "n_tune": n_tune,
            "train_s": summaries, "trial_wall_s": walls,
            "after_last_trial_s": ended - (stamps[-1] if stamps else ended),
            "html_pages": sum(1 for _ in Path(out).rglob("report.html"))}


def phase(name: str, train: list[float], wall: list[float]) -> str:
    t, w = sum(train), sum(wall)
    per = (w - t) / max(len(train), 1)
    return (f"  {name:<11} {len(train):>3} trials  training {t:7.1f} s  wall {w:7.1f} s  "
            f"overhead/trial {per:5.2f} s  overhead/training {(w - t) / t if t else float('nan'):6.1%}")


def report(label: str, r: dict, load: tuple[float, float]) -> None:
    n = r["n_tune"]
    print(f"\n{label}: total wall {r['total_wall_s']:.1f} s (imports {r['import_s']:.1f} s, after the last trial "
          f"{r['after_last_trial_s']:.1f} s: summaries, figures, report); HTML pages written: {r['html_pages']}; "
          f"load average {load[0]:.2f} before, {load[1]:.2f} after")
    print(phase("lr tuning", r["train_s"][:n], r["trial_wall_s"][:n]))
    print(phase("comparison", r["train_s"][n:], r["trial_wall_s"][n:]))
    print(phase("all trials", r["train_s"], r["trial_wall_s"]))
    t = sum(r["train_s"])
    print(f"  whole command: {r['total_wall_s']:.1f} s wall for {t:.1f} s of training "
          f"({r['total_wall_s'] / t:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--optimizers", default="sgd,momentum,rmsprop,adam")
    ap.add_argument("--time-budget", type=float, default=8.0)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--baseline-src", default="/work/main/src",
                    help="sources of the baseline, e.g. `git archive <base> src | tar -x -C /tmp/base` ('' to skip)")
    ap.add_argument("--order", default="new,baseline", help="which runs first (both see the machine in turn)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    optimizers = [o for o in args.optimizers.split(",") if o]
    if args.child is not None:
        print(json.dumps(child(optimizers, args.time_budget, args.seeds, args.child)))
        return
    here = str(Path(__file__).resolve().parents[1] / "src")
    sources = {"new": here, "baseline": args.baseline_src}
    from texseg.device import cpu_description

    cpu = cpu_description()
    print(f"CPU: {cpu['model']} ({cpu['cores']} cores; flags {', '.join(cpu['flags'])}; torch {cpu['capability']})")
    print(f"command: texseg compare optimizers --optimizers {args.optimizers} --model cnn --time-budget "
          f"{args.time_budget:g} --image-size 64 --seeds {args.seeds}")
    for label in args.order.split(","):
        src = sources.get(label)
        if not src:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PYTHONPATH": src}
            before = os.getloadavg()[0]
            proc = subprocess.run([sys.executable, __file__, "--optimizers", args.optimizers, "--time-budget",
                                   str(args.time_budget), "--seeds", str(args.seeds), "--child", f"{tmp}/exp"],
                                  env=env, capture_output=True, text=True, check=False)
            after = os.getloadavg()[0]
        if proc.returncode != 0:
            print(f"\n{label} ({src}) failed:\n{proc.stderr[-3000:]}")
            continue
        report(f"{label} ({src})", json.loads(proc.stdout.strip().splitlines()[-1]), (before, after))


if __name__ == "__main__":
    main()
