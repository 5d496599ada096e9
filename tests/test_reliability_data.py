"""Training on an image folder whose files change under it, and folder options that say what they do."""

from __future__ import annotations

import json

import pytest

import texseg.data.folder
from conftest import run_main
from texseg.data import SceneSpec
from texseg.data.export import export_dataset
from texseg.errors import DataError
from texseg.training import TrainConfig, resume_training, train


def _config(root, **kw) -> TrainConfig:
    base = dict(image_size=32, model="cnn", model_kwargs={"num_channels": 4}, iterations=12, time_budget=None,
                eval_every=4, val_size=4, batch_size=2, lr=1e-2, data=str(root), regions=2, val_fraction=0.5)
    base.update(kw)
    return TrainConfig(**base)


def test_a_data_file_that_breaks_mid_training_fails_the_run_at_its_step_resumably(tmp_path, monkeypatch):
    root = tmp_path / "data"
    export_dataset(SceneSpec(40, 8.0, (0.2, 1.2)), root, 4, seed=1)
    monkeypatch.setattr(texseg.data.folder, "CACHE_BYTES", 0)  # every crop reads its file again
    real, calls, broken = texseg.data.folder.read_image, [0], {}

    def breaks_after_a_while(path, **kw):
        calls[0] += 1
        if calls[0] == 20 and not broken:  # mid-training: after validation and a few steps
            broken[path] = path.read_bytes()
            path.write_bytes(broken[path][:100])  # truncated on disk
        return real(path, **kw)

    monkeypatch.setattr(texseg.data.folder, "read_image", breaks_after_a_while)
    with pytest.raises(DataError) as e:
        train(_config(root), tmp_path / "run", progress=False)
    (path, data), = broken.items()
    message = str(e.value)
    assert "\n" not in message and str(path) in message and "cannot decode" in message
    assert str(tmp_path / "run") in message and "stopped at step" in message and "resumable" in message
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and str(path) in summary["message"]
    step = int(summary["message"].split("stopped at step ")[1].split(",")[0])
    assert 1 <= step <= 12
    path.write_bytes(data)  # the file is fixed
    assert resume_training(tmp_path / "run", progress=False).status == "completed"


def test_val_data_equal_to_data_warns_that_scores_are_on_training_images(capsys, tmp_path):
    root = tmp_path / "data"
    export_dataset(SceneSpec(32, 6.4, (0.2, 1.2)), root, 2, seed=1)
    code, _, err = run_main(capsys, "train", "--data", str(root), "--val-data", str(root) + "/", "--regions", "2",
                            "--image-size", "32", "--iterations", "2", "--batch-size", "2", "--model", "cnn",
                            "--quiet", "--no-figures", "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "warning: the held-out folder val_data is the training folder data itself" in err


def test_many_bad_files_are_capped_and_counted(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(300):
        (root / "images" / f"{i:03d}.png").write_bytes(b"not an image")
    with pytest.raises(DataError) as e:
        texseg.data.folder.validate_folder(root)
    lines = str(e.value).splitlines()
    assert lines[0] == f"300 problem(s) in {root}:" and len(lines) == 22
    assert lines[-1] == "... and 280 more problem(s) not listed"
