"""The command line: outputs, reproducibility and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import run_main

TINY_TRAIN = ["train", "--image-size", "32", "--model", "cnn", "--model-arg", "num_channels=4", "--iterations", "4",
              "--eval-every", "2", "--val-size", "4", "--batch-size", "2", "--quiet"]


run = run_main


def test_models_lists_every_model_with_parameter_counts(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert "seed-cnn" in out and "13,681" in out and "unet" in out and "cnn" in out
    assert "BatchNorm" in out  # the seed-cnn warning


def test_generate_writes_a_picture(capsys, tmp_path):
    pic = tmp_path / "s.png"
    code, out, _ = run(capsys, "generate", "--image-size", "32", "--rows", "2", "--picture", str(pic))
    assert code == 0 and pic.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generate_export_is_reproducible_byte_for_byte(capsys, tmp_path):
    args = ["generate", "--image-size", "24", "--regions", "3", "--count", "5", "--seed", "7", "--quiet"]
    assert run(capsys, *args, "--out", str(tmp_path / "a"))[0] == 0
    assert run(capsys, *args, "--out", str(tmp_path / "b"))[0] == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 2 * 5 + 2  # pairs, manifest, preview
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["count"] == 5 and manifest["scene"]["image_size"] == 24
    assert len(manifest["scene"]["texture_sigmas"]) == 3
    import imageio.v3 as iio

    from texseg.data.folder import read_labels

    labels = read_labels(tmp_path / "a" / manifest["files"][0]["labels"])  # the exact label values
    assert labels.dtype.name == "uint8" and labels.shape == (24, 24) and labels.max() <= 2 and labels.min() == 0
    shown = iio.imread(tmp_path / "a" / manifest["files"][0]["labels"])  # what a viewer shows: colours
    assert shown.ndim == 3 and len({tuple(c) for c in shown.reshape(-1, shown.shape[-1])}) == len(set(labels.flat))


def test_train_then_eval(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, _ = run(capsys, *TINY_TRAIN, "--out", str(out_dir))
    assert code == 0, out
    assert "val iou" in out and "status: completed" in out
    code, out, _ = run(capsys, "eval", str(out_dir), "--count", "4", "--json")
    assert code == 0
    metrics = json.loads(out)["metrics"]
    assert 0 <= metrics["iou"] <= 1
    code, out, _ = run(capsys, "eval", str(out_dir), "--count", "4", "--sigma2", "3.0")
    assert code == 0 and "iou" in out and "0.2, 3" in out


def test_config_file_and_overrides(capsys, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"image_size": 32, "model": "cnn", "iterations": 2, "eval_every": 1, "val_size": 2,
                               "batch_size": 2, "lr": 0.5}))
    code, _, _ = run(capsys, "train", "--config", str(cfg), "--lr", "0.001", "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["lr"] == 0.001 and saved["image_size"] == 32 and saved["time_budget"] is None


BAD_TRAIN = [
    (["--lr", "-1"], "lr"),
    (["--lr", "nan"], "lr"),
    (["--lr", "abc"], "--lr"),
    (["--batch-size", "0"], "--batch-size must be an integer"),
    (["--iterations", "0"], "iterations"),
    (["--time-budget", "inf"], "--time-budget"),
    (["--model", "resnet"], "model"),
    (["--optimizer", "lbfgs"], "optimizer"),
    (["--loss", "hinge"], "loss"),
    (["--schedule", "step"], "schedule"),
    (["--device", "tpu"], "device"),
    (["--model-arg", "depth"], "KEY=VALUE"),
    (["--model-arg", "base_width=0"], "base_width"),
    (["--sigmas", "1,x"], "numbers"),
    (["--config", "/nonexistent/c.json"], "does not exist"),
]


@pytest.mark.parametrize("args,needle", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_train_input_is_one_line(capsys, tmp_path, args, needle):
    code, out, err = run(capsys, "train", "--iterations", "1", "--image-size", "16", *args,
                         "--out", str(tmp_path / "r"), "--quiet")
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("texseg: error:") and needle in lines[0], err
    assert "Traceback" not in err


def test_unwritable_out_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, *TINY_TRAIN, "--out", str(blocker / "run"))
    assert code != 0 and err.count("\n") == 1 and "cannot write" in err


def test_existing_run_is_refused_and_kept(capsys, tmp_path):
    out_dir = tmp_path / "run"
    assert run(capsys, *TINY_TRAIN, "--out", str(out_dir))[0] == 0
    before = {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()}
    code, _, err = run(capsys, *TINY_TRAIN, "--seed", "5", "--out", str(out_dir))
    assert code != 0 and "already holds a run" in err
    assert before == {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()}


@pytest.mark.parametrize("content", [None, b"", b"\x00" * 100, b"garbage" * 50])
def test_eval_of_missing_or_broken_checkpoint_is_one_line(capsys, tmp_path, content):
    run_dir = tmp_path / "run"
    if content is not None:
        run(capsys, *TINY_TRAIN, "--out", str(run_dir))
        (run_dir / "model.safetensors").write_bytes(content)
    code, _, err = run(capsys, "eval", str(run_dir), "--count", "2")
    assert code == 2 and err.count("\n") == 1 and err.startswith("texseg: error:"), err


@pytest.mark.parametrize("args", [["generate", "--sigma1", "0"], ["generate", "--count", "3"],
                                  ["generate", "--image-size", "1"], ["generate", "--rows", "0"],
                                  ["eval", "x", "--count", "0"]])
def test_bad_generate_and_eval_input(capsys, tmp_path, args):
    code, _, err = run(capsys, *args)
    assert code != 0 and err.count("\n") == 1 and err.startswith("texseg: error:"), err


def test_console_script_has_help_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "texseg.cli", "train", "--lr", "-3"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "lr" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "texseg.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout


def test_iterations_flag_keeps_a_time_budget_from_the_config_file(capsys, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"time_budget": 0.5, "image_size": 32, "model": "cnn", "val_size": 2,
                               "eval_every": 100000, "batch_size": 2}))
    code, _, _ = run(capsys, "train", "--config", str(cfg), "--iterations", "100000", "--out", str(tmp_path / "r"),
                     "--quiet")
    assert code == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert saved["time_budget"] == 0.5 and saved["iterations"] == 100000 and summary["iterations"] < 100000


def test_export_refuses_a_folder_that_holds_an_export(capsys, tmp_path):
    args = ["generate", "--image-size", "16", "--count", "3", "--quiet", "--out", str(tmp_path / "d")]
    assert run(capsys, *args)[0] == 0
    before = sorted(p.name for p in (tmp_path / "d" / "images").iterdir())
    code, _, err = run(capsys, "generate", "--image-size", "16", "--count", "2", "--seed", "5", "--quiet",
                       "--out", str(tmp_path / "d"))
    assert code == 2 and "already holds an export" in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "d" / "images").iterdir()) == before


@pytest.mark.parametrize("args,needle", [(["--picture", "/nonexistent-dir/a.png"], "/nonexistent-dir/a.png"),
                                         (["--picture", "a.jpg"], ".png"),
                                         (["--seed", "99999999999999999999999"], "--seed")])
def test_generate_output_and_seed_errors_name_what_the_user_gave(capsys, tmp_path, args, needle):
    code, _, err = run(capsys, "generate", "--image-size", "16", "--rows", "1", *args)
    assert code == 2 and needle in err and ".tmp" not in err and err.count("\n") == 1, err
