"""Per-device defaults, the step that does not wait for the device, and compilation.

The deferred reads are what keep a GPU busy; on a CPU they are exercised by forcing
``sync_every`` above 1 (the CUDA default is adaptive), which must not change anything a
run computes.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from conftest import cores_freed_after_the_start, run_main
from texseg.training import defaults as device_defaults
from texseg.training import engine
from texseg.training.config import TrainConfig
from texseg.training.defaults import PROFILES, resolve_defaults, sync_interval
from texseg.training.loop import train
from texseg.training.rundir import read_metrics


def tiny(**kw) -> TrainConfig:
    base = dict(image_size=32, model="cnn", model_kwargs={"num_channels": 4}, iterations=12, time_budget=None,
                eval_every=6, val_size=4, batch_size=2, lr=1e-2, figures=False)
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------ device defaults
def test_unset_fields_take_the_device_profile_and_set_ones_are_kept():
    cpu = torch.device("cpu")
    profile = device_defaults.device_profile(cpu)
    resolved, record = resolve_defaults(TrainConfig(), cpu)
    wanted = profile.values_for(TrainConfig())
    assert (resolved.batch_size, resolved.lr, resolved.compile) == (wanted["batch_size"], wanted["lr"], False)
    assert resolved.model_kwargs == wanted["model_kwargs"]
    assert record["hardware"] == profile.hardware
    assert set(record["filled"]) == {"model_kwargs", "batch_size", "lr", "compile"}
    given, record = resolve_defaults(TrainConfig(batch_size=7, lr=3e-3, compile=False, model_kwargs={}), cpu)
    assert (given.batch_size, given.lr, given.compile, given.model_kwargs) == (7, 3e-3, False, {})
    assert record["filled"] == {}  # {}: the model's own defaults, asked for explicitly


def test_short_time_budgets_take_the_quick_settings_long_and_step_bounded_runs_the_full_ones():
    profile = PROFILES["cpu-fp32"]
    quick = profile.values_for(TrainConfig(time_budget=30))
    assert quick["model_kwargs"] == {"base_width": 8} and quick["batch_size"] == 2
    for long in (TrainConfig(time_budget=300), TrainConfig(iterations=500, time_budget=None),
                 TrainConfig(iterations=500, time_budget=30)):
        full = profile.values_for(long)
        assert full["model_kwargs"] == {} and full["batch_size"] == profile.batch_size == 4
    assert profile.values_for(TrainConfig(model="cnn", time_budget=30))["model_kwargs"] == {}


def test_each_hardware_kind_has_a_profile_that_says_where_it_was_measured():
    assert set(PROFILES) == {"cpu-fp32", "cpu-bf16", "cuda"}
    for p in PROFILES.values():
        assert p.batch_size >= 1 and p.lr > 0 and p.eval_batch >= 1 and p.measured
    kind = device_defaults.hardware_kind(torch.device("cpu"))
    assert kind in ("cpu-fp32", "cpu-bf16")


def test_the_run_directory_records_what_the_device_chose(tmp_path):
    result = train(tiny(batch_size=None, lr=None), tmp_path / "run", progress=False)
    config = json.loads((result.run_dir / "config.json").read_text())
    profile = device_defaults.device_profile(torch.device("cpu"))
    assert (config["batch_size"], config["lr"], config["compile"]) == (profile.batch_size, profile.lr, False)
    summary = result.summary
    assert summary["defaults"]["filled"] == {"batch_size": profile.batch_size, "lr": profile.lr, "compile": False}
    assert summary["batch_size"] == profile.batch_size and summary["defaults"]["measured"] == profile.measured


def test_devices_command_lists_the_cpu_and_its_path(capsys):
    code, out, err = run_main(capsys, "devices")
    assert code == 0, err
    profile = device_defaults.device_profile(torch.device("cpu"))
    assert out.startswith("cpu: ") and profile.hardware in out and f"{profile.batch_size}, {profile.lr:g}" in out


def test_train_prints_which_settings_came_from_the_device(tmp_path, capsys):
    args = ["--image-size", "32", "--model", "cnn", "--iterations", "4", "--val-size", "2", "--threads", "1"]
    code, out, err = run_main(capsys, "train", *args, "--no-figures", "--quiet", "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert "batch_size, lr from the cpu-" in out


# ------------------------------------------------------------------ deferred reads
def test_sync_interval_is_one_on_cpu_adaptive_on_cuda_and_one_when_skipping_nonfinite():
    cpu, cuda = PROFILES["cpu-fp32"], PROFILES["cuda"]
    config = TrainConfig()
    assert sync_interval(cpu, config, 0.2) == 1
    assert sync_interval(cuda, config, None) == 1  # nothing measured yet
    assert sync_interval(cuda, config, 0.001) == int(device_defaults.SYNC_SECONDS / 0.001)
    assert sync_interval(cuda, config, 1e-7) == device_defaults.MAX_SYNC_EVERY
    assert sync_interval(cuda, config, 1.0) == 1
    assert sync_interval(cuda, replace(config, sync_every=8), 0.001) == 8
    assert sync_interval(cuda, replace(config, sync_every=8, skip_nonfinite=True), 0.001) == 1


def test_deferred_reads_change_nothing_the_run_computes(tmp_path, monkeypatch):
    reads = []
    real_read = engine.StepTally.read
    monkeypatch.setattr(engine.StepTally, "read", lambda self: reads.append(self.steps) or real_read(self))
    every_step = train(tiny(sync_every=1), tmp_path / "a", progress=False)
    assert reads == [1] * 12
    reads.clear()
    deferred = train(tiny(sync_every=5), tmp_path / "b", progress=False)
    # Reads every 5 steps, and at each evaluation (steps 6 and 12) and the end.
    assert reads == [5, 1, 5, 1]
    a, b = load_file(every_step.run_dir / "model.safetensors"), load_file(deferred.run_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows_a, rows_b = read_metrics(every_step.run_dir), read_metrics(deferred.run_dir)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [6, 12]
    for ra, rb in zip(rows_a, rows_b):
        for key in ("train_loss", "val_iou", "val_loss", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-12), key


def test_deferred_reads_find_the_first_non_finite_step_and_keep_the_last_good_weights(tmp_path):
    cfg = tiny(optimizer="sgd", loss="mse", lr=1e12, iterations=50, eval_every=50)
    every_step = train(replace(cfg, sync_every=1), tmp_path / "a", progress=False)
    deferred = train(replace(cfg, sync_every=16), tmp_path / "b", progress=False)
    assert every_step.status == deferred.status == "diverged"
    # The same step is named, whether it was read at once or up to 15 steps later.
    assert every_step.summary["message"] == deferred.summary["message"]
    assert "at step" in deferred.summary["message"]
    weights = load_file(deferred.run_dir / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_a_time_budget_is_kept_with_deferred_reads(tmp_path):
    result = train(tiny(iterations=None, time_budget=1.5, sync_every=4, eval_every=None), tmp_path / "run",
                   progress=False)
    s = result.summary
    assert result.status == "completed" and s["train_seconds"] >= 1.5
    # Overshoot is at most the steps queued since the last read (4), whatever the machine's speed.
    assert s["train_seconds"] <= 1.5 + 5 * s["train_seconds"] / s["iterations"] + 0.5


def test_skip_nonfinite_still_skips_single_steps(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = engine.train_step

    def poisoned(t, lr, *, guard=False):
        calls["n"] += 1
        if calls["n"] == 3:  # one step whose loss is infinite: NaN weights unless the step is skipped
            loss_fn = t.loss_fn
            t.loss_fn = lambda logits, target: loss_fn(logits, target) * float("inf")
            try:
                return real(t, lr, guard=guard)
            finally:
                t.loss_fn = loss_fn
        return real(t, lr, guard=guard)

    monkeypatch.setattr("texseg.training.loop.train_step", poisoned)
    result = train(tiny(skip_nonfinite=True, sync_every=8), tmp_path / "run", progress=False)
    assert result.status == "completed"
    assert result.summary["skipped_steps"] == 1 and result.summary["iterations"] == 12
    assert math.isfinite(result.summary["val"]["loss"])  # the infinite step was not applied


# ------------------------------------------------------------------ compilation
@pytest.mark.slow
def test_a_compiled_run_trains_and_saves_plain_weights(tmp_path):
    result = train(tiny(compile=True, iterations=4, eval_every=2), tmp_path / "run", progress=False)
    assert result.status == "completed" and result.summary["compiled"] is True
    weights = load_file(result.run_dir / "model.safetensors")
    assert not any(k.startswith("_orig_mod") for k in weights)
    plain = train(tiny(compile=False, iterations=4, eval_every=2), tmp_path / "plain", progress=False)
    assert plain.summary["val"]["iou"] == pytest.approx(result.summary["val"]["iou"], abs=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_training_step_never_waits_for_the_device():
    t = engine.build_trainer(TrainConfig(device="cuda", image_size=64, model="unet", iterations=10, val_size=4))
    tally = engine.StepTally(t.device)
    engine.train_step(t, 1e-3)  # the first step allocates; then none may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(5):
            tally.add(engine.train_step(t, 1e-3), step + 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    window = tally.read()
    assert window.steps == 5 and window.finite_steps == 5 and window.problem is None


# ------------------------------------------------------------------ shared machines (issue #20)
def test_configure_threads_sets_a_short_spin_unless_the_user_chose():
    from texseg.threads import OPENMP_ENV, configure_threads

    env: dict[str, str] = {}
    assert configure_threads(environ=env).source == "texseg" and env == OPENMP_ENV
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    settings = configure_threads(environ=mine)
    assert settings.source == "user" and mine == {"OMP_WAIT_POLICY": "ACTIVE"}  # never overridden
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        configure_threads(0, environ={})


def test_the_command_line_sets_the_wait_policy_before_torch_loads(tmp_path):
    """`texseg` in a fresh interpreter: the variable is in place before torch is imported, and a
    user's own setting wins."""
    import os
    import subprocess
    import sys

    code = ("import sys, os; from texseg.cli import main; assert 'torch' not in sys.modules\n"
            "sys.argv = ['texseg', 'devices']\nmain()")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env["TEXSEG_CACHE_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "GOMP_SPINCOUNT=10000 (texseg's default)" in out.stdout
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "PASSIVE"},
                         capture_output=True, text=True, timeout=600)
    assert "OMP_WAIT_POLICY=PASSIVE (set by the user)" in out.stdout


