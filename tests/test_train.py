"""The training loop, run directories, checkpoints and schedules."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file

import texseg
from texseg.errors import CheckpointError, RunDirError
from texseg.training.config import TrainConfig
from texseg.training.loop import train
from texseg.training.optim import lr_factor
from texseg.training.rundir import RunDir, read_metrics


# One thread, pinned: texseg chooses the cores other programs leave free, and sums split over another number of
# threads differ in the last bit, so runs compared bit for bit must not choose by the load of the moment.
def tiny(**kw) -> TrainConfig:
    base = dict(image_size=32, model="cnn", model_kwargs={"num_channels": 4}, iterations=6, time_budget=None,
                eval_every=3, val_size=4, batch_size=2, lr=1e-2, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_run_directory_contents(tmp_path):
    result = train(tiny(), tmp_path / "run", progress=False)
    run = result.run_dir
    assert result.status == "completed"
    for name in ("config.json", "model.json", "model.safetensors", "metrics.csv", "summary.json",
                 "samples.png", "curves.png"):
        assert (run / name).is_file(), name
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [3, 6]
    assert all(0 <= r["val_iou"] <= 1 and r["train_seconds"] > 0 for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 6 and summary["status"] == "completed"
    assert summary["val"]["iou"] == pytest.approx(rows[-1]["val_iou"], abs=1e-5)
    # config.json is what ran: the given settings plus what the device filled in (and said so).
    assert summary["defaults"]["filled"] == {"compile": False}
    # ... and what the machine decided (precision, device type, loss, threads): a pinned config.
    pinned = tiny(compile=False, precision=summary["precision"], device="cpu", loss="bce",
                  threads=torch.get_num_threads())
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == pinned


def test_a_pinned_config_says_what_this_machine_cannot_honour(tmp_path, monkeypatch):
    """bf16 without a fast bf16 path, or more threads than cores: the run trains and says so."""
    import texseg.device
    import texseg.training.defaults as defaults
    from texseg.training.engine import build_trainer

    monkeypatch.setattr(defaults, "fast_bf16", lambda device: False)
    monkeypatch.setattr(texseg.device, "fast_bf16", lambda device: False)
    assert build_trainer(tiny()).config.precision == "fp32"  # "auto" resolves to what this machine has
    threads = torch.get_num_threads()
    try:
        r = train(tiny(precision="bf16", threads=4096 // 4), tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    notes = " ".join(r.summary["notes"])
    assert "precision bf16 has no fast path" in notes and "threads 1024 is more than the" in notes
    assert r.summary["precision"] == "bf16"  # honoured (emulated): the same arithmetic as where it was pinned
    with pytest.raises(ValueError, match="CUDA is not available"):
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        build_trainer(tiny(device="cuda"))


def test_a_run_begun_before_configs_were_pinned_still_resumes(tmp_path):
    """config.json and resume.pt of an older texseg say ``precision: auto``: resuming pins them and goes on."""
    import signal

    from texseg.training.loop import resume_training

    def stop(step, seconds, metrics):
        signal.raise_signal(signal.SIGINT)
        return False

    r = train(tiny(iterations=6), tmp_path / "run", progress=False, on_eval=stop)
    assert r.status == "interrupted"
    old = {**json.loads((r.run_dir / "config.json").read_text()), "precision": "auto", "device": "auto",
           "loss": None, "threads": None}
    (r.run_dir / "config.json").write_text(json.dumps(old))
    raw = torch.load(r.run_dir / "resume.pt", weights_only=True)
    raw["config"] = old  # as the older texseg saved it
    torch.save(raw, r.run_dir / "resume.pt")
    done = resume_training(r.run_dir, progress=False)
    assert done.status == "completed" and done.summary["iterations"] == 6


def test_default_evaluations_take_a_small_share_of_the_run(tmp_path, monkeypatch):
    """Interim evaluations score a subset and wait while evaluation exceeds 10% of the wall time;
    the last one scores the whole held-out set."""
    import time

    import texseg.training.loop as loop

    scored, real = [], loop.evaluate

    def slow_evaluate(model, images, *args, **kw):
        scored.append(len(images))
        time.sleep(0.3)
        return real(model, images, *args, **kw)

    monkeypatch.setattr(loop, "evaluate", slow_evaluate)
    r = train(tiny(iterations=None, time_budget=3.0, eval_every=None, val_size=40), tmp_path / "run",
              progress=False)
    assert scored[-1] == 40 and set(scored[:-1]) <= {16}
    # Each evaluation took >= 0.3 s and starts only while the time spent so far is <= 1/9 of training.
    assert len(scored) - 1 <= 1 + r.summary["train_seconds"] / 9 / 0.3
    assert len(read_metrics(r.run_dir)) == len(scored)
    from texseg.training.engine import evaluation_affordable, expected_evaluation_seconds

    # Two 2-s steps so far: 16 images at batch 4 would take about 4 s, far over 10% of the run.
    expected = expected_evaluation_seconds(16, None, 2.0, 4)
    assert expected == 4.0 and not evaluation_affordable(tiny(eval_every=None), 0.0, 4.0, expected)
    assert evaluation_affordable(tiny(eval_every=None), 0.0, 40.0, expected_evaluation_seconds(16, 0.01, 2.0, 4))
    assert evaluation_affordable(tiny(eval_every=5), 100.0, 1.0, 10.0)  # an explicit cadence is honoured


def test_saved_model_reloads_and_predicts_like_the_trained_one(tmp_path):
    result = train(tiny(), tmp_path / "run", progress=False)
    model = texseg.load_model(result.run_dir)
    assert not model.training
    images, _ = texseg.generate_data(3, 32, 0.2, 1.2, 6.4, generator=torch.Generator().manual_seed(1))
    probs = texseg.predict(model, images)
    assert probs.shape == (3, 1, 32, 32) and probs.min() >= 0 and probs.max() <= 1
    # The reloaded weights reproduce the run's final validation metrics exactly.
    from texseg.data import generate, target_from_labels
    from texseg.evaluation import evaluate

    cfg = tiny()
    img, lab = generate(cfg.scene(), cfg.val_size, generator=torch.Generator().manual_seed(cfg.val_seed))
    metrics = evaluate(model, img, target_from_labels(lab, 2), 2)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert metrics["iou"] == pytest.approx(summary["val"]["iou"], abs=1e-9)


def test_same_seed_same_result_different_seed_different(tmp_path):
    a = train(tiny(), tmp_path / "a", progress=False)
    b = train(tiny(), tmp_path / "b", progress=False)
    c = train(tiny(seed=1), tmp_path / "c", progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]  # noqa: E731
    assert strip(read_metrics(a.run_dir)) == strip(read_metrics(b.run_dir))
    wa, wb = (load_file(r.run_dir / "model.safetensors") for r in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a.run_dir / "model.safetensors").read_bytes() == (b.run_dir / "model.safetensors").read_bytes()
    assert strip(read_metrics(a.run_dir)) != strip(read_metrics(c.run_dir))


def test_time_budget_stops_training_and_excludes_evaluation(tmp_path):
    result = train(tiny(iterations=None, time_budget=0.6, eval_every=1000), tmp_path / "run", progress=False)
    s = result.summary
    assert 0.6 <= s["train_seconds"] < 0.6 + 1.0
    assert s["iterations"] >= 1 and s["eval_seconds"] > 0


def test_training_learns_the_easy_task(tmp_path):
    """A real signal, not a stub: a small CNN beats chance clearly in a few seconds."""
    cfg = tiny(iterations=80, eval_every=80, val_size=16, batch_size=8, sigma1=0.2, sigma2=3.0, lr=1e-2,
               model_kwargs={"num_channels": 8})
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.summary["val"]["accuracy"] > 0.8


def test_three_regions_train_and_reload(tmp_path):
    result = train(tiny(regions=3, loss="ce", sigmas=[0.2, 1.0, 3.0]), tmp_path / "run", progress=False)
    assert "mean_iou" in result.summary["val"]
    model = texseg.load_model(result.run_dir)
    probs = texseg.predict(model, torch.rand(2, 1, 32, 32))
    assert probs.shape == (2, 3, 32, 32)
    assert torch.allclose(probs.sum(1), torch.ones(2, 32, 32), atol=1e-5)


@pytest.mark.parametrize("loss", ["mse", "bce", "dice", "bce+dice"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "rmsprop", "adam", "adamw"])
def test_every_loss_and_optimizer_runs(tmp_path, loss, optimizer):
    result = train(tiny(loss=loss, optimizer=optimizer, iterations=2, eval_every=2, lr=1e-3),
                   tmp_path / "run", progress=False)
    assert result.status == "completed"


def test_divergence_keeps_the_last_good_weights(tmp_path):
    cfg = tiny(optimizer="sgd", loss="mse", lr=1e12, iterations=50, eval_every=1, model="cnn")
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.status == "diverged"
    assert "at step" in result.summary["message"]
    model = texseg.load_model(result.run_dir)
    assert all(torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point())
    assert json.loads((result.run_dir / "summary.json").read_text())["status"] == "diverged"


def test_an_existing_run_is_never_overwritten(tmp_path):
    result = train(tiny(), tmp_path / "run", progress=False)
    before = {p.name: p.read_bytes() for p in result.run_dir.iterdir() if p.is_file()}
    with pytest.raises(RunDirError, match="already holds a run"):
        train(tiny(seed=3), tmp_path / "run", progress=False)
    after = {p.name: p.read_bytes() for p in result.run_dir.iterdir() if p.is_file()}
    assert before == after


def test_a_second_writer_is_locked_out(tmp_path):
    with RunDir(tmp_path / "run"):
        with pytest.raises(RunDirError, match="in use"):
            RunDir(tmp_path / "run")
    RunDir(tmp_path / "run").close()  # free again once the first closes


def test_seed_cnn_warns_and_is_evaluated_in_eval_mode(tmp_path):
    result = train(tiny(model="seed-cnn", model_kwargs={}), tmp_path / "run", progress=False)
    assert any("BatchNorm" in n for n in result.summary["notes"])


# ------------------------------------------------------------------ checkpoint files
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    return train(tiny(), tmp_path_factory.mktemp("saved") / "run", progress=False).run_dir


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        texseg.load_model(tmp_path)


def test_truncated_checkpoint(saved_run, tmp_path):
    run = shutil.copytree(saved_run, tmp_path / "r")
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="safetensors"):
        texseg.load_model(run)


def test_pickle_renamed_safetensors_is_refused_and_never_run(saved_run, tmp_path):
    run = shutil.copytree(saved_run, tmp_path / "r")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (run / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError):
        texseg.load_model(run)
    assert not marker.exists()


def test_checkpoint_of_another_architecture(saved_run, tmp_path):
    run = shutil.copytree(saved_run, tmp_path / "r")
    info = json.loads((run / "model.json").read_text())
    info["kwargs"]["num_channels"] = 8  # weights have 4 channels
    (run / "model.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="does not fit"):
        texseg.load_model(run)


def test_foreign_model_json(saved_run, tmp_path):
    run = shutil.copytree(saved_run, tmp_path / "r")
    (run / "model.json").write_text(json.dumps({"format": "texseg-model", "version": 1, "name": "resnet9000",
                                                "kwargs": {}, "num_regions": 2}))
    with pytest.raises(CheckpointError, match="resnet9000"):
        texseg.load_model(run)


# ------------------------------------------------------------------------- schedules
def test_schedules():
    assert lr_factor("constant", 0.7) == 1.0
    assert lr_factor("cosine", 0.0) == 1.0 and lr_factor("cosine", 1.0) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("cosine", 0.5) == pytest.approx(0.5)
    peak = max(range(101), key=lambda i: lr_factor("onecycle", i / 100))
    assert peak == 30 and lr_factor("onecycle", 0.0) == pytest.approx(1 / 25)
    assert lr_factor("constant", 0.05, warmup=0.1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor("linear", 0.5)


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "changes,name",
    [
        (dict(lr=-1.0), "lr"), (dict(lr=math.nan), "lr"), (dict(lr=math.inf), "lr"),
        (dict(batch_size=0), "batch_size"), (dict(iterations=0), "iterations"),
        (dict(time_budget=0.0), "time_budget"), (dict(time_budget=math.nan), "time_budget"),
        (dict(optimizer="lbfgs"), "optimizer"), (dict(schedule="step"), "schedule"),
        (dict(image_size=8), "image_size"), (dict(regions=1), "regions"),
        (dict(sigmas=[1.0]), "sigmas"), (dict(seed=987654321), "seed"),
        (dict(iterations=None, time_budget=None), "iterations"),
    ],
)
def test_bad_config_values_name_the_field(changes, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**changes).validate()


def test_config_files_refuse_unknown_keys_and_wrong_types(tmp_path):
    with pytest.raises(ValueError, match="lrr"):
        TrainConfig.from_dict({"lrr": 0.1})
    with pytest.raises(ValueError, match="lr"):
        TrainConfig.from_dict({"lr": "fast"})
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig.from_dict({"batch_size": 2.5})
    bad = tmp_path / "c.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        TrainConfig.from_json_file(bad)


def test_asking_for_iterations_drops_the_default_time_budget():
    assert TrainConfig.from_dict({"iterations": 5}).time_budget is None
    assert TrainConfig.from_dict({"iterations": 5, "time_budget": 2.0}).time_budget == 2.0


def test_unknown_model_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="unet"), warnings.catch_warnings():
        train(tiny(model="resnet"), tmp_path / "r", progress=False)


@pytest.mark.parametrize("name,momentum,expected", [("sgd", None, 0.0), ("momentum", None, 0.9),
                                                    ("sgd", 0.5, 0.5), ("rmsprop", None, 0.0),
                                                    ("rmsprop", 0.3, 0.3)])
def test_optimizer_momentum_defaults_follow_the_notebook(name, momentum, expected):
    from texseg.training.optim import create_optimizer

    opt = create_optimizer(torch.nn.Linear(2, 2), TrainConfig(optimizer=name, momentum=momentum))
    assert opt.param_groups[0]["momentum"] == expected


def test_nesterov_without_momentum_is_refused():
    from texseg.training.optim import create_optimizer

    with pytest.raises(ValueError, match="nesterov"):
        create_optimizer(torch.nn.Linear(2, 2), TrainConfig(optimizer="sgd", nesterov=True))


def test_sigmas_imply_the_number_of_regions_unless_given():
    assert TrainConfig.from_dict({"sigmas": [0.2, 1.0, 3.0]}).regions == 3
    with pytest.raises(ValueError, match="sigmas"):
        TrainConfig.from_dict({"sigmas": [0.2, 1.0, 3.0], "regions": 4}).validate()


def test_tensorboard_events_hold_the_scalars_and_the_samples(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(tiny(iterations=6, eval_every=2, tensorboard=True), tmp_path / "run", progress=False).run_dir
    events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    assert [e.step for e in events.Scalars("val/iou")] == [2, 4, 6]
    assert {"train/loss", "val/loss", "lr"} <= set(events.Tags()["scalars"])
    assert events.Tags()["images"] == ["samples"]


def test_evaluations_follow_the_budget_by_default(tmp_path):
    """At most about 20 points per run whatever its length (at 1/20 of the run or as soon after as 10% of
    the wall time allows, issue #20), the last step always; an explicit --eval-every gives every one."""
    from texseg.training.rundir import read_metrics

    run = train(tiny(iterations=40, eval_every=None), tmp_path / "run", progress=False).run_dir
    steps = [int(r["step"]) for r in read_metrics(run)]
    assert steps[-1] == 40 and len(steps) <= 20 and steps == sorted(set(steps)) and steps[0] >= 2
    run = train(tiny(iterations=40, eval_every=2), tmp_path / "every", progress=False).run_dir
    assert [int(r["step"]) for r in read_metrics(run)] == list(range(2, 41, 2))


def test_progress_off_a_terminal_is_plain_lines(tmp_path):
    import io

    from texseg.training.progress import Progress

    stream = io.StringIO()
    bar = Progress(100, 0, "it", stream=stream)
    for step in range(1, 101):
        bar.update(1, step)
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and 15 <= len(text.splitlines()) <= 21 and "step 100  100%" in text


def test_a_trivial_run_is_flagged_in_its_summary(tmp_path):
    """Too few steps, and a prediction that is one region everywhere: a warning, not a result."""
    r = train(tiny(iterations=3, eval_every=3, lr=1e-9), tmp_path / "run", progress=False)
    warnings = " ".join(r.summary["warnings"])
    assert "only 3 training step(s)" in warnings
    assert r.summary["val"]["trivial_iou"] <= r.summary["val"]["trivial_accuracy"]
    from texseg.training.engine import run_warnings

    assert run_warnings(500, {"majority_prediction": 0.995, "accuracy": 0.51})[0].startswith("trivial model")
    assert run_warnings(500, {"majority_prediction": 0.6, "accuracy": 0.97}) == []


def test_a_run_that_got_little_cpu_time_says_so(tmp_path, monkeypatch):
    """A busy machine: the CPU time received against wall time x threads, and a warning under 50%."""
    import time

    from texseg.training.engine import busy_machine_warning, cpu_share

    assert cpu_share(1.0, 2.0, 2) == 0.25 and cpu_share(1.0, 0.0, 2) is None
    assert busy_machine_warning(0.6, 2) is None
    assert "got 23% of 2 core(s)" in busy_machine_warning(0.23, 2)
    real = time.process_time
    monkeypatch.setattr(time, "process_time", lambda: real() / 1000)  # the process "gets" almost no CPU
    r = train(tiny(), tmp_path / "run", progress=False)
    summary = json.loads((r.run_dir / "summary.json").read_text())
    assert summary["cpu_share"] < 0.01
    assert any(w.startswith("busy machine: this run got 0% of") for w in summary["warnings"])
    assert "busy machine" in (r.run_dir / "report.html").read_text()


def test_a_finished_run_keeps_no_resume_state_and_can_seed_a_fine_tuning(tmp_path):
    first = train(tiny(iterations=4, eval_every=2), tmp_path / "a", progress=False)
    assert not (first.run_dir / "resume.pt").exists()
    tuned = train(tiny(iterations=2, eval_every=2, init_from=str(first.run_dir), keep_best=True), tmp_path / "b",
                  progress=False)
    assert tuned.status == "completed" and (tuned.run_dir / "best" / "model.safetensors").is_file()
    texseg.load_model(tuned.run_dir / "best")
    with pytest.raises(ValueError, match="init_from"):
        train(tiny(model="unet", model_kwargs={}, init_from=str(first.run_dir)), tmp_path / "c", progress=False)


def test_early_stopping_ends_a_run_that_stopped_improving(tmp_path):
    r = train(tiny(iterations=400, eval_every=1, lr=1e-9, early_stop=2), tmp_path / "run", progress=False)
    assert r.status == "completed" and "stopped early" in r.summary["message"]
    assert r.summary["iterations"] < 400


def test_eval_refuses_two_region_widths_for_a_k_region_model(tmp_path):
    from texseg.data import SceneSpec
    from texseg.training.config import override_scene

    k3 = SceneSpec(32, 6.4, (0.2, 0.8, 2.0))
    with pytest.raises(ValueError, match="sigma2 sets the widths of two-region scenes"):
        override_scene(k3, {"sigma2": 3.0})
    assert override_scene(k3, {"sigmas": [0.2, 1.0, 3.0]}).texture_sigmas == (0.2, 1.0, 3.0)
    assert override_scene(k3, {"image_size": 64}).texture_sigmas == k3.texture_sigmas


def _per_image_matched_iou(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> float:
    """The benchmark's score of ``model``: each image's labels matched on their own, mIoU averaged over images."""
    from texseg.evaluation import predict_labels
    from texseg.evaluation.region_metrics import region_metrics

    with torch.no_grad():
        pred = predict_labels(model(images))
    return sum(region_metrics(t.long().numpy(), p.numpy(), 2)["miou"] for p, t in zip(pred, targets)) / len(pred)


def test_label_mode_any_validation_matches_labels_per_image(tmp_path, capsys):
    """Keep-best, early stopping and search read a val IoU matched per image, and `texseg eval` agrees."""
    from conftest import run_main
    from texseg.evaluation import evaluate_on_scenes
    from texseg.training.engine import validation_set

    config = tiny(texture="mixed", iterations=4, eval_every=2, val_size=8)
    assert config.validate().labels == "any"
    result = train(config, tmp_path / "run", progress=False)
    model = texseg.load_model(result.run_dir)
    images, targets = validation_set(config, torch.device("cpu"))
    val = result.summary["val"]
    assert val["matched"] == 1.0
    assert val["iou"] == pytest.approx(_per_image_matched_iou(model, images, targets), abs=1e-9)
    assert read_metrics(result.run_dir)[-1]["val_iou"] == pytest.approx(val["iou"], abs=1e-5)
    # `texseg eval RUN` on such a run matches per image by default; the set-level variant only when asked.
    code, out, err = run_main(capsys, "eval", str(result.run_dir), "--count", "8", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["matching"] == "image" and shown["metrics"]["matched"] == 1.0
    expected = evaluate_on_scenes(model, config.scene(), 8, 2024, matching="image")
    assert shown["metrics"]["iou"] == pytest.approx(expected["iou"], abs=1e-9)
    code, out, _ = run_main(capsys, "eval", str(result.run_dir), "--count", "8", "--json", "--matching", "set")
    assert json.loads(out)["metrics"]["matched_set"] == 1.0
    assert json.loads(out)["metrics"]["iou"] <= shown["metrics"]["iou"] + 1e-9
    code, _, err = run_main(capsys, "eval", str(result.run_dir), "--matched", "--matching", "set")
    assert code == 2 and "--matched means --matching image" in err
    # A run with fixed labels is scored as it is.
    fixed = train(tiny(iterations=2, eval_every=2), tmp_path / "fixed", progress=False)
    assert "matched" not in fixed.summary["val"]
    code, out, _ = run_main(capsys, "eval", str(fixed.run_dir), "--count", "4", "--json")
    assert json.loads(out)["matching"] == "none"


def test_run_label_mode_reads_the_run_or_the_scene(tmp_path):
    from texseg.training.rundir import run_label_mode

    (tmp_path / "run" / "best").mkdir(parents=True)
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"label_mode": "any"}))
    assert run_label_mode(tmp_path / "run") == "any"
    assert run_label_mode(tmp_path / "run" / "best") == "any"  # keep_best's folder: the run above it
    assert run_label_mode(tmp_path / "run" / "model.safetensors") == "any"
    (tmp_path / "bare").mkdir()  # a model folder without a run: its scene decides
    assert run_label_mode(tmp_path / "bare", {"texture": "mixed"}) == "any"
    assert run_label_mode(tmp_path / "bare", {"texture": "gaussian"}) == "fixed"
    assert run_label_mode(tmp_path / "bare") == "fixed"


def test_runs_of_one_process_draw_a_shared_validation_set_once_and_each_gets_its_own_copy(monkeypatch):
    """An experiment's trials share their held-out set (issue 20): drawn once per process, copied per run."""
    from texseg.training import engine

    drawn = []
    real = engine.generate
    monkeypatch.setattr(engine, "generate", lambda *a, **k: (drawn.append(a[1]), real(*a, **k))[1])
    engine._cached_validation_set.cache_clear()
    config = TrainConfig(image_size=32, val_size=6, val_seed=12345)
    images, targets = engine.validation_set(config, torch.device("cpu"))
    images.zero_()  # a run may do what it likes with its copy
    again, targets2 = engine.validation_set(config, torch.device("cpu"))
    assert drawn == [6] and again.abs().sum() > 0 and torch.equal(targets, targets2)
    fresh = torch.Generator().manual_seed(12345)
    assert torch.equal(again, real(config.scene(), 6, generator=fresh)[0])  # the same set as drawn anew
    engine.validation_set(TrainConfig(image_size=32, val_size=6, val_seed=54321), torch.device("cpu"))
    assert drawn == [6, 6]  # another seed is another set
