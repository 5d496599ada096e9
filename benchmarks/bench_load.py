"""texseg's CPU speed when the machine is shared: thread settings under background load.

Run: python benchmarks/bench_load.py [--loads 0,1,2,4] [--settings today,passive,t1] [--repeats 2]

For each background load (L busy single-thread processes, or ``torch2x2``: two processes each
running a 2-thread PyTorch matrix-multiply loop, as another training job would) the script
starts the load itself, measures every candidate setting in its own fresh interpreter (the
OpenMP wait policy is read once, when torch loads its OpenMP runtime, so it cannot be changed
in a running process) and ends the load by PID in ``finally``. Every load process also stops
on its own after ``--max-load-seconds``. Settings and repeats are interleaved, and the
load average is printed beside each figure (other work on the machine counts too).

Per setting it measures a training step (``--step``: issue #20's U-Net, base width 16, batch 4,
fixed so that figures compare across texseg versions; or ``default``, what a 30-s ``texseg
train`` trains on this machine), one generator batch (batch 4, 128x128) and
``texseg.predict`` of one 256x256 image, and prints a table with each setting's throughput
relative to ``today`` (torch's default: all cores, libgomp's default spinning) and to the
idle figure, against the target: at least half of the fair share C/(C+L) of idle.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
# name -> (environment additions, threads or None for the default, or "adaptive")
SETTINGS: dict[str, tuple[dict[str, str], object]] = {
    "today": ({}, None),
    "t1": ({}, 1),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "spin1k": ({"GOMP_SPINCOUNT": "1000"}, None),
    "spin10k": ({"GOMP_SPINCOUNT": "10000"}, None),
    "spin100k": ({"GOMP_SPINCOUNT": "100000"}, None),
    "adaptive": ({"GOMP_SPINCOUNT": "10000"}, "adaptive"),
    # what texseg does now: the CLI's configure_threads() before torch, build_trainer's thread choice and
    # (--seconds long enough) its ThreadGovernor
    "texseg": ({}, "cli"),
    # texseg before the free-cores rule: all cores unless other programs kept every core busy
    "allbusy": ({"GOMP_SPINCOUNT": "10000"}, "allbusy"),
}
SPIN = "import time,sys\nend=time.time()+float(sys.argv[1])\nwhile time.time()<end:\n    pass\n"
TORCH2 = ("import time,sys,torch\ntorch.set_num_threads(2)\nend=time.time()+float(sys.argv[1])\n"
          "a=torch.randn(512,512)\nwhile time.time()<end:\n    a=torch.tanh(a@a)\n")


def step_config(step: str, threads: int | None, precision: str) -> object:
    """The measured training step: ``issue`` (U-Net base width 16, batch 4: the step issue #20 timed, fixed so
    that figures compare across texseg versions) or ``default`` (what a 30-s ``texseg train`` trains here)."""
    from texseg.training import TrainConfig

    if step == "issue":
        return TrainConfig(threads=threads, model_kwargs={}, batch_size=4, lr=1e-2, precision=precision)
    return TrainConfig(threads=threads, time_budget=30.0, precision=precision)


def worker(setting: str, seconds: float, precision: str, step: str = "issue") -> None:
    """Measure one setting in this (fresh) process and print one JSON line."""
    env, threads = SETTINGS[setting]
    if threads == "cli":
        from texseg.threads import configure_threads

        configure_threads()
    import torch

    from texseg.data import SceneSpec, generate
    from texseg.inference.predict import predict
    from texseg.models import create_model
    from texseg.threads import busy_cores, choose_threads
    from texseg.training.engine import build_trainer, train_step

    cores = os.cpu_count() or 1
    allbusy = 1 if cores > 1 and busy_cores() >= cores else cores
    fixed = {None: cores, "adaptive": choose_threads(cores), "cli": None, "allbusy": allbusy}.get(threads, threads)
    # threads None: build_trainer chooses them (texseg's default).
    t = build_trainer(step_config(step, fixed, precision))
    out: dict[str, object] = {"threads": torch.get_num_threads()}
    out["precision"], out["batch"] = t.precision, t.config.batch_size
    train_step(t, 1e-3).read()  # warm-up: first-call allocations
    n, t0, thread_seconds = 0, time.perf_counter(), 0.0
    cpu0 = time.process_time()
    while n < 2 or time.perf_counter() - t0 < seconds:
        step_start, step_cpu = time.perf_counter(), time.process_time()
        train_step(t, 1e-3).read()
        n += 1
        step_wall = time.perf_counter() - step_start
        thread_seconds += step_wall * torch.get_num_threads()  # the count this step ran with
        if t.governor is not None:  # as the training loop feeds it
            t.governor.observe(time.process_time() - step_cpu, step_wall)
    wall = time.perf_counter() - t0
    out["train_it_s"] = n / wall
    out["threads_end"] = torch.get_num_threads()  # where the governor changed them
    out["cpu_share"] = (time.process_time() - cpu0) / thread_seconds
    spec, g = SceneSpec(128), torch.Generator().manual_seed(0)
    generate(spec, 4, generator=g)
    times = []
    t0 = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - t0 < seconds / 3:
        s = time.perf_counter()
        generate(spec, 4, generator=g)
        times.append(time.perf_counter() - s)
    out["gen_ms"] = 1e3 * statistics.median(times)
    model = create_model("unet", num_classes=1).eval()
    image = torch.rand(256, 256)
    predict(model, image)
    times = []
    t0 = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - t0 < seconds / 3:
        s = time.perf_counter()
        predict(model, image)
        times.append(time.perf_counter() - s)
    out["predict_ms"] = 1e3 * statistics.median(times)
    print(json.dumps(out), flush=True)


def start_load(kind: str, count: int, max_seconds: float) -> list[subprocess.Popen]:
    code = TORCH2 if kind == "torch" else SPIN
    env = {**os.environ, "PYTHONPATH": SRC}
    return [subprocess.Popen([sys.executable, "-c", code, str(max_seconds)], env=env) for _ in range(count)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def run_setting(setting: str, seconds: float, timeout: float, precision: str,
                step: str = "issue") -> dict[str, object] | None:
    env = {**os.environ, **SETTINGS[setting][0], "PYTHONPATH": SRC}
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS"):
        if var not in SETTINGS[setting][0] and var in os.environ:
            env.pop(var)
    try:
        done = subprocess.run([sys.executable, __file__, "--worker", setting, "--seconds", str(seconds),
                               "--precision", precision, "--step", step],
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=3.0, help="training time measured per setting")
    ap.add_argument("--loads", default="0,1,2,4,torch2x2", help="busy processes (numbers) and/or torch2x2")
    ap.add_argument("--settings", default="today,t1,passive,spin10k,texseg")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--precision", default="fp32", help="precision of the measured training step (fp32, bf16)")
    ap.add_argument("--max-load-seconds", type=float, default=900.0, help="each load process ends after this")
    ap.add_argument("--step", choices=("issue", "default"), default="issue",
                    help="training step measured: issue #20's (U-Net width 16, batch 4) or the 30-s default's")
    ap.add_argument("--json", help="write every measurement to this file")
    ap.add_argument("--table", help="only print the table of a --json file of an earlier run")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds a setting may take (start-up included); slower counts as 0 it/s")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.seconds, args.precision, args.step)
        return
    if args.table:
        report_file(args.table)
        return
    # A stop signal ends the loads too (a background job ignores SIGINT, so SIGTERM must do it).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, SRC)
    from texseg.device import cpu_description

    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        sys.exit(f"--settings: unknown {unknown}; choose from {', '.join(SETTINGS)}")
    loads = args.loads.split(",")
    cores = os.cpu_count() or 1
    print(f"CPU {cpu_description()}; {cores} cores; python {sys.version.split()[0]}")
    rows: list[dict[str, object]] = []
    rng = random.Random(0)
    for rep in range(args.repeats):
        for load in loads:
            kind, count = ("torch", 2) if load == "torch2x2" else ("spin", int(load))
            procs = start_load(kind, count, args.max_load_seconds)
            try:
                time.sleep(1.0 if count else 0.0)  # let the load get going
                order = settings[:]
                rng.shuffle(order)
                for s in order:
                    la = os.getloadavg()[0]
                    r = run_setting(s, args.seconds, args.timeout, args.precision, args.step)
                    row = {"rep": rep, "load": load, "setting": s, "loadavg": la, **(r or {"failed": True})}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                stop_load(procs)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    report(rows, loads, settings, cores)


def report_file(path: str) -> None:
    """Print the table of a ``--json`` file written earlier."""
    rows = json.loads(Path(path).read_text())
    loads = list(dict.fromkeys(str(r["load"]) for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    report(rows, loads, settings, os.cpu_count() or 1)


def report(rows: list[dict[str, object]], loads: list[str], settings: list[str], cores: int) -> None:
    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    def med(load: str, s: str, key: str) -> float:
        vals = [r[key] for r in rows if r["load"] == load and r["setting"] == s and key in r]
        if key == "train_it_s":  # a run that timed out made no measurable progress
            vals += [0.0 for r in rows if r["load"] == load and r["setting"] == s and r.get("failed")]
        return statistics.median(vals) if vals else float("nan")

    idle = {s: med("0", s, "train_it_s") for s in settings} if "0" in loads else {}
    base_idle = idle.get("today", float("nan"))
    print("\nmedian over repeats; train = default training step (it/s), gen = generator batch 4 (ms), "
          "predict = one 256x256 image (ms); vs-idle = train / today's idle train; target = half the fair share")
    print(f"{'load':>9} {'setting':>9} {'thr':>3} {'loadavg':>7} {'train':>7} {'x today':>7} {'vs-idle':>7} "
          f"{'target':>6} {'cpu%':>5} {'gen':>7} {'predict':>8}")
    for load in loads:
        busy = 4 if load == "torch2x2" else int(load)
        target = 0.5 * cores / (cores + busy)
        for s in settings:
            tr = med(load, s, "train_it_s")
            thr = [r["threads"] for r in rows if r["load"] == load and r["setting"] == s and "threads" in r][:1]
            print(f"{load:>9} {s:>9} {thr[0] if thr else '-':>3} {med(load, s, 'loadavg'):7.2f} {tr:7.2f} "
                  f"{ratio(tr, med(load, 'today', 'train_it_s')):7.2f} {ratio(tr, base_idle):7.2f} {target:6.2f} "
                  f"{100 * med(load, s, 'cpu_share'):5.0f} {med(load, s, 'gen_ms'):7.1f} "
                  f"{med(load, s, 'predict_ms'):8.1f}")
    if idle:
        print("idle train throughput relative to today:",
              ", ".join(f"{s} {ratio(idle[s], base_idle):.3f}" for s in settings))


if __name__ == "__main__":
    main()