def test_threads_are_the_cores_other_programs_leave_free():
    from texseg.threads import busy_cores, choose_threads

    assert choose_threads(2, busy=0) == 2 and choose_threads(2, busy=1) == 1 and choose_threads(8, busy=3) == 5
    assert choose_threads(2, busy=2) == 1 and choose_threads(8, busy=12) == 1 and choose_threads(1, busy=5) == 1
    assert choose_threads(0, busy=0) == 1
    assert busy_cores(samples=2, interval=0.0) >= 0


def test_the_thread_governor_gives_a_taken_core_back_and_takes_it_again_when_free():
    from texseg.threads import ThreadGovernor

    now, busy, applied = [0.0], [0.0], []
    g = ThreadGovernor(2, 2, applied.append, busy=lambda: busy[0], clock=lambda: now[0])

    def window(cpu_per_thread: float, steps: int, seconds: float = 1.0):
        now[0] += seconds
        return g.observe(cpu_per_thread * g.threads * seconds, seconds, steps)

    # idle: 2 threads get 90% of their time -- nothing changes, and no probe while all cores are used
    assert [window(0.9, 30) for _ in range(4)] == [None] * 4
    assert g.observe(0.5, 0.5, 2) is None  # half a window: not yet judged
    # another program takes a core: over a 1-s window the two threads got one core's time, and training crawls
    now[0] += 0.5
    assert g.observe(0.5, 0.5, 2) == 1 and applied == [1] and g.threads == 1
    assert window(1.0, 25) is None  # the trial: one thread trains faster, so it stays
    # the core is still taken: the probe (at most every 3 s) finds the other program and keeps one thread
    busy[0] = 1.0
    assert [window(1.0, 25) for _ in range(6)] == [None] * 6
    # it ends: the next probe gives both cores back, and two threads train faster
    busy[0] = 0.0
    results = [window(0.9, 30) for _ in range(4)]
    assert 2 in results and applied == [1, 2] and g.threads == 2


