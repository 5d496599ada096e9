"""The training loop's callbacks and the typed run summary (summary.json)."""

from __future__ import annotations

import json

import pytest
import torch

from texseg.training import Callback, LoopState, RunSummary, Stop, default_callbacks, train
from texseg.training.callbacks import EarlyStopping, Figures, KeepBest, RunReport, TensorBoard
from texseg.training.config import TrainConfig
from texseg.training.rundir import RunStatus, read_metrics
from texseg.training.summary import SCHEMA_VERSION

CORE = {".texseg-run", ".lock", "config.json", "model.json", "model.safetensors", "metrics.csv", "summary.json"}


def tiny(**kw) -> TrainConfig:
    base = dict(image_size=32, model="cnn", model_kwargs={"num_channels": 4}, iterations=6, time_budget=None,
                eval_every=2, val_size=4, batch_size=2, lr=1e-2, threads=1)
    base.update(kw)
    return TrainConfig(**base)


class Recorder(Callback):
    """Writes down what it is told, and what the state said at the time."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[tuple] = []
        self.stop_at = stop_at
        self.closed = False

    def on_start(self, state: LoopState) -> None:
        assert (state.path / "config.json").is_file()  # the run exists when callbacks start
        self.events.append(("start", state.step, state.status))

    def on_evaluation(self, state, evaluation):
        assert state.history[-1] is evaluation.row and evaluation.metrics is state.last_val
        assert isinstance(state.model, torch.nn.Module) and state.optimizer is state.trainer.optimizer
        self.events.append(("evaluation", evaluation.step, round(evaluation.metrics["iou"], 6), evaluation.improved,
                            state.best.step))
        if self.stop_at is not None and evaluation.step >= self.stop_at:
            return Stop(f"enough after step {evaluation.step}")
        return None

    def on_end(self, state, result):
        self.events.append(("end", state.step, result.status))
        return [f"recorder saw {len(self.events)} events"]

    def close(self) -> None:
        self.closed = True


def test_a_callback_is_told_of_start_each_evaluation_and_end_in_order(tmp_path, capsys):
    rec = Recorder()
    result = train(tiny(), tmp_path / "run", [rec], progress=False)
    kinds = [e[0] for e in rec.events]
    assert kinds == ["start", "evaluation", "evaluation", "evaluation", "end"]
    assert rec.events[0][1:] == (0, RunStatus.RUNNING)
    assert [e[1] for e in rec.events[1:4]] == [2, 4, 6]
    assert rec.events[1][3] is True and rec.events[1][4] == 2  # the first evaluation is the best so far
    written = read_metrics(result.run_dir)  # what each evaluation was told is what metrics.csv holds
    assert [(int(r["step"]), round(r["val_iou"], 6)) for r in written] == [e[1:3] for e in rec.events[1:4]]
    assert rec.events[-1] == ("end", 6, RunStatus.COMPLETED) and rec.closed
    # its note is printed and recorded in summary.json
    assert "warning: recorder saw 5 events" in capsys.readouterr().err
    assert "recorder saw 5 events" in RunSummary.from_file(result.run_dir).notes


def test_a_stop_from_a_callback_ends_the_run_and_the_summary_says_why(tmp_path):
    result = train(tiny(iterations=20), tmp_path / "run", [Recorder(stop_at=4)], progress=False)
    assert result.status == RunStatus.COMPLETED and result.summary.iterations == 4
    assert result.summary.message == "enough after step 4"
    on_disk = json.loads((result.run_dir / "summary.json").read_text())
    assert on_disk["message"] == "enough after step 4" and on_disk["iterations"] == 4
    assert not (result.run_dir / "resume.pt").exists()  # ended for good


def test_a_stop_can_prune(tmp_path):
    class Prune(Callback):
        def on_evaluation(self, state, evaluation):
            return Stop("not promising", RunStatus.PRUNED)

    result = train(tiny(), tmp_path / "run", [Prune()], progress=False)
    assert result.status == RunStatus.PRUNED and result.summary.iterations == 2
    assert result.summary.message == "not promising"


def test_no_callbacks_write_the_run_itself_and_nothing_else(tmp_path):
    """Core (the loop's own): config.json, the checkpoint, metrics.csv, summary.json; no figures, report,
    TensorBoard events or best/ even where the config asks for them."""
    result = train(tiny(keep_best=True, figures=True), tmp_path / "run", [], progress=False)
    assert result.status == RunStatus.COMPLETED
    assert {p.name for p in result.run_dir.iterdir()} == CORE
    assert RunSummary.from_file(result.run_dir).iterations == 6


def test_default_callbacks_give_todays_files(tmp_path):
    config = tiny(keep_best=True, early_stop=50)
    kinds = [type(c) for c in default_callbacks(config)]
    assert kinds == [KeepBest, EarlyStopping, Figures, RunReport]
    assert [type(c) for c in default_callbacks(tiny(figures=False))] == []
    by_default = train(config, tmp_path / "default", progress=False)
    given = train(config, tmp_path / "given", default_callbacks(config), progress=False)
    for run in (by_default, given):
        assert {p.name for p in run.run_dir.iterdir()} == CORE | {"samples.png", "curves.png", "report.html", "best"}
        assert (run.run_dir / "best" / "model.safetensors").is_file()


def test_tensorboard_callback_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    assert TensorBoard in [type(c) for c in default_callbacks(tiny(tensorboard=True))]
    result = train(tiny(), tmp_path / "run", [TensorBoard()], progress=False)
    assert list(result.run_dir.glob("events.out.tfevents.*"))
    assert not (result.run_dir / "samples.png").exists()


# ------------------------------------------------------------------------- RunSummary
def test_run_summary_round_trips_and_keeps_the_file_keys(tmp_path):
    result = train(tiny(), tmp_path / "run", [], progress=False)
    raw = json.loads((result.run_dir / "summary.json").read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    assert {"status", "message", "model", "iterations", "val", "torch", "texseg", "notes", "warnings",
            "label_mode", "defaults", "cpu_share"} <= set(raw)
    summary = RunSummary.from_file(result.run_dir)
    assert summary == result.summary and summary.to_dict() == raw
    assert summary.torch_version == torch.__version__ and summary["torch"] == torch.__version__
    assert summary.val["iou"] == raw["val"]["iou"] and summary.get("missing", 1) == 1
    summary.write(tmp_path / "copy.json")
    assert json.loads((tmp_path / "copy.json").read_text()) == raw


def test_run_summary_reads_an_old_format_file(tmp_path):
    """A summary.json of an older texseg: no schema_version, label_mode, cpu_share, defaults...; a dropped key."""
    old = {"status": "completed", "message": "", "model": "cnn", "parameters": 1234, "iterations": 100,
           "train_seconds": 12.5, "eval_seconds": 1.0, "it_per_s": 8.0, "val": {"iou": 0.8, "accuracy": 0.9},
           "device": "cpu", "precision": "fp32", "threads": 2, "torch": "2.1.0", "texseg": "0.1.0",
           "notes": [], "removed_since": 7}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    summary = RunSummary.from_file(tmp_path)
    assert summary.schema_version == 0 and summary.label_mode == "fixed" and summary.cpu_share is None
    assert summary.iterations == 100 and summary.val["iou"] == 0.8 and summary.torch_version == "2.1.0"
    assert summary.extra == {"removed_since": 7}
    assert summary.to_dict()["removed_since"] == 7  # written back unchanged
    with pytest.raises(ValueError, match="JSON object"):
        RunSummary.from_dict([1, 2])
    with pytest.raises(ValueError, match="does not exist"):
        RunSummary.from_file(tmp_path / "nowhere")


def test_report_pages_read_a_summary_as_written_through_run_summary(tmp_path):
    from texseg.pages.collect import ReportError

    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed", "val": {"iou": 0.9}}))
    as_written = RunSummary.read_as_written(tmp_path)
    assert as_written == {"status": "completed", "val": {"iou": 0.9}}  # no defaults filled in: a page shows the file
    assert "iterations" in RunSummary.from_file(tmp_path)  # the typed summary fills them
    (tmp_path / "summary.json").write_text(json.dumps({"iterations": "many"}))
    with pytest.raises(ReportError, match="iterations"):
        RunSummary.read_as_written(tmp_path)
    assert RunSummary.read_as_written(tmp_path / "missing", missing_ok=True) == {}
