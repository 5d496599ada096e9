"""Experiments: the trial engine (skip, resume, parallel, failures), statistics, reports, commands."""

from __future__ import annotations

import csv
import json
import math
import shutil
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch

import texseg
from conftest import run_main
from texseg.cli._options import parse_lrs, parse_value
from texseg.evaluation.stats import band
from texseg.experiments import (
    FAILED,
    NOT_RUN,
    Trial,
    TuneSettings,
    lr_sweep,
    mean_ci,
    run_experiment,
    run_trials,
    write_experiment_summary,
)
from texseg.experiments import runner as runner_module
from texseg.experiments.compare import check_compared_values
from texseg.experiments.report import best_group
from texseg.experiments.sweep import suggest_lrs
from texseg.training.config import TrainConfig
from texseg.training.loop import train
from texseg.training.rundir import read_metrics
from texseg.workers import available_cores

TINY_ARGS = ["--image-size", "32", "--model", "cnn", "--model-arg", "num_channels=4", "--iterations", "4",
             "--eval-every", "2", "--val-size", "4", "--batch-size", "2", "--quiet"]


def tiny(**kw) -> TrainConfig:
    base = dict(image_size=32, model="cnn", model_kwargs={"num_channels": 4}, iterations=4, time_budget=None,
                eval_every=2, val_size=4, batch_size=2, lr=1e-2)
    base.update(kw)
    return TrainConfig(**base)


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


cli = run_main


# ------------------------------------------------------------------------------ statistics
def test_mean_ci_matches_a_hand_computed_t_interval():
    # mean 0.9, sample sd 0.1, t(0.975, df=2) = 4.302653 -> half-width 4.302653 * 0.1 / sqrt(3)
    ci = mean_ci([0.8, 0.9, 1.0])
    assert ci.mean == pytest.approx(0.9) and ci.n == 3
    assert ci.half_width == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    assert (ci.low, ci.high) == pytest.approx((0.9 - 0.248414, 0.9 + 0.248414), abs=1e-6)
    # two values: t(0.975, 1) = 12.706205, sd = |a-b|/sqrt(2)
    assert mean_ci([1.0, 2.0]).half_width == pytest.approx(12.706205 * (1 / math.sqrt(2)) / math.sqrt(2), rel=1e-6)
    assert mean_ci([0.8, 0.9, 1.0], confidence=0.9).half_width < ci.half_width
    one = mean_ci([0.5, float("nan")])  # non-finite values are left out
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.low) and one.format() == "0.500 (n=1)"
    assert mean_ci([]).n == 0 and mean_ci([]).format() == "—"
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0], confidence=1.5)


def test_band_resamples_curves_on_their_common_range():
    b = band([([0, 10], [0.0, 1.0]), ([0, 5, 8], [0.2, 0.2, 0.2])], points=5)
    assert b.x[0] == 0 and b.x[-1] == 8  # the range both curves cover
    np.testing.assert_allclose(b.low, np.minimum(b.x / 10, 0.2))
    np.testing.assert_allclose(b.mean, (b.x / 10 + 0.2) / 2)
    assert band([([1.0], [float("nan")])]) is None


def test_lr_range_suggestions_on_a_known_curve():
    lrs = list(np.logspace(-5, 0, 51))
    loss = [1.0 - 0.8 / (1 + math.exp(-3 * (math.log10(lr) + 3))) + (0.5 if lr > 0.1 else 0) for lr in lrs]
    steepest, tenth = suggest_lrs(lrs, loss)
    assert steepest == pytest.approx(1e-3, rel=0.3)  # the sigmoid's inflection point
    assert tenth == pytest.approx(lrs[int(np.argmin(loss))] / 10)
    assert suggest_lrs(lrs[:3], loss[:3]) == (None, None)


# ------------------------------------------------------------------------------ the engine
def test_sweep_rows_statuses_divergence_and_report(tmp_path, untrivial):
    exp = lr_sweep(tiny(optimizer="sgd", loss="mse"), [1e-2, 1e12], seeds=[0, 1], command="texseg sweep lr ...")
    result = run_experiment(exp, tmp_path / "exp")
    write_experiment_summary(exp, result)
    rows = read_csv(tmp_path / "exp" / "results.csv")
    assert [(r["label"], r["seed"], r["status"]) for r in rows] == [
        ("lr=0.01", "0", "completed"), ("lr=0.01", "1", "completed"),
        ("lr=1e+12", "0", "diverged"), ("lr=1e+12", "1", "diverged")]
    for r in rows:
        assert {"lr", "error", "val_iou", "val_loss", "train_seconds", "iterations", "run_dir"} <= set(r)
    assert rows[0]["error"] == "" and rows[0]["iterations"] == "4" and 0 <= float(rows[0]["val_iou"]) <= 1
    assert "non-finite" in rows[2]["error"] or "became" in rows[2]["error"]
    # each trial is an ordinary, loadable run directory
    model = texseg.load_model(tmp_path / "exp" / rows[0]["run_dir"])
    assert not model.training
    best = result.best
    assert best is not None and best.label == "lr=0.01" and best.metrics["iou"].n == 2
    summary = (tmp_path / "exp" / "summary.md").read_text()
    assert "texseg sweep lr ..." in summary and "**best: lr=0.01 (iou " in summary
    assert "0/2 (2 diverged)" in summary and "lr=1e+12-seed0` diverged" in summary
    for name in ("curves.png", "final.png"):
        assert (tmp_path / "exp" / name).read_bytes()[:4] == b"\x89PNG"