def test_a_long_story_of_thread_changes_is_told_short():
    from texseg.threads import thread_changes_note

    note = thread_changes_note(2, [(10 * i, 1 + i % 2) for i in range(1, 40)])
    assert note.startswith("other programs shared the cores: torch threads 2 at the start, 2 from step 11, ")
    assert note.count("from step") == 5 and "and 34 more changes" in note


def test_the_thread_governor_undoes_a_change_that_made_training_slower():
    """An idle machine with many cores where much of a step runs on one thread: a low share, but no other
    program -- fewer threads train slower, so the governor goes back and waits longer each time."""
    from texseg.threads import ThreadGovernor

    now, applied = [0.0], []
    g = ThreadGovernor(16, 16, applied.append, busy=lambda: 0.0, clock=lambda: now[0])
    speed = {16: 40, 8: 30}  # steps per second by thread count (Amdahl: more threads still help)

    def window():
        now[0] += 1.0
        return g.observe(0.47 * g.threads, 1.0, speed.get(g.threads, 20))

    assert window() == 8  # a low share: try fewer
    assert window() == 16 and g.threads == 16  # slower: undone
    changes = [window() for _ in range(40)]
    assert g.threads == 16 and len([c for c in changes if c is not None]) <= 8  # rarer and rarer
    assert g.hold > 3.0


