"""examples/lab.ipynb runs from top to bottom with texseg's API and shows what it says it shows."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import texseg

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "lab.ipynb"


def _text(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_lab_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 6
    assert all(c.outputs == [] and c.execution_count is None for c in code)


# About 210 s of CPU (measured: docs/tutorials/lab-notebook.md); the limit allows for a busy 2-core machine
# (770 s at load 18-35).
@pytest.mark.timeout(1200)
def test_lab_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel imports the texseg under test (not another installed copy): its folder goes first on its path.
    src = str(Path(texseg.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p))
    # The kernel runs in tmp_path (it writes lab-runs/ there); it is shut down when execute() returns or raises.
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = _text(nb)
    # The lab's CNN collapses in eval mode; the same design with one BatchNorm per block does not.
    scores = {m: (float(a), float(b)) for m, a, b in re.findall(r"^(seed-cnn|cnn)\s+([\d.]+)\s+([\d.]+)$", text, re.M)}
    assert set(scores) == {"seed-cnn", "cnn"}, text
    assert scores["seed-cnn"][1] < 0.5 < scores["seed-cnn"][0] and scores["cnn"][1] > 0.8
    unet = float(re.search(r"^unet: val IoU ([\d.]+)", text, re.M).group(1))
    cnn = float(re.search(r"^cnn:  val IoU ([\d.]+)", text, re.M).group(1))
    assert unet > 0.8 and unet >= cnn - 0.05
    ranked = re.findall(r"^(sgd|adam)\s+IoU ([\d.]+) \[", text, re.M)  # two seeds each: intervals
    assert {name for name, _ in ranked} == {"sgd", "adam"}
    swept = re.findall(r"^lr=(0\.001|0\.01|0\.1)\s+IoU ([\d.]+) \[", text, re.M)  # the lab's lr sweep, two seeds
    assert {lr for lr, _ in swept} == {"0.001", "0.01", "0.1"}, text
    verdicts = re.findall(r"^(best: |no best: |no best claimed|no verdict: ).*$", text, re.M)
    assert len(verdicts) == 2, text  # the sweep's and the comparison's, in summary.md's words
    # Each execution writes a fresh folder under lab-runs/ and deletes nothing.
    (runs,) = (tmp_path / "lab-runs").iterdir()
    assert f"outputs of this execution: lab-runs/{runs.name}" in text
    assert "rmtree" not in "".join(c.source for c in nb.cells)
    for path in ("unet/report.html", "lr-sweep/report.html", "lr-sweep/summary.md", "optimizers/report.html",
                 "optimizers/result.json",
                 "predicted/scene.mask.png", "predicted/scene.prob.npy", "predicted/scene.overlay.png"):
        assert (runs / path).is_file(), path
    assert not (runs / "optimizers/lr-tuning/report.html").exists()  # one page per experiment, not per sweep
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5  # the data, the U-Net's samples, the lr sweep, the comparison, the prediction
