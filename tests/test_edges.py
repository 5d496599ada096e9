"""Reliability at the edges: early kills, damaged or foreign state, overwrites, workers, user errors."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch

import texseg
import texseg.io
from conftest import PROCESS_TIMEOUT, cli_process, run_main, wait_until
from texseg.checkpoint import RESUME_STATE
from texseg.errors import CheckpointError, RunDirError
from texseg.training import RunDir, resume_training, train
from texseg.training.config import TrainConfig


def tiny(**kw) -> TrainConfig:
    base = dict(image_size=32, model="cnn", model_kwargs={"num_channels": 4}, iterations=4, time_budget=None,
                eval_every=2, val_size=4, batch_size=2, lr=1e-2)
    return TrainConfig(**{**base, **kw})


cli = run_main


class Killed(BaseException):
    """Stands for a kill -9: nothing after it runs in the killed process (finally blocks aside)."""


# ------------------------------------------------------------------------- early window
@pytest.mark.parametrize("writes", range(0, 8))
def test_a_kill_at_every_write_of_a_starting_run_leaves_a_resumable_or_a_new_run(tmp_path, monkeypatch, writes):
    """Abort at the k-th file write of a new run: the folder is resumable (config.json) or reusable as new."""
    real, count = texseg.io.atomic_write, [0]

    def dying(path, writer):
        count[0] += 1
        if count[0] > writes:
            raise Killed
        return real(path, writer)

    monkeypatch.setattr(texseg.io, "atomic_write", dying)
    with pytest.raises(Killed):
        train(tiny(), tmp_path / "run", progress=False)
    monkeypatch.undo()
    (tmp_path / "run" / ".model.safetensors.abc.tmp").write_bytes(b"half")  # what a real kill leaves
    if (tmp_path / "run" / "config.json").exists():
        assert resume_training(tmp_path / "run", progress=False).status == "completed"
    else:
        assert train(tiny(), tmp_path / "run", progress=False).status == "completed"
    assert not list((tmp_path / "run").glob(".*.tmp"))
    texseg.load_model(tmp_path / "run")


# ------------------------------------------------------------------ damaged resume state
@pytest.fixture
def interrupted_run(tmp_path):
    def stop_after_first_eval(step, seconds, metrics):
        signal.raise_signal(signal.SIGINT)
        return False

    run = train(tiny(iterations=6), tmp_path / "run", progress=False, on_eval=stop_after_first_eval)
    assert run.status == "interrupted"
    return run.run_dir


def _edit_state(path, fn):
    state = torch.load(path, weights_only=True)
    fn(state)
    torch.save(state, path)


@pytest.mark.parametrize("damage, needle", [
    (lambda p: p.write_bytes(b""), "not a readable texseg resume state"),
    (lambda p: p.write_bytes(os.urandom(300)), "not a readable texseg resume state"),
    (lambda p: _edit_state(p, lambda s: s.pop("counters")), "missing field"),
    (lambda p: _edit_state(p, lambda s: s["counters"].update(step="abc")), "counter step must be an integer"),
    (lambda p: _edit_state(p, lambda s: s["counters"].update(step=-3)), "counter step must be an integer >= 0"),
    (lambda p: _edit_state(p, lambda s: s["counters"].update(train_seconds=-90.4)), "train_seconds"),
    (lambda p: _edit_state(p, lambda s: s.update(rows="rows")), "'rows' must be a list"),
    (lambda p: _edit_state(p, lambda s: s.update(rows=[{"step": "x"}])), "metric row"),
    (lambda p: _edit_state(p, lambda s: s.update(rows=[{"step": 2, "val_iou": "good"}])), "map names to numbers"),
    (lambda p: _edit_state(p, lambda s: s["model"].update({next(iter(s["model"])): torch.zeros(1)})),
     "does not fit this run"),
])
def test_damaged_resume_state_is_refused_with_one_line(interrupted_run, damage, needle):
    damage(interrupted_run / RESUME_STATE)
    with pytest.raises(CheckpointError, match=needle):
        resume_training(interrupted_run, progress=False)


def test_a_resume_state_of_another_run_or_an_edited_config_is_refused(interrupted_run, tmp_path):
    other = train(tiny(iterations=6, lr=0.5), tmp_path / "other", progress=False,
                  on_eval=lambda *a: signal.raise_signal(signal.SIGINT))
    (interrupted_run / RESUME_STATE).write_bytes((other.run_dir / RESUME_STATE).read_bytes())
    with pytest.raises(CheckpointError, match="another configuration.*lr"):
        resume_training(interrupted_run, progress=False)
    config = json.loads((other.run_dir / "config.json").read_text())
    (other.run_dir / "config.json").write_text(json.dumps({**config, "batch_size": 3}))
    with pytest.raises(CheckpointError, match="batch_size"):
        resume_training(other.run_dir, progress=False)


def test_an_experiment_retrains_a_trial_whose_resume_state_is_empty(tmp_path):
    from texseg.experiments import Trial, run_trials

    trial = Trial("a", tiny(iterations=6), 0)
    run_dir = tmp_path / "exp" / "runs" / trial.trial_id
    train(trial.run_config(), run_dir, progress=False, on_eval=lambda *a: signal.raise_signal(signal.SIGINT))
    (run_dir / RESUME_STATE).write_bytes(b"")
    result = run_trials([trial], tmp_path / "exp").results[0]
    assert (result.status, result.action) == ("completed", "restarted")


# ---------------------------------------------------------------------------- overwrites
def test_a_folder_with_the_users_files_is_never_overwritten(tmp_path):
    (tmp_path / "samples.png").write_bytes(b"my picture")
    with pytest.raises(RunDirError, match="samples.png"):
        train(tiny(), tmp_path, progress=False)
    assert (tmp_path / "samples.png").read_bytes() == b"my picture"


def test_an_experiment_folder_holds_one_experiment(capsys, tmp_path):
    common = ["--seeds", "1", "--lrs", "0.01", "--iterations", "2", "--eval-every", "2", "--image-size", "32",
              "--model", "cnn", "--model-arg", "num_channels=4", "--val-size", "4", "--quiet",
              "--out", str(tmp_path / "x1")]
    code, _, err = cli(capsys, "compare", "optimizers", "--optimizers", "sgd", *common)
    assert code == 0, err
    before = (tmp_path / "x1" / "results.csv").read_bytes()
    code, _, err = cli(capsys, "compare", "losses", "--losses", "bce", *common)
    assert code == 2 and "holds another experiment" in err and err.count("\n") == 1, err
    assert (tmp_path / "x1" / "results.csv").read_bytes() == before


def test_an_unfinished_export_is_not_mixed_with_another(capsys, tmp_path, monkeypatch):
    import texseg.data.export as export

    real, calls = export._write_png, [0]

    def interrupted(path, array):
        calls[0] += 1
        if calls[0] > 5:
            raise KeyboardInterrupt
        real(path, array)

    monkeypatch.setattr(export, "_write_png", interrupted)
    code, _, _ = cli(capsys, "generate", "--image-size", "16", "--count", "10", "--out", str(tmp_path / "g"))
    assert code == 130 and not (tmp_path / "g" / "manifest.json").exists()
    monkeypatch.undo()
    code, _, err = cli(capsys, "generate", "--image-size", "16", "--count", "10", "--out", str(tmp_path / "g"))
    assert code == 2 and "unfinished export" in err, err


# --------------------------------------------------------------------- user errors, once
@pytest.mark.parametrize("args, needle", [
    (["train", "--model-arg", "in_channels=3"], "--model-arg cannot set in_channels"),
    (["train", "--model-arg", "num_classes=3"], "--model-arg cannot set num_classes"),
    (["train", "--image-size", "512", "--val-size", "100000", "--iterations", "1"], "use a smaller --val-size"),
    (["generate", "--image-size", "1024", "--count", "100000000", "--out", "{tmp}/big"], "is free on the disk"),
])
def test_user_errors_are_one_line_exit_2(capsys, tmp_path, args, needle):
    code, _, err = cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2 and needle in err and err.count("\n") == 1 and "internal error" not in err, err
    assert not (tmp_path / "big").exists()


def test_absurdly_nested_json_files_are_user_errors(capsys, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "c.json").write_text(deep)
    code, _, err = cli(capsys, "train", "--config", str(tmp_path / "c.json"))
    assert code == 2 and "nested too deeply" in err, err
    run = train(tiny(iterations=2), tmp_path / "run", progress=False).run_dir
    (run / "model.json").write_text(deep)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        texseg.load_model(run)


def test_a_model_json_of_a_newer_format_is_refused(tmp_path):
    run = train(tiny(iterations=2), tmp_path / "run", progress=False).run_dir
    info = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**info, "version": 99}))
    with pytest.raises(CheckpointError, match="format version 99"):
        texseg.load_model(run)


def test_weights_have_the_permissions_of_every_other_file(tmp_path):
    run = train(tiny(iterations=2), tmp_path / "run", progress=False).run_dir
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir() if not p.name.startswith(".")}
    assert len(set(modes.values())) == 1, modes


def test_a_long_but_valid_picture_name_is_accepted(capsys, tmp_path):
    name = "p" * 240 + ".png"  # 244 bytes: the file system allows 255
    code, _, err = cli(capsys, "generate", "--rows", "1", "--image-size", "16", "--picture", str(tmp_path / name))
    assert code == 0 and (tmp_path / name).is_file(), err


def test_a_stop_after_every_trial_completed_is_not_an_interruption(tmp_path, monkeypatch):
    from texseg.experiments import Trial, run_trials
    from texseg.experiments import runner as runner_module

    real = runner_module.train

    def signal_at_the_end(config, run_dir, **kw):
        result = real(config, run_dir, **kw)
        signal.raise_signal(signal.SIGTERM)  # arrives after the last step
        return result

    monkeypatch.setattr(runner_module, "train", signal_at_the_end)
    outcome = run_trials([Trial("a", tiny(), 0)], tmp_path / "exp")
    assert [r.status for r in outcome.results] == ["completed"] and not outcome.interrupted


# ------------------------------------------------------------------------------ workers
def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


COMPARE = ["compare", "optimizers", "--optimizers", "sgd,adam", "--seeds", "1", "--lrs", "0.01", "--jobs", "2",
           "--image-size", "32",
           "--model", "cnn", "--model-arg", "num_channels=4", "--val-size", "4", "--batch-size", "2",
           "--eval-every", "5", "--threads", "1", "--quiet"]


def test_workers_stop_when_their_parent_is_killed_and_a_rerun_finishes(tmp_path):
    out = tmp_path / "exp"
    args = [*COMPARE, "--iterations", "100000", "--time-budget", "6", "--out", str(out)]
    with cli_process(*args) as proc:
        configs = [out / "runs" / f"{name}-seed0" / "config.json" for name in ("sgd", "adam")]
        wait_until(lambda: all(p.exists() for p in configs), proc, what="both workers to start training")
        workers = _children(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)  # the parent only: its workers are orphaned
        proc.wait()
        wait_until(lambda: not any(_alive(w) for w in workers), timeout=120, what="the orphaned workers to stop")
    for p in configs:  # each saved its trial on the way out
        assert json.loads((p.parent / "summary.json").read_text())["status"] in ("interrupted", "completed")
    with cli_process(*args) as rerun:
        _, err = rerun.communicate(timeout=PROCESS_TIMEOUT)
    assert rerun.returncode == 0 and "in use" not in err, err
    import csv

    with open(out / "results.csv", newline="") as f:
        assert sorted(r["status"] for r in csv.DictReader(f)) == ["completed", "completed"]


@pytest.mark.parametrize("delay", [0.5, 3.0])
def test_a_stop_signal_while_workers_start_ends_cleanly_with_results(tmp_path, delay):
    out = tmp_path / "exp"
    with cli_process(*COMPARE, "--iterations", "100000", "--time-budget", "60", "--out", str(out)) as proc:
        wait_until(lambda: (out / "experiment.json").exists(), proc, what="the experiment to start")
        time.sleep(delay)  # a moment while the spawned workers import torch, or just after
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole group
        _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 130 and "Traceback" not in err and "Connection reset" not in err, err
    assert (out / "results.csv").is_file() and (out / "summary.md").is_file()


# ----------------------------------------------------------------------------- searches
def test_processes_creating_one_sqlite_study_at_once_all_succeed(tmp_path):
    from texseg.search.settings import SearchSettings
    from texseg.search.storage import open_study

    url = f"sqlite:///{tmp_path / 'new.db'}"
    results, errors = [], []

    def open_it(i):
        try:
            results.append(open_study(SearchSettings(tmp_path / f"o{i}", storage=url), None)[1])
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            errors.append(e)

    threads = [threading.Thread(target=open_it, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(results) == [False, False, False, True]  # one created it, the others loaded it


def test_a_corrupt_study_journal_is_named(capsys, tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "study.journal").write_bytes(b"\x00garbage{" * 50)
    code, _, err = cli(capsys, "search", "--trials", "1", "--out", str(out), "--iterations", "1")
    assert code == 2 and "study.journal" in err and "internal error" not in err, err


def test_a_run_that_holds_the_lock_refuses_a_second_writer(tmp_path):
    with RunDir(tmp_path / "r"):
        with pytest.raises(RunDirError, match="in use"):
            RunDir(tmp_path / "r", resume=True)