def test_rerun_trains_nothing_and_gives_the_same_rows(tmp_path, monkeypatch):
    exp = lr_sweep(tiny(), [1e-2, 1e-3], seeds=[0])
    first = run_experiment(exp, tmp_path / "exp")
    weights = sorted((tmp_path / "exp" / "runs").glob("*/model.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in weights]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(runner_module, "train", no_training)
    monkeypatch.setattr(runner_module, "resume_training", no_training)
    second = run_experiment(exp, tmp_path / "exp")
    assert [r.action for r in second.outcome.results] == ["skipped", "skipped"]
    assert [p.stat().st_mtime_ns for p in weights] == stamps
    assert second.rows == first.rows


def test_interrupted_trial_is_resumed_and_a_run_without_checkpoint_restarted(tmp_path):
    trials = [Trial("a", tiny(), 0), Trial("b", tiny(), 0), Trial("c", tiny(), 0)]
    runs = tmp_path / "exp" / "runs"
    # A run stopped by Ctrl-C after its first evaluation: the loop saves a resumable checkpoint.
    stopped = train(trials[0].run_config(), runs / trials[0].trial_id, progress=False,
                    on_eval=lambda *a: signal.raise_signal(signal.SIGINT))
    assert stopped.status == "interrupted" and stopped.summary["iterations"] == 2
    # A run killed before any checkpoint could be resumed from.
    train(trials[1].run_config(), runs / trials[1].trial_id, progress=False,
          on_eval=lambda *a: signal.raise_signal(signal.SIGINT))
    (runs / trials[1].trial_id / "resume.pt").unlink()
    outcome = run_trials(trials, tmp_path / "exp")
    assert [r.action for r in outcome.results] == ["resumed", "restarted", "new"]
    assert [r.status for r in outcome.results] == ["completed"] * 3
    assert not outcome.interrupted
    steps = [[r["step"] for r in read_metrics(runs / t.trial_id)] for t in trials]
    assert steps == [[2, 4]] * 3  # each step counted once
    # A resumed iteration-bounded run ends exactly as an uninterrupted one.
    iou = [outcome.results[i].summary["val"]["iou"] for i in range(3)]
    assert iou[0] == pytest.approx(iou[2], abs=1e-12)


def test_ctrl_c_stops_the_experiment_and_a_rerun_finishes_it(tmp_path, monkeypatch):
    real_train = runner_module.train

    def interrupted_train(config, run_dir, **kwargs):  # Ctrl-C during the first trial
        return real_train(config, run_dir, **kwargs, on_eval=lambda *a: signal.raise_signal(signal.SIGINT))

    trials = [Trial(f"t{i}", tiny(), 0) for i in range(3)]
    monkeypatch.setattr(runner_module, "train", interrupted_train)
    outcome = run_trials(trials, tmp_path / "exp")
    assert outcome.interrupted
    assert [r.status for r in outcome.results] == ["interrupted", NOT_RUN, NOT_RUN]
    monkeypatch.setattr(runner_module, "train", real_train)
    again = run_trials(trials, tmp_path / "exp")
    assert [(r.action, r.status) for r in again.results] == [("resumed", "completed"), ("new", "completed"),
                                                             ("new", "completed")]


def test_an_interrupted_command_exits_130_and_says_how_to_finish(capsys, tmp_path, monkeypatch):
    real_train = runner_module.train
    monkeypatch.setattr(runner_module, "train", lambda config, run_dir, **kw: real_train(
        config, run_dir, **kw, on_eval=lambda *a: signal.raise_signal(signal.SIGINT)))
    code, out, err = cli(capsys, "sweep", "lr", "--lrs", "0.01,0.1", *TINY_ARGS, "--out", str(tmp_path / "exp"))
    assert code == 130 and "run the same command again" in err
    assert "interrupted" in out and "1 not run" in out


def test_a_raising_trial_is_a_row_and_the_rest_go_on(tmp_path, monkeypatch, untrivial):
    real_train = runner_module.train

    def flaky_train(config, run_dir, **kwargs):
        if config.lr == 1e-3:
            raise RuntimeError("out of memory, pretend")
        return real_train(config, run_dir, **kwargs)

    monkeypatch.setattr(runner_module, "train", flaky_train)
    exp = lr_sweep(tiny(), [1e-3, 1e-2], seeds=[0])
    result = run_experiment(exp, tmp_path / "exp")
    assert [r.status for r in result.outcome.results] == [FAILED, "completed"]
    assert "RuntimeError: out of memory, pretend" in result.outcome.results[0].error
    assert result.failed == 1 and result.best is None  # one seed: no "best" is claimed
    assert best_group(result.ranked, min_seeds=1).label == "lr=0.01"
    assert read_csv(tmp_path / "exp" / "results.csv")[0]["status"] == FAILED


def test_a_run_of_another_configuration_is_refused_before_any_work(tmp_path):
    run_trials([Trial("x", tiny(), 0)], tmp_path / "exp")
    mtime = (tmp_path / "exp" / "runs" / "x-seed0" / "summary.json").stat().st_mtime_ns
    with pytest.raises(ValueError, match="different configuration: batch_size 2"):
        run_trials([Trial("y", tiny(), 0), Trial("x", tiny(batch_size=3), 0)], tmp_path / "exp")
    assert not (tmp_path / "exp" / "runs" / "y-seed0").exists()
    assert (tmp_path / "exp" / "runs" / "x-seed0" / "summary.json").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="share the id"):
        run_trials([Trial("x", tiny(), 0), Trial("x", tiny(lr=0.1), 0)], tmp_path / "exp2")


def test_jobs_run_trials_in_parallel_processes_with_divided_threads(tmp_path):
    trials = [Trial("p", tiny(), 0), Trial("q", tiny(), 1)]
    outcome = run_trials(trials, tmp_path / "exp", jobs=2)
    assert [r.status for r in outcome.results] == ["completed", "completed"]
    threads = max(1, available_cores() // 2)
    for t in trials:
        config = json.loads((tmp_path / "exp" / "runs" / t.trial_id / "config.json").read_text())
        assert config["threads"] == threads
    # Same results as in this process: parallelism changes nothing but the wall time.
    serial = run_trials([replace(trials[0], label="s")], tmp_path / "exp")
    assert serial.results[0].summary["val"]["iou"] == pytest.approx(outcome.results[0].summary["val"]["iou"])


# ------------------------------------------------------------------------------ commands
def test_compare_optimizers_with_auto_lrs_writes_the_whole_folder(capsys, tmp_path, untrivial):
    out = tmp_path / "cmp"
    code, stdout, err = cli(capsys, "compare", "optimizers", "--optimizers", "sgd,adam", "--lrs", "auto",
                            "--tune-lrs", "1e-3,1e-1", "--seeds", "2", *TINY_ARGS, "--out", str(out))
    assert code == 0, err
    assert "chosen: sgd lr=" in stdout
    verdict_line = next(line for line in stdout.splitlines() if line.startswith(("best: ", "no best: ")))
    assert f"**{verdict_line}**" in (out / "summary.md").read_text()  # the same words in both
    tuning_summary = (out / "lr-tuning" / "summary.md").read_text()
    assert "| value | chosen lr |" in tuning_summary and "not a claim that it is the best" in tuning_summary
    assert "Not claimed: every setting has one completed seed" not in tuning_summary
    rows = read_csv(out / "results.csv")
    assert [(r["label"], r["seed"]) for r in rows] == [("sgd", "0"), ("sgd", "1"), ("adam", "0"), ("adam", "1")]
    assert {"optimizer", "lr"} <= set(rows[0])
    tuning = read_csv(out / "lr-tuning" / "results.csv")
    assert len(tuning) == 4 and {r["lr"] for r in tuning} == {"0.001", "0.1"}
    # The tuning runs are shorter and scored on another held-out set.
    config = json.loads((out / "lr-tuning" / "runs" / "sgd_lr=0.001-seed0" / "config.json").read_text())
    assert config["iterations"] == 1 and config["val_seed"] == TrainConfig().val_seed + 1
    summary = (out / "summary.md").read_text()
    assert "texseg compare optimizers --optimizers sgd,adam --lrs auto" in summary
    assert "## Learning rates" in summary and "| adam |" in summary
    # One HTML page for the whole experiment (its 8 trials and the lr tuning's 4 get none), two result files.
    assert [p.relative_to(out).as_posix() for p in out.rglob("report.html")] == ["report.html"]
    assert (out / "result.json").is_file() and (out / "lr-tuning" / "result.json").is_file()
    code, stdout, _ = cli(capsys, "compare", "optimizers", "--optimizers", "sgd,adam", "--lrs", "auto",
                          "--tune-lrs", "1e-3,1e-1", "--seeds", "2", *TINY_ARGS, "--out", str(out))
    assert code == 0 and "(new)" not in stdout and stdout.count("(skipped)") == 8


def test_compare_option_and_lr_range_and_difficulty_commands(capsys, tmp_path):
    code, _, err = cli(capsys, "compare", "option", "batch-size", "--values", "2,3", "--seeds", "1", "--lrs", "0.01",
                       *TINY_ARGS[:-3], "--quiet", "--out", str(tmp_path / "bs"))
    assert code == 0, err
    assert [r["batch_size"] for r in read_csv(tmp_path / "bs" / "results.csv")] == ["2", "3"]

    range_args = ["--image-size", "32", "--model", "cnn", "--model-arg", "num_channels=4", "--batch-size", "2"]
    code, out, err = cli(capsys, "sweep", "lr-range", *range_args, "--iterations", "20", "--quiet",
                         "--out", str(tmp_path / "range"))
    assert code == 0, err
    assert "suggested lr" in out
    assert 1 <= len(read_csv(tmp_path / "range" / "results.csv")) <= 20
    assert (tmp_path / "range" / "lr-range.png").is_file()

    run = train(tiny(), tmp_path / "model", progress=False).run_dir
    code, out, err = cli(capsys, "difficulty", "--sigma1", "0.2,1", "--sigma2", "1.2,5", "--model-dir", str(run),
                         "--count", "4", "--out", str(tmp_path / "grid"))
    assert code == 0, err
    rows = read_csv(tmp_path / "grid" / "results.csv")
    assert [(r["sigma1"], r["sigma2"]) for r in rows] == [("0.2", "1.2"), ("0.2", "5"), ("1", "1.2"), ("1", "5")]
    for name in ("heatmap.png", "scenes.png", "summary.md"):
        assert (tmp_path / "grid" / name).is_file()

    code, out, err = cli(capsys, "difficulty", "--sigma1", "0.2", "--sigma2", "1.2,5", *TINY_ARGS,
                         "--out", str(tmp_path / "cells"))
    assert code == 0, err
    assert len(read_csv(tmp_path / "cells" / "results.csv")) == 2
    assert "## Held-out IoU per cell" in (tmp_path / "cells" / "summary.md").read_text()


@pytest.mark.parametrize("args, needle", [
    (["sweep", "lr", "--lrs", "0.1,fast"], "--lrs must be comma-separated numbers"),
    (["sweep", "lr", "--lrs", "0.1,-1"], "lrs must be a finite number > 0"),
    (["sweep", "lr", "--lrs", "0.1", "--lr", "0.1"], "No such option '--lr'"),
    (["sweep", "lr", "--lrs", "0.1", "--seeds", "0"], "seeds must be an integer"),
    (["sweep", "lr", "--lrs", "0.1", "--jobs", "0"], "jobs must be an integer"),
    (["compare", "optimizers", "--optimizers", "sgd,nadam"], "optimizer must be one of"),
    (["compare", "optimizers", "--optimizers", "sgd,adam", "--lrs", "sgd=0.1"], "--lrs gives no learning rate"),
    (["compare", "optimizers", "--optimizers", "sgd", "--lrs", "rmsprop=0.1"], "--lrs names 'rmsprop'"),
    (["compare", "optimizers", "--optimizers", "sgd", "--lrs", "auto", "--tune-fraction", "2"], "--tune-fraction"),
    (["compare", "option", "seed", "--values", "1,2"], "option seed cannot be compared"),
    (["compare", "option", "colour", "--values", "1,2"], "NAME must be a training option"),
    (["compare", "option", "batch-size", "--values", "2,x"], "--values: batch_size takes int values"),
    (["compare", "option", "batch-size", "--values", "2,4", "--batch-size", "3"], "--batch-size: is what"),
    (["compare", "models", "--models", "cnn,cnn"], "--models lists a value twice"),
    (["difficulty", "--sigma1", "0.2", "--sigma2", "x"], "--sigma2 must be comma-separated numbers"),
    (["difficulty", "--sigma1", "0.2", "--sigma2", "1", "--count", "3"], "only with --model-dir"),
    (["difficulty", "--sigma1", "0.2", "--sigma2", "1", "--model-dir", "nowhere", "--lr", "1"], "--lr: nothing"),
    (["sweep", "lr-range", "--min-lr", "1", "--max-lr", "0.1"], "--max-lr must be larger"),
])
def test_bad_input_is_one_line(capsys, tmp_path, args, needle):
    code, out, err = cli(capsys, *args, "--out", str(tmp_path / "x"))
    assert code != 0
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "x" / "runs").exists()


def test_option_values_and_lr_maps_parse_to_config_types():
    base = TrainConfig()
    assert [parse_value("batch_size", t) for t in ["2", " 8"]] == [2, 8]
    assert [parse_value("nesterov", t) for t in ["true", "no"]] == [True, False]
    assert check_compared_values("sigma", [parse_value("sigma", t) for t in ["none", "12.5"]], base) == [None, 12.5]
    assert parse_lrs("1e-3", ["sgd", "adam"]) == {"sgd": 1e-3, "adam": 1e-3}
    assert parse_lrs("sgd=0.1,adam=1e-3", ["sgd", "adam"]) == {"sgd": 0.1, "adam": 1e-3}
    assert parse_lrs("auto", ["sgd"]) == "auto"


def test_library_errors_name_fields_and_the_cli_names_flags(capsys, tmp_path):
    """One boundary: the library speaks of fields, the CLI maps them to its flags in one place."""
    from texseg.experiments.compare import ComparisonSettings, run_comparison

    with pytest.raises(ValueError, match=r"^tune_fraction must be in \(0, 1\]"):
        run_comparison(tiny(), "optimizer", ["sgd"], tmp_path / "x",
                       ComparisonSettings(lrs="auto", tune=TuneSettings(tune_fraction=2.0)))
    with pytest.raises(ValueError, match="^lrs names 'rmsprop'"):
        run_comparison(tiny(), "optimizer", ["sgd"], tmp_path / "x", ComparisonSettings(lrs={"rmsprop": 0.1}))
    code, _, err = cli(capsys, "compare", "optimizers", "--optimizers", "sgd", "--lrs", "rmsprop=0.1",
                       "--out", str(tmp_path / "y"))
    assert code == 2 and err.startswith("texseg: error: --lrs names 'rmsprop'"), err
    code, _, err = cli(capsys, "train", "--time-budget", "-1")
    assert code == 2 and "--time-budget must be a finite number > 0" in err, err


def test_intervals_of_bounded_metrics_stay_in_0_1_and_one_seed_claims_nothing():
    wild = mean_ci([0.065, 0.0, 0.98], bounded=True)  # a collapsed seed among good ones
    assert 0.0 <= wild.low <= wild.mean <= wild.high <= 1.0
    assert wild.format(2).startswith("0.35 [") and "±" not in wild.format(2)
    unbounded = mean_ci([0.065, 0.0, 0.98])
    assert unbounded.low < 0 or unbounded.high > 1  # what the t-interval alone would claim
    one = mean_ci([0.9], bounded=True)
    assert one.format() == "0.900 (n=1)" and not one.overlaps(mean_ci([0.1, 0.2], bounded=True))


def test_no_best_is_claimed_from_one_seed(tmp_path):
    from texseg.experiments.report import best_group, group_stats, rank

    rows = [{"label": f"lr={lr}", "lr": lr, "status": "completed", "val_iou": iou, "train_seconds": 1.0,
             "iterations": 2}
            for lr, iou in ((0.1, 0.9), (1.0, 0.5))]
    ranked = rank(group_stats(rows, ("lr",)), "iou")
    assert best_group(ranked, "iou") is None
    assert best_group(ranked, "iou", min_seeds=1).values["lr"] == 0.1


def test_comparisons_tune_each_values_lr_unless_told_and_warn_about_a_shared_lr(capsys, tmp_path, untrivial):
    args = ["compare", "optimizers", "--optimizers", "sgd,adam", "--seeds", "1", *TINY_ARGS]
    code, out, err = cli(capsys, *args, "--tune-lrs", "0.01,0.1", "--out", str(tmp_path / "auto"))
    assert code == 0 and "choosing a learning rate per value" in out, err
    assert (tmp_path / "auto" / "lr-tuning" / "summary.md").is_file()
    code, out, err = cli(capsys, *args, "--lr", "0.05", "--out", str(tmp_path / "shared"))
    assert code == 0 and "warning: every optimizer trains at --lr 0.05" in err
    assert "not tuned per value" in (tmp_path / "shared" / "summary.md").read_text()


def test_jobs_auto_uses_every_core_within_memory(tmp_path, monkeypatch):
    from texseg import workers

    monkeypatch.setattr(workers, "available_cores", lambda: 4)
    assert workers.auto_jobs(10**6, 10) == 4  # one trial per core
    assert workers.auto_jobs(10**6, 3) == 3  # no more than there are trials
    assert workers.auto_jobs(10**15, 10) == 1  # what does not fit runs alone
    outcome = run_trials([Trial("a", tiny(), 0), Trial("b", tiny(), 0)], tmp_path / "exp", jobs="auto")
    assert [r.status for r in outcome.results] == ["completed", "completed"]


def test_difficulty_maps_mark_label_swapped_cells(tmp_path):
    """A model that separates fine from coarse texture, asked about swapped widths: 'swapped', not 'failed'."""
    import torch.nn.functional as F

    from texseg.checkpoint import save_model
    from texseg.data import SceneSpec
    from texseg.experiments.difficulty import evaluate_grid, grid_table, rows_to_grid
    from texseg.models import registry
    from texseg.models.base import SegmentationModel

    class FineTexture(SegmentationModel):
        """Logit of 'fine texture here' from the local energy of a Laplacian (no training needed)."""

        def __init__(self, *, num_classes=1, in_channels=1):
            super().__init__(num_classes=num_classes, in_channels=in_channels)
            self.scale = torch.nn.Parameter(torch.tensor(1.0))

        def logits(self, x):
            lap = F.conv2d(x, torch.tensor([[[[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]]]), padding=1)
            energy = F.avg_pool2d(lap**2, 9, stride=1, padding=4)
            return self.scale * (energy.log() - energy.log().mean(dim=(-2, -1), keepdim=True))

    registry._REGISTRY["fine-texture-test"] = registry.ModelSpec("fine-texture-test", "test", None, FineTexture)
    try:
        run = tmp_path / "run"
        run.mkdir()
        scene = SceneSpec(64, 12.8, (0.2, 1.2))
        save_model(FineTexture(), run, name="fine-texture-test", kwargs={}, num_regions=2, scene=scene.to_dict())
        s1, s2 = [0.2, 1.2], [1.2, 0.2]
        _, rows = evaluate_grid(run, s1, s2, count=8)
        trained_way, swapped_way = rows[0], rows[3]  # (0.2, 1.2) as trained; (1.2, 0.2) the widths swapped
        assert trained_way["iou"] > 0.5 and not trained_way["swapped"]
        assert swapped_way["iou"] < 0.3 and swapped_way["matched_iou"] > 0.5 and swapped_way["swapped"]
        table = grid_table(rows_to_grid(rows, s1, s2), s1, s2, swapped=rows_to_grid(rows, s1, s2, "swapped") > 0,
                           matched=rows_to_grid(rows, s1, s2, "matched_iou"))
        assert table.count("swapped") == 1
    finally:
        del registry._REGISTRY["fine-texture-test"]


def test_trials_draw_no_figures_of_their_own_unless_asked(tmp_path):
    """Per-trial pictures and report.html cost more than an 8-s trial trains (issue #20): off by default."""
    from texseg.cli.experiments import base_config

    assert base_config(None, {}).figures is False
    assert base_config(None, {"figures": True}).figures is True
    path = tmp_path / "c.json"
    path.write_text('{"figures": true}')
    assert base_config(str(path), {}).figures is True


# ------------------------------------------------------------------ verdicts (issue 23)
def _rows(groups: dict[str, list[float]], warning: str = "", steps: int = 200) -> list[dict]:
    return [{"label": label, "lr": i, "status": "completed", "val_iou": v, "train_seconds": 2.0,
             "iterations": steps, "warning": warning} for i, (label, vs) in enumerate(groups.items()) for v in vs]


def test_best_is_claimed_only_when_the_intervals_resolve_it():
    from texseg.experiments.report import group_stats, rank, verdict

    overlapping = verdict(rank(group_stats(_rows({"sgd": [0.2, 0.5], "adam": [0.1, 0.6]}), ("lr",))))
    assert overlapping.best is not None and not overlapping.resolved
    assert overlapping.headline.startswith("no best: ") and "not resolved" in overlapping.headline
    clear = verdict(rank(group_stats(_rows({"adam": [0.90, 0.91, 0.92], "sgd": [0.40, 0.41, 0.42]}), ("lr",))))
    assert clear.resolved and clear.headline.startswith("best: adam (iou 0.9100")
    one = verdict(rank(group_stats(_rows({"adam": [0.9], "sgd": [0.4]}), ("lr",))))
    assert one.best is None and one.headline.startswith("no best claimed")


def test_trivial_runs_are_never_chosen_and_an_all_trivial_ranking_says_so():
    from texseg.experiments.report import best_group, group_stats, rank, verdict

    short = "only 42 training step(s): too few for its scores to mean anything"
    ranked = rank(group_stats(_rows({"sgd": [0.6, 0.62], "adam": [0.3, 0.31]}, warning=short, steps=42), ("lr",)))
    assert best_group(ranked) is None and best_group(ranked, min_seeds=1) is None
    v = verdict(ranked)
    assert v.all_trivial and v.best is None
    assert v.headline.startswith("no verdict: every trial is trivial")
    assert "at least 50 training steps (these took 42, about 2 s per run" in v.headline
    # One trivial setting among learnt ones: it is left out, and the headline says so.
    rows = _rows({"adam": [0.5, 0.52]}) + _rows({"sgd": [0.9, 0.91]}, warning=short)
    v = verdict(rank(group_stats(rows, ("lr",))))
    assert v.best.label == "adam" and "trivial runs not considered: sgd" in v.headline


def test_summary_says_learnt_something_only_when_every_trial_beats_one_region_everywhere(tmp_path):
    from texseg.experiments.report import TrialRecord, _failures_section

    good = TrialRecord("a-seed0", "a", 0, "completed", "", "new", "runs/a-seed0", [], {"iou": 0.8, "trivial_iou": 0.3})
    flat = TrialRecord("b-seed0", "b", 0, "completed", "", "new", "runs/b-seed0", [], {"iou": 0.3, "trivial_iou": 0.3})
    assert "None: every trial completed and learnt something" in _failures_section([good], False)
    text = _failures_section([good, flat], False)
    assert "learnt something" not in text and "`b-seed0`" in text and "does not beat one region everywhere" in text


def test_lr_tuning_refuses_runs_too_short_to_score_before_training(capsys, tmp_path):
    out = tmp_path / "cmp"
    i = TINY_ARGS.index("--iterations")
    args = TINY_ARGS[:i] + TINY_ARGS[i + 2:]
    code, stdout, err = cli(capsys, "compare", "optimizers", "--optimizers", "sgd,adam", "--iterations", "15",
                            "--seeds", "2", *args, "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--iterations: the learning-rate tuning runs would train 4 step(s)" in err
    assert "--iterations 200 or more" in err and "--tune-fraction" in err and "--lrs" in err
    assert not (out / "lr-tuning" / "runs").exists()


def test_lr_tuning_stops_when_every_candidate_is_trivial(capsys, tmp_path, monkeypatch):
    from texseg.training import engine

    monkeypatch.setattr(engine, "MIN_STEPS", 10**6)  # every run is too short, whatever this machine's speed
    out = tmp_path / "cmp"
    i = TINY_ARGS.index("--iterations")
    args = TINY_ARGS[:i] + TINY_ARGS[i + 2:]
    code, stdout, err = cli(capsys, "compare", "optimizers", "--optimizers", "sgd,adam", "--tune-lrs", "0.01,0.1",
                            "--time-budget", "0.4", "--seeds", "2", *args, "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "learning-rate tuning for sgd: every candidate gave a trivial model" in err
    assert "the tuning runs get 0.25 of it" in err and "--lrs" in err
    assert "chosen:" not in stdout and not (out / "results.csv").exists()  # no comparison from those picks
    tuning = (out / "lr-tuning" / "summary.md").read_text()
    assert "**no verdict: every trial is trivial" in tuning


# ------------------------------------------------------- typed results and result.json (issue 21)
def test_run_comparison_returns_a_typed_result_that_round_trips_through_result_json(tmp_path, untrivial):
    from texseg.experiments import (
        ComparisonResult,
        ComparisonSettings,
        GroupStats,
        Interval,
        TrialRecord,
        read_experiment_result,
        run_comparison,
    )

    out = tmp_path / "cmp"
    got = run_comparison(tiny(), "optimizer", ["sgd", "adam"], out,
                         ComparisonSettings(seeds=2, lrs={"sgd": 0.1, "adam": 0.01}, command="texseg compare ..."))
    assert isinstance(got, ComparisonResult) and got.tuning is None and got.lrs == {"sgd": 0.1, "adam": 0.01}
    assert [(t.label, t.seed, t.status) for t in got.trials] == [("sgd", 0, "completed"), ("sgd", 1, "completed"),
                                                                 ("adam", 0, "completed"), ("adam", 1, "completed")]
    assert all(isinstance(t, TrialRecord) and t.iterations == 4 and t.train_seconds > 0 and "iou" in t.val
               for t in got.trials)
    assert all(isinstance(g, GroupStats) and isinstance(g.metrics["iou"], Interval) and g.metrics["iou"].n == 2
               for g in got.ranked)
    assert {g.label for g in got.ranked} == {"sgd", "adam"}
    data = json.loads((out / "result.json").read_text())  # strict JSON: a schema version, no NaN
    assert data["schema_version"] == 1 and data["kind"] == "experiment"
    assert data["verdict"] == got.result.verdict.headline
    back = read_experiment_result(out)
    assert back == got.result  # every field: trials, rows, the statistics with their intervals, the config
    assert back.verdict == got.result.verdict and back.best == got.best


def test_summary_md_is_rendered_from_result_json_alone(tmp_path, untrivial):
    from texseg.experiments import render_experiment_summary

    exp = lr_sweep(tiny(), [1e-2, 1e-1], seeds=[0, 1], command="texseg sweep lr ...")
    result = run_experiment(exp, tmp_path / "exp")
    path = write_experiment_summary(exp, result, sections=["## Extra\n\nA caller's section."])
    before = path.read_bytes()
    path.unlink()
    for run in (tmp_path / "exp" / "runs").iterdir():  # nothing but result.json is read
        shutil.rmtree(run)
    (tmp_path / "exp" / "results.csv").unlink()
    assert render_experiment_summary(tmp_path / "exp").read_bytes() == before
    assert b"## Extra" in before and b"result.json" in before


def test_report_html_of_an_experiment_reads_result_json_not_markdown(tmp_path, untrivial):
    from texseg.report import write_report

    exp = lr_sweep(tiny(), [1e-2, 1e-1], seeds=[0, 1], command="texseg sweep lr --lrs 0.01,0.1")
    result = run_experiment(exp, tmp_path / "exp")
    write_experiment_summary(exp, result)
    (tmp_path / "exp" / "summary.md").write_text("# Not this title\n\nnor this text\n")  # never parsed back
    html = write_report(tmp_path / "exp").read_text(encoding="utf-8")
    assert "Learning-rate sweep" in html and "Not this title" not in html and "nor this text" not in html
    assert "texseg sweep lr --lrs 0.01,0.1" in html and result.verdict.headline in html


def test_a_short_run_checkpoints_once_before_the_end_on_the_default_cadence(monkeypatch, tmp_path):
    """Interim checkpoints (fsynced weights + resume state) are rationed by wall time: a trial of a few
    seconds is not half bookkeeping (issue 20); an explicit eval_every still checkpoints every evaluation."""
    from texseg.training import engine as engine_module
    from texseg.training import loop

    saved = []
    real = loop.save_resume_state
    monkeypatch.setattr(loop, "save_resume_state", lambda *a, **k: (saved.append(1), real(*a, **k))[1])
    monkeypatch.setattr(engine_module, "CHECKPOINT_SECONDS", 1e9)  # however slow the machine
    monkeypatch.setattr(engine_module, "EVAL_SHARE", 0.9)  # every due evaluation is affordable: many of them
    result = texseg.train(tiny(iterations=40, eval_every=None), tmp_path / "a", progress=False)
    assert result.status == "completed" and len(read_csv(tmp_path / "a" / "metrics.csv")) >= 10
    assert len(saved) == 2  # the start's and the end's
    saved.clear()
    texseg.train(tiny(iterations=8, eval_every=2), tmp_path / "b", progress=False)
    assert len(saved) == len(read_csv(tmp_path / "b" / "metrics.csv")) + 2 == 6  # and every evaluation's


# ------------------------------------------------- per-trial overhead of lr tuning (issue 20)
def test_lr_tuning_runs_are_scored_once_at_their_end_and_write_no_figures(tmp_path, untrivial):
    """A tuning run of a couple of seconds is mostly training: one evaluation (the final one, on its whole
    held-out set: what the choice is made on), no interim checkpoint, no figures or report, even when the
    comparison's own runs ask for figures and evaluate every 2 steps."""
    from texseg.experiments import ComparisonSettings, run_comparison

    out = tmp_path / "cmp"
    got = run_comparison(tiny(figures=True, keep_best=True), "optimizer", ["sgd", "adam"], out,
                         ComparisonSettings(seeds=1, tune=TuneSettings(tune_lrs=(1e-2, 1e-1), tune_fraction=1.0)))
    assert got.lrs is not None and len(got.tuning.trials) == 4
    for run in (out / "lr-tuning" / "runs").iterdir():
        rows = read_metrics(run)
        assert [int(r["step"]) for r in rows] == [4]  # the final evaluation only
        assert json.loads((run / "summary.json").read_text())["val_size"] == 4  # every held-out image
        config = json.loads((run / "config.json").read_text())
        assert config["evals"] == 1 and config["eval_every"] is None and config["val_seed"] == tiny().val_seed + 1
        written = {p.name for p in run.iterdir()}
        assert not written & {"samples.png", "curves.png", "report.html", "best", "resume.pt"}, written
    compared = next((out / "runs").iterdir())  # the comparison's runs keep what they asked for
    assert len(read_metrics(compared)) == 2 and (compared / "curves.png").is_file()


def test_a_serial_experiment_measures_the_machines_load_once_not_before_every_trial(tmp_path, monkeypatch):
    """Counting the busy cores takes 80 ms, 4% of a 2-s tuning run: trials one after another reuse a
    measurement for 30 s (texseg.threads.ThreadChooser)."""
    from texseg import threads

    calls = []
    monkeypatch.setattr(threads, "busy_cores", lambda *a, **k: (calls.append(1), 0.0)[1])
    outcome = run_trials([Trial("a", tiny(), 0), Trial("b", tiny(), 0), Trial("c", tiny(), 0)], tmp_path / "exp")
    assert [r.status for r in outcome.results] == ["completed"] * 3
    assert len(calls) == 1
    clock = iter([0.0, 10.0, 31.0, 32.0])
    choose = threads.ThreadChooser(max_age=30.0, clock=lambda: next(clock))
    monkeypatch.setattr(threads, "busy_cores", lambda *a, **k: (calls.append(1), 4.0)[1])
    assert [choose(2) for _ in range(4)] == [1, 1, 1, 1] and choose.measurements == 2  # again after 30 s


def test_evals_sets_how_often_a_run_is_scored_and_does_not_change_a_trials_identity(tmp_path, monkeypatch):
    from texseg.training import engine as engine_module

    monkeypatch.setattr(engine_module, "EVAL_SHARE", 0.9)  # every due evaluation is affordable
    train(tiny(iterations=12, eval_every=None, evals=4), tmp_path / "four", progress=False)
    assert [int(r["step"]) for r in read_metrics(tmp_path / "four")] == [3, 6, 9, 12]
    train(tiny(iterations=12, eval_every=None, evals=1), tmp_path / "one", progress=False)
    assert [int(r["step"]) for r in read_metrics(tmp_path / "one")] == [12]
    with pytest.raises(ValueError, match="evals"):
        tiny(evals=0).validate()
    # A run of an older texseg (no `evals` in its config.json) is the same trial: skipped, not refused.
    exp = tmp_path / "exp"
    run_trials([Trial("a", tiny(), 0)], exp)
    config = exp / "runs" / "a-seed0" / "config.json"
    written = json.loads(config.read_text())
    del written["evals"]
    config.write_text(json.dumps(written))
    assert [r.action for r in run_trials([Trial("a", tiny(evals=1), 0)], exp).results] == ["skipped"]
