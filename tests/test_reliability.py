"""Interrupt and resume, crash safety, hostile files, divergence and memory refusal."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

import texseg
from conftest import PROCESS_TIMEOUT, cli_process, handles_stop_signals, wait_until
from texseg.checkpoint import load_resume_state
from texseg.errors import CheckpointError, RunDirError
from texseg.models import registry
from texseg.training.config import TrainConfig
from texseg.training.loop import resume_training, train
from texseg.training.rundir import read_metrics


# One thread, pinned: on a busy machine texseg picks one thread where an idle one gets two, and sums split
# over another number of threads differ in the last bit, so a reference run and the run it is compared
# with must not choose by the load of the moment (bit-exact comparisons below).
def tiny(**kw) -> TrainConfig:
    base = dict(image_size=32, model="cnn", model_kwargs={"num_channels": 4}, iterations=12, time_budget=None,
                eval_every=4, val_size=4, batch_size=2, lr=1e-2, schedule="cosine", threads=1)
    base.update(kw)
    return TrainConfig(**base)


def interrupt_at(step: int):
    """An on_eval hook that delivers a real SIGINT after evaluation ``step``."""

    def hook(s, seconds, metrics):
        if s == step:
            signal.raise_signal(signal.SIGINT)
        return False

    return hook


def _weights(run_dir):
    return load_file(run_dir / "model.safetensors")


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


# ------------------------------------------------------------------ interrupt and resume
def test_interrupted_then_resumed_equals_uninterrupted_bit_for_bit(tmp_path):
    ref = train(tiny(), tmp_path / "ref", progress=False)
    part = train(tiny(), tmp_path / "run", progress=False, on_eval=interrupt_at(4))
    assert part.status == "interrupted" and part.summary["iterations"] == 4
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "interrupted"
    done = resume_training(tmp_path / "run", progress=False)
    assert done.status == "completed" and done.summary["iterations"] == 12
    assert _strip(read_metrics(ref.run_dir)) == _strip(read_metrics(done.run_dir))
    a, b = _weights(ref.run_dir), _weights(done.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_interrupt_between_evaluations(tmp_path):
    """Interrupted mid-window (step 6 of eval_every 4): the partial window resumes exactly too."""
    ref = train(tiny(eval_every=3), tmp_path / "ref", progress=False)
    part = train(tiny(eval_every=3), tmp_path / "run", progress=False, on_eval=interrupt_at(6))
    assert part.status == "interrupted"
    done = resume_training(tmp_path / "run", progress=False)
    a, b = _weights(ref.run_dir), _weights(done.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_time_budgeted_run_resumes_with_the_budget_left(tmp_path):
    cfg = tiny(iterations=None, time_budget=1.0, eval_every=1)  # interrupt after step 1, however slow
    part = train(cfg, tmp_path / "run", progress=False, on_eval=interrupt_at(1))
    assert part.status == "interrupted" and part.summary["train_seconds"] < 1.0
    done = resume_training(tmp_path / "run", progress=False)
    assert done.status == "completed"
    assert 1.0 <= done.summary["train_seconds"] < 1.0 + 0.5
    assert done.summary["iterations"] > part.summary["iterations"]


def test_finished_runs_and_non_runs_are_not_resumed(tmp_path):
    train(tiny(iterations=2, eval_every=2), tmp_path / "run", progress=False)
    with pytest.raises(RunDirError, match="already ended"):
        resume_training(tmp_path / "run")
    with pytest.raises(RunDirError, match="no run"):
        resume_training(tmp_path / "empty")


def test_pickle_payload_in_resume_state_is_refused_and_never_runs(tmp_path):
    train(tiny(), tmp_path / "run", progress=False, on_eval=interrupt_at(4))
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "run" / "resume.pt").write_bytes(pickle.dumps({"version": 2, "x": Payload()}))
    with pytest.raises(CheckpointError, match="cannot resume"):
        resume_training(tmp_path / "run", progress=False)
    assert not marker.exists()


CLI_RUN = ["train", "--image-size", "32", "--model", "cnn", "--model-arg", "num_channels=4", "--batch-size", "2",
           "--val-size", "4", "--lr", "0.01", "--threads", "1", "--quiet"]  # threads: see tiny()


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    with cli_process(*args) as proc:
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_ctrl_c_on_the_cli_saves_exits_130_and_resumes_to_the_same_result(tmp_path):
    args = [*CLI_RUN, "--iterations", "400", "--eval-every", "20"]
    assert _run_cli(*args, "--out", str(tmp_path / "ref")).returncode == 0
    with cli_process(*args, "--out", str(tmp_path / "run")) as proc:
        wait_until(lambda: (tmp_path / "run" / "metrics.csv").exists(), proc, what="the first evaluation")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "Traceback" not in err
    resumed = _run_cli("train", "--resume", str(tmp_path / "run"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0, 2.5])
def test_a_stop_signal_at_any_moment_of_start_up_is_one_line_and_exit_130(tmp_path, sig, delay):
    """From the moment texseg holds the signals (before torch is imported) on: import, set-up, training.

    Readiness is observed (the handler in /proc/PID/status), so a slow import of torch
    only moves the moment within the start-up window; the delays then land in imports,
    set-up or the first steps depending on the machine, and every case must end the same.
    """
    run_dir = tmp_path / "run"
    with cli_process(*CLI_RUN, "--iterations", "100000", "--eval-every", "5", "--out", str(run_dir)) as proc:
        wait_until(lambda: handles_stop_signals(proc.pid), proc, what="texseg to take over the stop signals")
        time.sleep(delay)  # a chosen moment, not a wait for something: any moment must be handled
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1 and "interrupted" in lines[0], err
    if (run_dir / "config.json").exists():  # it had started: a whole, resumable run
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
        texseg.load_model(run_dir)
    else:  # stopped before the run existed: nothing half-written, a new run may use the folder
        assert not run_dir.exists() or not any(run_dir.glob("*.tmp"))
    assert not any(run_dir.glob(".*.tmp")) if run_dir.exists() else True


def test_a_signal_before_texseg_holds_the_signals_never_gives_a_traceback():
    """At t=0 the process may not even be Python yet: the OS default (death by signal) is all there is."""
    with cli_process(*CLI_RUN, "--iterations", "100000", "--out", "/nonexistent/never") as proc:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    assert proc.returncode in (130, -signal.SIGINT) and "Traceback" not in err, err


def test_resume_refuses_other_training_options(capsys, tmp_path):
    from texseg.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--resume", str(tmp_path), "--lr", "0.1"])
    assert exc.value.code == 2 and "--lr" in capsys.readouterr().err


# ------------------------------------------------------------------------ crash safety
def _check_run_dir(run_dir):
    """What a killed run must leave: parseable files and a loadable, resumable checkpoint."""
    if (run_dir / "summary.json").exists():
        assert json.loads((run_dir / "summary.json").read_text())["status"] in ("running", "completed")
    if (run_dir / "config.json").exists():
        assert (run_dir / "resume.pt").exists() and (run_dir / "model.safetensors").exists()
    if (run_dir / "metrics.csv").exists():
        read_metrics(run_dir)
    if (run_dir / "model.json").exists() and (run_dir / "model.safetensors").exists():
        texseg.load_model(run_dir)
    if (run_dir / "config.json").exists():
        load_resume_state(run_dir / "resume.pt", json.loads((run_dir / "config.json").read_text()))
    leftovers = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")] if run_dir.exists() else []
    return leftovers


def _kill_at_random_moments(tmp_path, points, seed):
    rng = random.Random(seed)
    for i in range(points):
        run_dir = tmp_path / f"k{i}"
        with cli_process(*CLI_RUN, "--iterations", "100000", "--eval-every", "1", "--out", str(run_dir)) as proc:
            wait_until(lambda d=run_dir: (d / ".texseg-run").exists(), proc, what="the run directory")
            time.sleep(rng.uniform(0.0, 1.5))  # a random moment, early window included
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        _check_run_dir(run_dir)
        if (run_dir / "config.json").exists():
            assert (run_dir / "resume.pt").exists()  # a run that exists is resumable
            if i % 3 == 0:  # and the killed run resumes; a Ctrl-C once it trains stops it cleanly
                with cli_process("train", "--resume", str(run_dir), "--quiet") as resumed:
                    rows = len(read_metrics(run_dir)) if (run_dir / "metrics.csv").exists() else 0
                    wait_until(lambda d=run_dir, n=rows: (d / "metrics.csv").exists() and len(read_metrics(d)) > n,
                               resumed, what="a new evaluation of the resumed run")
                    resumed.send_signal(signal.SIGINT)
                    _, err = resumed.communicate(timeout=PROCESS_TIMEOUT)
                assert resumed.returncode == 130 and "Traceback" not in err, err
        else:  # killed before the run existed: the folder is treated as new
            train(tiny(iterations=2, eval_every=2), run_dir, progress=False)


def test_kill_9_at_random_moments_leaves_a_usable_run(tmp_path):
    _kill_at_random_moments(tmp_path, points=6, seed=1)


@pytest.mark.slow
def test_kill_9_at_many_random_moments(tmp_path):
    _kill_at_random_moments(tmp_path, points=40, seed=2)


def test_a_second_writer_is_refused_while_a_run_is_live(tmp_path):
    run_dir = tmp_path / "run"
    with cli_process(*CLI_RUN, "--iterations", "100000", "--eval-every", "50", "--out", str(run_dir)) as proc:
        wait_until(lambda: (run_dir / "config.json").exists(), proc, what="the run to start")
        with pytest.raises(RunDirError, match="in use"):
            resume_training(run_dir)
        second = _run_cli(*CLI_RUN, "--iterations", "5", "--out", str(run_dir))
        assert second.returncode == 2 and "in use" in second.stderr and second.stderr.count("\n") == 1


# -------------------------------------------------------------------------- full disk
def _fill_disk_after(monkeypatch, writes: int):
    """Make every file write after the first ``writes`` fail as a full disk would."""
    import errno

    import texseg.io

    real, count = texseg.io.atomic_write, [0]

    def failing(path, writer):
        count[0] += 1
        if count[0] > writes:
            def full(p):
                writer(p)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(p))
            return real(path, full)
        return real(path, writer)

    monkeypatch.setattr(texseg.io, "atomic_write", failing)
    return count


def test_a_full_disk_ends_training_as_failed_keeps_the_last_checkpoint_and_resumes(tmp_path, monkeypatch):
    from texseg.training import StorageError

    ref = train(tiny(), tmp_path / "ref", progress=False)
    count = _fill_disk_after(monkeypatch, writes=13)  # fails inside the checkpoint of step 8
    with pytest.raises(StorageError, match="No space left on device") as err:
        train(tiny(), tmp_path / "run", progress=False)
    assert str(tmp_path / "run") in str(err.value) and "step" in str(err.value)
    assert count[0] > 13
    monkeypatch.undo()  # space is freed
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["message"]
    assert not list((tmp_path / "run").glob(".*.tmp"))
    texseg.load_model(tmp_path / "run")  # the last good checkpoint
    done = resume_training(tmp_path / "run", progress=False)
    assert done.status == "completed"
    a, b = _weights(ref.run_dir), _weights(done.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)  # as if the disk had never filled


def _can_mount_tmpfs(path) -> bool:
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_full_tmpfs_gives_one_line_naming_the_file_and_a_failed_summary(tmp_path):
    disk = tmp_path / "disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here (needs root); the injected full disk test covers the logic")
    try:
        # A U-Net's checkpoint (weights + optimizer state, about 6 MB) cannot fit in 200 kB.
        result = _run_cli("train", "--image-size", "32", "--batch-size", "2", "--val-size", "2",
                          "--iterations", "3", "--quiet", "--out", str(disk / "run"))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0] and str(disk) in lines[0], result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        assert not list((disk / "run").glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ---------------------------------------------------------------------- hostile files
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return train(tiny(iterations=2, eval_every=2), tmp_path_factory.mktemp("h") / "run", progress=False).run_dir


def _edit_tensors(run, fn):
    tensors = load_file(run / "model.safetensors")
    fn(tensors)
    save_file(tensors, run / "model.safetensors")


@pytest.mark.parametrize("case", ["random", "wrong_shape", "missing", "extra", "absurd_json", "wrong_json_type",
                                  "unknown_json_key"])
def test_hostile_or_broken_checkpoints_are_refused(saved, tmp_path, case):
    run = shutil.copytree(saved, tmp_path / "r")
    if case == "random":
        (run / "model.safetensors").write_bytes(os.urandom(4096))
    elif case == "wrong_shape":
        conv = next(k for k, v in sorted(load_file(run / "model.safetensors").items()) if v.ndim == 4)
        _edit_tensors(run, lambda t: t.update({conv: torch.zeros(1, 1, 1, 1)}))
    elif case == "missing":
        _edit_tensors(run, lambda t: t.pop(sorted(t)[0]))
    elif case == "extra":
        _edit_tensors(run, lambda t: t.update({"evil": torch.zeros(2)}))
    else:
        info = json.loads((run / "model.json").read_text())
        if case == "absurd_json":
            info["kwargs"]["num_channels"] = 10**9
        elif case == "wrong_json_type":
            info["num_regions"] = "two"
        else:
            info["payload"] = "x"
        (run / "model.json").write_text(json.dumps(info))
    t0 = time.time()
    with pytest.raises(CheckpointError):
        texseg.load_model(run)
    assert time.time() - t0 < 5  # refused up front, nothing huge allocated


# ------------------------------------------------------------------------- divergence
@pytest.fixture
def nan_model():
    """A registered model whose forward returns NaN on its 3rd and 4th training calls."""

    class Flaky(torch.nn.Module):
        def __init__(self, *, num_classes=1, in_channels=1):
            super().__init__()
            self.conv = torch.nn.Conv2d(in_channels, num_classes, 3, padding=1)
            self.calls = 0

        def forward(self, x):
            y = self.conv(x)
            if self.training:
                self.calls += 1
                if self.calls in (3, 4):
                    return y * float("nan")
            return y

    registry._REGISTRY["flaky-test"] = registry.ModelSpec("flaky-test", "test", None, Flaky)
    yield "flaky-test"
    del registry._REGISTRY["flaky-test"]


def test_nonfinite_loss_stops_as_diverged_and_says_where(tmp_path, nan_model):
    r = train(tiny(model=nan_model, model_kwargs={}, iterations=8, eval_every=2), tmp_path / "r", progress=False)
    assert r.status == "diverged" and "step 3" in r.summary["message"]
    assert r.summary["iterations"] == 2
    model = texseg.load_model(r.run_dir)  # the last good weights
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_skip_nonfinite_skips_and_counts(tmp_path, nan_model):
    r = train(tiny(model=nan_model, model_kwargs={}, iterations=8, eval_every=2, skip_nonfinite=True),
              tmp_path / "r", progress=False)
    assert r.status == "completed" and r.summary["skipped_steps"] == 2 and r.summary["iterations"] == 8


# ----------------------------------------------------------------------------- memory
def test_too_large_requests_are_refused_up_front_with_an_estimate(tmp_path, capsys):
    t0 = time.time()
    with pytest.raises(ValueError, match="GiB"):
        train(tiny(image_size=100_000), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="GiB"):
        texseg.generate_data(64, 100_000)
    assert time.time() - t0 < 10
    assert not (tmp_path / "r").exists()
    from texseg.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--image-size", "100000", "--iterations", "1", "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "GiB" in err and err.count("\n") == 1
