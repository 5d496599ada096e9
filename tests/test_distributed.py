"""Data-parallel training with torch.distributed (gloo, 2 processes on this CPU), driven through torchrun."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from safetensors.torch import load_file

import texseg
from conftest import PROCESS_TIMEOUT, cli_process, wait_until
from texseg.training import TrainConfig, train

# A model without BatchNorm: per-rank batch statistics would differ from one batch of 2b by design.
NET = ["--model", "unet", "--model-arg", "base_width=4", "--model-arg", "depth=1", "--model-arg", "norm=group"]
SMALL = ["--image-size", "32", "--val-size", "4", "--threads", "1", "--precision", "fp32", "--quiet"]


def _run(*args: str):
    with cli_process(*args) as proc:
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    return proc.returncode, out, err


def _stop_after_first_evaluation(run, budget: float, sig: int) -> tuple[int, str]:
    """A 2-rank run into ``run``, sent ``sig`` once its first evaluation is written: (exit code, stderr)."""
    args = ["train", "--nproc", "2", *NET, *SMALL, "--batch-size", "2", "--iterations", "100000",
            "--time-budget", str(budget), "--out", str(run)]
    with cli_process(*args) as proc:
        wait_until(lambda: (run / "metrics.csv").exists(), proc, what="the first evaluation")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    return proc.returncode, err


@pytest.mark.parametrize("sync_every", ["1", "4"])
def test_two_ranks_train_one_model_equal_to_one_process_replaying_both_streams(tmp_path, sync_every):
    """2 ranks x batch 2 == 1 process x batch 4 drawn from the same two streams (same scenes, same weights),
    whether the ranks read their losses every step or every few."""
    code, out, err = _run("train", "--nproc", "2", *NET, *SMALL, "--batch-size", "2", "--iterations", "6",
                          "--eval-every", "3", "--sync-every", sync_every, "--out", str(tmp_path / "ddp"))
    assert code == 0, err
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2 and summary["iterations"] == 6
    assert out.count("run:") == 1  # rank 0 alone reports
    texseg.load_model(tmp_path / "ddp")

    cfg = TrainConfig(image_size=32, val_size=4, threads=1, precision="fp32", batch_size=4, streams=2,
                      iterations=6, time_budget=None, eval_every=3, model="unet",
                      model_kwargs={"base_width": 4, "depth": 1, "norm": "group"})
    single = train(cfg, tmp_path / "single", progress=False)
    assert single.summary["world_size"] == 1
    a, b = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "single" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_ranks_reading_every_few_steps_agree_on_a_time_budget(tmp_path):
    """Each rank's host clock differs; the ranks must still read, evaluate and stop at the same steps."""
    code, _, err = _run("train", "--nproc", "2", *NET, *SMALL, "--batch-size", "2", "--iterations", "100000",
                        "--time-budget", "2", "--sync-every", "3", "--dist-timeout", "60", "--out", str(tmp_path / "r"))
    assert code == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["train_seconds"] >= 2.0
    # Ranks read (and so evaluate and stop) only after every third step, never on one rank's clock.
    rows = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[1:]
    assert rows and all(int(row.split(",")[0]) % 3 == 0 for row in rows)
    assert summary["iterations"] % 3 == 0


def test_a_signal_to_torchrun_stops_every_rank_at_one_step_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    # To the launcher (Ctrl-C in a terminal also reaches the ranks).
    code, err = _stop_after_first_evaluation(run, budget=4, sig=signal.SIGINT)
    assert code == 130 and "Traceback" not in err and "texseg: interrupted by SIGINT" in err, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["world_size"] == 2, (summary, err)
    texseg.load_model(run)
    code, _, err = _run("train", "--nproc", "2", "--resume", str(run), "--quiet")
    assert code == 0, err
    done = json.loads((run / "summary.json").read_text())
    assert done["status"] == "completed" and done["train_seconds"] >= 4.0
    assert done["iterations"] > summary["iterations"]


def test_resuming_a_distributed_run_on_another_number_of_ranks_is_refused(tmp_path):
    run = tmp_path / "run"
    _stop_after_first_evaluation(run, budget=30, sig=signal.SIGTERM)
    code, _, err = _run("train", "--resume", str(run), "--quiet")
    assert code == 2 and "trained on 2 rank(s)" in err and err.count("\n") == 1, err


def test_streams_must_divide_the_batch():
    with pytest.raises(ValueError, match="batch_size must be a multiple of streams"):
        TrainConfig(batch_size=3, streams=2).validate()