def test_a_run_whose_threads_texseg_chooses_follows_the_free_cores(tmp_path, monkeypatch):
    """The training loop feeds the governor and records what it did (fixed threads: no governor)."""
    from texseg.workers import available_cores

    before = torch.get_num_threads()
    try:
        assert engine.build_trainer(tiny(threads=1)).governor is None
        cores_freed_after_the_start(monkeypatch, engine)
        r = train(tiny(iterations=4, eval_every=2), tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(before)
    summary = json.loads((r.run_dir / "summary.json").read_text())
    assert json.loads((r.run_dir / "config.json").read_text())["threads"] == 1  # what it started with
    note = next(n for n in summary["notes"] if n.startswith("other programs shared the cores"))
    assert note.startswith(f"other programs shared the cores: torch threads 1 at the start, {available_cores()} "
                           "from step 2")


def test_an_unmeasured_bf16_cpu_is_conservative_until_calibrated(tmp_path, monkeypatch):
    """AVX512-BF16 without AMX: cpu-fp32 until a calibration on this machine says bf16 is faster."""
    import texseg.device

    cpu = torch.device("cpu")
    monkeypatch.setenv("TEXSEG_CACHE_DIR", str(tmp_path))
    for module in (device_defaults, texseg.device):
        monkeypatch.setattr(module, "fast_bf16", lambda device: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert device_defaults.hardware_kind(cpu) == "cpu-fp32"
    assert "conservative cpu-fp32 profile" in device_defaults.profile_source(cpu)
    assert device_defaults.pin_config(TrainConfig(), cpu).precision == "fp32"
    key = device_defaults.calibration_key()
    device_defaults.write_calibration({"key": key, "kind": "cpu-bf16", "bf16_ms": 50.0, "fp32_ms": 140.0,
                                       "bf16_speedup": 2.8, "date": "today", "loadavg": 0.1})
    assert device_defaults.hardware_kind(cpu) == "cpu-bf16"
    assert "calibrated here" in device_defaults.profile_source(cpu)
    assert device_defaults.pin_config(TrainConfig(), cpu).precision == "bf16"
    (tmp_path / "calibration.json").write_text("{broken")  # an unreadable cache: conservative again
    assert device_defaults.hardware_kind(cpu) == "cpu-fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert device_defaults.hardware_kind(cpu) == "cpu-bf16"  # AMX: what the cpu-bf16 profile was measured on


def test_a_cpu_calibrated_to_bf16_without_amx_keeps_the_small_unet_for_short_runs(tmp_path, monkeypatch):
    """Issue 20: on a 2-core AMD EPYC (avx512_bf16, no AMX) the full U-Net in bf16 reaches held-out IoU 0.979 in
    the time the small fp32 one reaches 0.983: a calibration must not cost a 30-s run its quick profile."""
    import texseg.device

    cpu = torch.device("cpu")
    monkeypatch.setenv("TEXSEG_CACHE_DIR", str(tmp_path))
    for module in (device_defaults, texseg.device):
        monkeypatch.setattr(module, "fast_bf16", lambda device: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    device_defaults.write_calibration({"key": device_defaults.calibration_key(), "kind": "cpu-bf16", "bf16_ms": 70.7,
                                       "fp32_ms": 121.5, "bf16_speedup": 1.72, "date": "today", "loadavg": 0.1})
    profile = device_defaults.device_profile(cpu)
    assert profile.hardware == "cpu-bf16" and "AMD EPYC" in profile.measured
    short = profile.values_for(TrainConfig(time_budget=30))
    assert (short["model_kwargs"], short["batch_size"], short["lr"]) == ({"base_width": 8}, 2, 5e-3)
    long = profile.values_for(TrainConfig(time_budget=300))
    assert (long["model_kwargs"], long["batch_size"], long["lr"]) == ({}, 4, 1e-2)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert device_defaults.device_profile(cpu) is PROFILES["cpu-bf16"]  # AMX: as measured there


def test_calibration_times_both_precisions_and_saves_only_a_trusted_verdict(tmp_path, monkeypatch):
    from texseg.training.calibrate import calibrate_cpu

    monkeypatch.setenv("TEXSEG_CACHE_DIR", str(tmp_path))
    threads = torch.get_num_threads()
    try:
        r = calibrate_cpu(seconds=0.0)
    finally:
        torch.set_num_threads(threads)
    assert r["steps"] >= 3 and r["fp32_ms"] > 0 and r["bf16_ms"] > 0
    assert r["kind"] == ("cpu-bf16" if r["bf16_speedup"] >= device_defaults.BF16_MIN_SPEEDUP else "cpu-fp32")
    saved = (tmp_path / "calibration.json").is_file()
    assert saved == r["trusted"] == (r["cpu_share"] >= 0.5)
