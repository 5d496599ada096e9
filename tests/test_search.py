"""`texseg search`: reports, continuing a search, pruning, divergence, concurrent workers, errors."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from conftest import run_main
from texseg.search import SearchSettings, build_space, run_search, write_reports
from texseg.search.storage import STALE_AFTER_S, is_stale, open_storage
from texseg.search.study import OptunaPruning
from texseg.training.config import TrainConfig
from texseg.training.rundir import RunStatus
from texseg.training.state import Evaluation

# Tiny trials: 32 px, 3 steps, an evaluation after each step, 4 validation images.
TINY = ["--image-size", "32", "--iterations", "3", "--eval-every", "1", "--val-size", "4", "--quiet"]
CNN = ["--model", "cnn", "--model-arg", "num_channels=4"]
TINY_FIXED = {"image_size": 32, "iterations": 3, "eval_every": 1, "val_size": 4, "model": "cnn",
              "model_kwargs": {"num_channels": 4}}


run = run_main


def read_trials(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def ran_now(stdout: str) -> int:
    return int(re.search(r"\((\d+) run now", stdout).group(1))


def load_study(out: Path, name: str = "texseg") -> optuna.Study:
    storage = open_storage(SearchSettings(out))
    return optuna.load_study(study_name=name, storage=storage)


def test_search_writes_reports_then_continues_where_it_stopped(capsys, tmp_path, untrivial):
    out = tmp_path / "s"
    code, stdout, err = run(capsys, "search", "--trials", "3", "--out", str(out), *TINY, "--batch-size", "2")
    assert code == 0, err
    assert ran_now(stdout) == 3 and "3 of 3 finished" in stdout
    for name in ("best.json", "trials.csv", "history.png", "summary.md", "study.journal", "search.json"):
        assert (out / name).is_file(), name
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # importance needs >= 2 completed trials with different values: a plot or a note saying why not
    assert (out / "importance.png").is_file() or "no parameter-importance plot" in stdout
    best = json.loads((out / "best.json").read_text())
    assert 0 <= best["value"] <= 1 and set(best["params"]) >= {"model", "loss", "optimizer", "lr", "schedule"}
    assert Path(best["run_dir"]) == (out / "trials" / str(best["number"])).resolve()
    rows = read_trials(out)
    assert [r["number"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"COMPLETE"}
    assert all(float(r["seconds"]) > 0 and r["model"] in ("cnn", "unet") for r in rows)
    summary = (out / "summary.md").read_text()
    assert "3 of 3 trials finished" in summary and "## Best" in summary and "history.png" in summary
    for n in range(3):  # every trial is an ordinary, loadable run directory
        run_summary = json.loads((out / "trials" / str(n) / "summary.json").read_text())
        assert run_summary["status"] == "completed" and run_summary["iterations"] == 3
    import texseg

    texseg.load_model(best["run_dir"])

    code, stdout, _ = run(capsys, "search", "--trials", "3", "--out", str(out), *TINY, "--batch-size", "2")
    assert code == 0 and ran_now(stdout) == 0  # nothing left to do
    code, stdout, _ = run(capsys, "search", "--trials", "5", "--out", str(out), *TINY, "--batch-size", "2")
    assert code == 0 and ran_now(stdout) == 2 and "5 of 5 finished" in stdout
    assert [r["number"] for r in read_trials(out)] == ["0", "1", "2", "3", "4"]
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0", "1", "2", "3", "4"]

    # a different problem in the same folder is refused, naming what differs
    code, _, err = run(capsys, "search", "--trials", "6", "--out", str(out), *TINY, "--batch-size", "2",
                       "--val-size", "8")
    assert code == 2 and "val_size: 4 -> 8" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "search", "--out", str(out), "--study-name", "other", *TINY)
    assert code == 2 and "--study-name" in err and len(err.strip().splitlines()) == 1


def test_pruned_trials_are_recorded_and_count(tmp_path):
    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    settings = SearchSettings(tmp_path / "p", trials=2)
    result = run_search(settings, TINY_FIXED, pruner=AlwaysPrune())
    assert result.ran == 2 and result.counted == 2 and result.best is None
    rows = read_trials(settings.out)
    assert [r["state"] for r in rows] == ["PRUNED", "PRUNED"] and all(r["status"] == "pruned" for r in rows)
    run_summary = json.loads((settings.out / "trials" / "0" / "summary.json").read_text())
    assert run_summary["status"] == "pruned" and run_summary["iterations"] == 1  # stopped at the first eval
    assert json.loads((settings.out / "best.json").read_text())["value"] is None
    assert "**no completed trial yet**" in (settings.out / "summary.md").read_text()  # best.json's words


def test_pruning_callback_reports_per_tenth_of_the_budget_and_never_at_the_end():
    class FakeTrial:
        def __init__(self) -> None:
            self.reports: list[tuple[float, int]] = []

        def report(self, value: float, step: int) -> None:
            self.reports.append((value, step))

        def should_prune(self) -> bool:
            return True

    trial = FakeTrial()
    pruning = OptunaPruning(trial)
    state = SimpleNamespace(config=TrainConfig(iterations=None, time_budget=10.0))  # all it reads of the state

    def cb(step, seconds, metrics):  # the stop it returns, as the loop sees it
        answer = pruning.on_evaluation(state, Evaluation(step, seconds, metrics, {}, False, 4))
        return answer is not None and answer.status == RunStatus.PRUNED

    assert cb(5, 0.5, {"iou": 0.1}) is True  # 5 % of the budget: tenth 0
    assert cb(9, 0.9, {"iou": 0.2}) is False  # still tenth 0: Optuna keeps one value per step
    assert cb(40, 4.2, {"iou": float("nan")}) is False  # a NaN is not reported
    assert cb(50, 5.0, {"iou": 0.5}) is True
    assert cb(99, 10.0, {"iou": 0.9}) is False  # the final evaluation: the run is complete anyway
    assert trial.reports == [(0.1, 0), (0.5, 5)]
    from texseg.training.engine import progress_fraction

    assert progress_fraction(TrainConfig(iterations=20, time_budget=None), 10, 123.0) == 0.5  # what it reports by


def test_diverged_trials_score_zero_and_the_search_goes_on(tmp_path):
    settings = SearchSettings(tmp_path / "d", trials=2)
    result = run_search(settings, {**TINY_FIXED, "lr": 1e30, "optimizer": "sgd"})
    assert result.ran == 2 and result.counted == 2
    rows = read_trials(settings.out)
    assert [(r["state"], r["status"], r["value"]) for r in rows] == [("COMPLETE", "diverged", "0")] * 2
    assert json.loads((settings.out / "trials" / "1" / "summary.json").read_text())["status"] == "diverged"


def test_space_leaves_out_what_is_fixed_and_skips_seed_cnn():
    base = TrainConfig(image_size=32)
    space = build_space(base, {})
    assert space.models == ("cnn", "unet") and set(space.searched) == {
        "model", "width", "loss", "optimizer", "lr", "schedule", "batch_size"}
    space = build_space(TrainConfig(model="cnn", model_kwargs={"num_channels": 4}, loss="dice"),
                        {"model": "cnn", "model_kwargs": {"num_channels": 4}, "loss": "dice"})
    assert set(space.searched) == {"optimizer", "lr", "schedule", "batch_size"}
    assert build_space(TrainConfig(regions=3), {}).losses == ("ce", "dice", "ce+dice", "mse")


def test_reports_with_importance_and_with_too_few_trials(tmp_path):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    base = TrainConfig(image_size=32)
    space = build_space(base, {})
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "loss": CategoricalDistribution(["bce", "dice"])}
    study = optuna.create_study(direction="maximize")
    settings = SearchSettings(tmp_path)
    study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3, "loss": "bce"}, distributions=dists, value=0.5))
    files, notes, best = write_reports(study, settings, base, space)
    assert not (tmp_path / "importance.png").exists() and "at least 2 completed trials" in notes[0]
    for i in range(6):
        study.add_trial(optuna.trial.create_trial(params={"lr": 10 ** (-1 - i / 2), "loss": ["bce", "dice"][i % 2]},
                                                  distributions=dists, value=0.9 - 0.1 * i))
    files, notes, best = write_reports(study, settings, base, space)
    assert (tmp_path / "importance.png").is_file() and not notes and best["number"] == 1
    assert "Parameter importance" in (tmp_path / "summary.md").read_text()


def test_stale_running_trials_are_failed_and_replaced(tmp_path):
    settings = SearchSettings(tmp_path / "k", trials=1)
    assert run_search(settings, TINY_FIXED).ran == 1
    # Two RUNNING trials left by killed workers: one on this machine (its process is gone),
    # one elsewhere whose heartbeat stopped long ago; and one live worker elsewhere.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = load_study(settings.out)
    for attrs in ({"host": socket.gethostname(), "pid": dead.pid, "heartbeat": time.time()},
                  {"host": "elsewhere", "pid": 1, "heartbeat": time.time() - 10 * STALE_AFTER_S},
                  {"host": "elsewhere", "pid": 1, "heartbeat": time.time()}):
        trial = study.ask()
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
    result = run_search(replace_trials(settings, 3), TINY_FIXED)
    # 1 done + 1 live elsewhere: one more to run; the two stale ones neither block nor count
    assert result.ran == 1 and result.counted == 2
    states = {r["number"]: (r["state"], r["status"]) for r in read_trials(settings.out)}
    assert states == {"0": ("COMPLETE", "completed"), "1": ("FAIL", "stale"), "2": ("FAIL", "stale"),
                      "3": ("RUNNING", "running"), "4": ("COMPLETE", "completed")}


def replace_trials(settings: SearchSettings, trials: int) -> SearchSettings:
    from dataclasses import replace

    return replace(settings, trials=trials)


def test_is_stale_rules():
    class T:
        def __init__(self, **attrs):
            self.user_attrs, self.datetime_start = attrs, None

    now, me = time.time(), socket.gethostname()
    assert not is_stale(T(host=me, pid=os.getpid(), heartbeat=now - 1), now, me)
    assert is_stale(T(host=me, pid=os.getpid(), heartbeat=now - 2 * STALE_AFTER_S), now, me)  # hung, or pid reused
    assert not is_stale(T(host="b", pid=1, heartbeat=now - 1), now, me)
    assert is_stale(T(host="b", pid=1, heartbeat=now - 2 * STALE_AFTER_S), now, me)
    assert not is_stale(T(), now, me)  # just created: no attributes yet


def cli_search(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "texseg.cli", "search", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_two_processes_share_one_study(tmp_path):
    """Two `texseg search` commands on one storage, the first with a second worker (--jobs 2)."""
    storage = str(tmp_path / "shared.journal")
    common = ["--trials", "5", "--storage", storage, *TINY, *CNN, "--threads", "1"]
    procs = [cli_search("--out", str(tmp_path / "a"), "--jobs", "2", *common),
             cli_search("--out", str(tmp_path / "b"), *common)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(ran_now(out) for out, _ in outputs) == 5  # every trial ran exactly once
    study = optuna.load_study(study_name="texseg", storage=open_storage(SearchSettings(tmp_path, storage=storage)))
    counted = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]  # a pruned trial counts too
    assert len(counted) == 5 and len({t.number for t in counted}) == 5, [(t.number, t.state.name) for t in study.trials]
    assert len({t.user_attrs["worker"] for t in counted}) >= 2  # the work was shared
    dirs = [int(p.name) for name in ("a", "b") for p in (tmp_path / name / "trials").iterdir()]
    assert sorted(dirs) == sorted(t.number for t in counted)  # each number trained once, in one folder


def test_a_killed_search_continues(tmp_path):
    out = tmp_path / "killed"
    args = ["--trials", "1", "--out", str(out), *TINY, *CNN, "--iterations", "100000", "--time-budget", "1",
            "--eval-every", "1000", "--threads", "1"]
    proc = cli_search(*args)
    deadline = time.monotonic() + 60
    while not (out / "trials" / "0" / "config.json").exists():  # trial 0 is training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    result = run_search(SearchSettings(out, trials=1),
                        {**TINY_FIXED, "iterations": 100000, "time_budget": 1, "eval_every": 1000, "threads": 1})
    assert result.ran == 1 and result.counted == 1  # the killed trial neither blocks nor counts
    assert [(r["number"], r["status"]) for r in read_trials(out)] == [("0", "stale"), ("1", "completed")]


@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "trials must be an integer in [1, "),
    (["--time-budget", "0"], "--time-budget must be a finite number > 0"),
    (["--time-budget", "nan"], "--time-budget must be a finite number > 0, got nan"),
    (["--time-budget", "inf"], "--time-budget must be a finite number > 0, got inf"),
    (["--storage", "redis2://host/0"], "unknown scheme 'redis2'"),
    (["--jobs", "0"], "jobs must be an integer"),
    (["--pruner", "hyperband"], "pruner must be one of median, none"),
    (["--models", "cnn,resnet"], "models must be one of"),
    (["--models", "cnn", "--model", "unet"], "--models and --model exclude each other"),
    (["--model", "cnn", "--model-arg", "num_channels=4", "--loss", "bce", "--optimizer", "adam", "--lr", "0.01",
      "--schedule", "cosine", "--batch-size", "4"], "nothing to search"),
    (["--model-arg", "depth=2"], "depth is not an option of model 'cnn'"),
])
def test_bad_input_is_one_line(capsys, tmp_path, args, message):
    code, out, err = run(capsys, "search", "--out", str(tmp_path / "e"), *args)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "e" / "trials").exists()  # nothing ran


def test_unreachable_storage_is_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "search", "--out", str(tmp_path / "e"), "--storage",
                       f"sqlite:///{tmp_path}/no/such/dir/db.sqlite", *TINY)
    assert code == 2 and "cannot open storage" in err and len(err.strip().splitlines()) == 1


def test_a_search_whose_trials_are_all_trivial_chooses_none_and_says_so(capsys, tmp_path):
    out = tmp_path / "s"
    code, stdout, err = run(capsys, "search", "--trials", "2", "--out", str(out), *TINY, "--batch-size", "2")
    assert code == 0, err
    best = json.loads((out / "best.json").read_text())
    assert best["value"] is None and best["message"].startswith("no verdict: every completed trial is trivial")
    assert best["message"] in stdout and f"**{best['message']}**" in (out / "summary.md").read_text()
