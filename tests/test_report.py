"""HTML reports: written at the end of runs, experiments and searches, made again by `texseg report`,
self-contained, and checked in a real browser (headless Chromium) for broken images and errors."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
from html import unescape
from pathlib import Path

import pytest

from texseg import train
from texseg.cli import main
from texseg.experiments import ComparisonSettings, run_comparison
from texseg.experiments.difficulty import ModelGrid, evaluate_grid, write_model_grid
from texseg.plots import save_figure
from texseg.report import ReportError, detect_kind, write_report, write_report_or_note
from texseg.search import SearchSettings, run_search
from texseg.training import engine
from texseg.training.config import TrainConfig

TINY = dict(image_size=16, model="cnn", model_kwargs={"num_channels": 4}, iterations=3, time_budget=None,
            eval_every=1, val_size=4, batch_size=2, lr=1e-2)
DATA_PNG = re.compile(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"')


# --------------------------------------------------------------------------- folders
@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One folder of each kind, made by texseg itself (the benchmark by hand: another branch writes it)."""
    root = tmp_path_factory.mktemp("reports")
    run = train(TrainConfig(**TINY), root / "run", progress=False).run_dir
    experiment = root / "experiment"
    run_comparison(TrainConfig(**TINY), "optimizer", ["sgd", "adam"], experiment,
                   ComparisonSettings(seeds=2, lrs={"sgd": 0.1, "adam": 0.01},
                                      command="texseg compare optimizers --optimizers sgd,adam"))
    search = root / "search"
    with pytest.MonkeyPatch.context() as mp:  # tiny trials count as learnt: the page shows a best trial
        mp.setattr(engine, "run_warnings", lambda *args, **kwargs: [])
        run_search(SearchSettings(search, trials=2), dict(TINY))
    grid = root / "grid"  # an experiment without trials: a saved model over a grid of difficulties
    scene, rows = evaluate_grid(run, [0.2, 1.0], [1.2], count=2)
    write_model_grid(grid, ModelGrid(str(run), scene, rows, [0.2, 1.0], [1.2], count=2, seed=2024),
                     command="texseg difficulty ...")
    for folder in (experiment, grid, search):  # the caller writes the page (the CLI does), once per folder
        write_report(folder)
    return {"run": run, "experiment": experiment, "search": search, "benchmark": _benchmark_folder(root / "bench"),
            "grid": grid}


KIND = {"grid": "experiment"}
ALL = ["run", "experiment", "search", "benchmark", "grid"]


def _benchmark_folder(out: Path) -> Path:
    """What `texseg benchmark` writes: leaderboard.csv (mean, _low, _high per metric), leaderboard.md, figures."""
    from matplotlib.figure import Figure

    out.mkdir()
    (out / "leaderboard.csv").write_text(
        "segmenter,suite,num_regions,status,note,images,miou,miou_low,miou_high,vi,vi_low,vi_high,images_per_s\n"
        "unet,gauss-k2,2,done,,8,0.91,0.88,0.94,0.31,0.25,0.37,120\n"
        "kmeans,gauss-k2,2,done,,8,0.62,0.55,0.69,0.95,0.85,1.05,300\n"
        "otsu,gauss-k2,2,failed,out of memory,0,,,,,,,\n"
        "unet,mosaic-k3,3,done,,8,0.77,0.70,0.84,0.61,0.50,0.72,110\n", encoding="utf-8")
    (out / "leaderboard.md").write_text("# Benchmark leaderboard\n\nEach value is the mean over the suite's "
                                        "images ± its 95% interval.\n\n## gauss-k2\n", encoding="utf-8")
    fig = Figure(figsize=(5, 2), layout="constrained")
    fig.subplots().barh(["unet", "kmeans"], [0.91, 0.62])
    save_figure(fig, out / "bars-gauss-k2.png")
    return out


# ------------------------------------------------------------------------ the pages
def test_every_kind_is_detected_and_written_at_the_end(folders: dict[str, Path]) -> None:
    for name, path in folders.items():
        assert detect_kind(path) == KIND.get(name, name)
    for kind in ("run", "experiment", "search", "grid"):  # written by the run/search itself, or by their caller
        assert (folders[kind] / "report.html").is_file(), kind
    assert not (folders["benchmark"] / "report.html").exists()
    assert write_report(folders["benchmark"]) == folders["benchmark"] / "report.html"


@pytest.mark.parametrize("kind", ALL)
def test_page_is_self_contained_with_every_figure(folders: dict[str, Path], kind: str) -> None:
    path = write_report(folders[kind])
    html = path.read_text(encoding="utf-8")
    pngs = sorted(p.name for p in folders[kind].glob("*.png"))
    assert pngs, kind
    assert len(DATA_PNG.findall(html)) == len(pngs)
    for name in pngs:
        assert f'alt="{name}"' in html
    assert "Content-Security-Policy" in html and "img-src data:;" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing loaded from anywhere
    assert 'id="selfcheck"' in html


def test_run_page_shows_question_answer_status_environment(folders: dict[str, Path]) -> None:
    run = folders["run"]
    summary = json.loads((run / "summary.json").read_text())
    html = unescape((run / "report.html").read_text(encoding="utf-8"))
    assert f"{summary['val']['iou']:.4f}" in html and f"{summary['val']['trivial_iou']:.4f}" in html
    assert f"texseg train --config {run / 'config.json'}" in html
    assert "num_channels=4" in html  # config, model kwargs included
    assert re.search(r"<span class=\"badge warn\" id=\"status\">completed · \d warnings?</span>", html)
    for key in ("device (this run)", "precision (this run)", "torch threads (this run)", "torch (this run)",
                "texseg (this run)", "CPU capability (torch)"):
        assert key in html
    assert summary["precision"] in html and summary["torch"] in html
    for warning in summary["warnings"]:  # 3 steps: the run is flagged as too short, and the page says so
        assert warning in html
    assert summary["warnings"] and 'class="badge warn"' in html


def test_experiment_page_ranks_settings_with_intervals(folders: dict[str, Path]) -> None:
    html = unescape((folders["experiment"] / "report.html").read_text(encoding="utf-8"))
    assert "<pre>texseg compare optimizers --optimizers sgd,adam</pre>" in html
    assert "<th>iou</th>" in html and "mean over completed seeds [95% interval]" in html
    with (folders["experiment"] / "results.csv").open() as f:
        trials = list(csv.DictReader(f))
    means = {label: statistics.mean(float(t["val_iou"]) for t in trials if t["label"] == label)
             for label in {t["label"] for t in trials}}
    rows = re.findall(r"<tr(?: class=\"best\")?><td class=\"num\">(\d)</td><td>([^<]+)</td>", html)
    assert [r[0] for r in rows] == ["1", "2"] and {r[1] for r in rows} == {"sgd", "adam"}
    assert means[rows[0][1]] >= means[rows[1][1]]  # ranked by mean IoU
    assert re.search(r"0\.\d{4} \[0\.\d{4},\s0\.\d{4}\]", html)  # two seeds: an interval
    assert "4 completed" in html
    assert html.count("<figure>") == 2  # curves.png and final.png


def test_search_page_shows_best_trial(folders: dict[str, Path]) -> None:
    best = json.loads((folders["search"] / "best.json").read_text())
    html = unescape((folders["search"] / "report.html").read_text(encoding="utf-8"))
    assert f"{best['value']:.4f}" in html and f"trial {best['number']}" in html
    assert "Top 2 trials by value" in html
    assert "history.png" in html


def test_benchmark_page_has_one_table_per_suite_with_intervals(folders: dict[str, Path]) -> None:
    html = unescape(write_report(folders["benchmark"]).read_text(encoding="utf-8"))
    assert "Suite gauss-k2" in html and "Suite mosaic-k3" in html
    assert "0.910 [0.880, 0.940]" in html and "0.310 [0.250, 0.370]" in html
    assert "<span class=\"badge bad\" id=\"status\">failed: 1 of 4 cells</span>" in html
    assert "otsu on gauss-k2: out of memory" in html
    assert "3 done, 1 failed" in html


def test_grid_page_shows_the_results_table_and_heatmap(folders: dict[str, Path]) -> None:
    html = unescape((folders["grid"] / "report.html").read_text(encoding="utf-8"))
    assert "Difficulty grid of one saved model" in html and "<pre>texseg difficulty ...</pre>" in html
    assert "<h3>Held-out IoU</h3>" in html and "results.csv (2 rows)" in html
    assert 'alt="heatmap.png"' in html and 'alt="scenes.png"' in html


def test_figures_off_means_no_report(tmp_path: Path) -> None:
    run = train(TrainConfig(**{**TINY, "iterations": 1}, figures=False), tmp_path / "r", progress=False).run_dir
    assert (run / "summary.json").is_file() and not (run / "report.html").exists()


def test_a_failed_report_is_a_note_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import texseg.training.report as run_report

    def no_space(path: object) -> Path:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(run_report, "write_run_report", no_space)
    result = train(TrainConfig(**{**TINY, "iterations": 1}), tmp_path / "r", progress=False)
    assert str(result.status) == "completed"
    notes = json.loads((result.run_dir / "summary.json").read_text())["notes"]
    assert any(n.startswith("report.html not written: No space left on device") for n in notes)
    assert not (result.run_dir / "report.html").exists()


def test_unreadable_folder_contents(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a run, experiment, search or benchmark folder"):
        write_report(tmp_path)
    with pytest.raises(ReportError, match="not a folder"):
        detect_kind(tmp_path / "missing")
    (tmp_path / "leaderboard.csv").write_text("segmenter,suite,status\nx,s,done\n")
    (tmp_path / "samples.png").write_bytes(b"GIF89a not a png")
    note = write_report_or_note(tmp_path)
    assert note is not None and note.startswith("report.html not written:") and "not a PNG file" in note
    assert not (tmp_path / "report.html").exists()


def test_cli_report(folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folders["run"] / "report.html").unlink()
    with pytest.raises(SystemExit) as exc:
        main(["report", str(folders["run"])])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == str(folders["run"] / "report.html")
    assert (folders["run"] / "report.html").is_file()
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("texseg: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


# ------------------------------------------------------------------------ in a browser
def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed and tests do not install software; .ci/run installs it "
                    "(apt-get install chromium)")
    return found


def browse(page: Path, profile: Path) -> tuple[dict, list[str]]:
    """Load ``page`` in headless Chromium; return the page's self-check and the console messages."""
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr",
            "--v=0", "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        dom, log = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # the browser and its helpers are one process group
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log[-2000:]
    check = re.search(r'<pre id="selfcheck" data-done="1" data-result="([^"]*)"', dom)
    assert check, "the page's self-check did not run: " + dom[-500:]
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    return json.loads(unescape(check.group(1))), console


@pytest.mark.parametrize("kind", ALL)
def test_page_loads_in_a_browser_without_errors(folders: dict[str, Path], kind: str, tmp_path: Path) -> None:
    page = write_report(folders[kind])
    result, console = browse(page, tmp_path / "profile")
    assert result["images"] == len(list(folders[kind].glob("*.png"))) > 0
    assert result["broken"] == [] and result["errors"] == []
    assert console == []


def test_browser_check_sees_broken_images_and_errors(folders: dict[str, Path], tmp_path: Path) -> None:
    """The check above can fail: a broken image, a remote image and an injected script are all reported.

    The page's policy allows only its own two scripts (by hash): an injected one never runs, and the
    browser says so on its console."""
    html = write_report(folders["benchmark"]).read_text(encoding="utf-8")
    bad = ('<img alt="truncated" src="data:image/png;base64,iVBORw0KGgo="><img alt="remote" '
           'src="https://example.com/x.png"><script>notDefined();</script><footer>')
    page = tmp_path / "broken.html"
    page.write_text(html.replace("<footer>", bad, 1), encoding="utf-8")
    result, console = browse(page, tmp_path / "profile")
    assert sorted(result["broken"]) == ["remote", "truncated"]
    assert not any("notDefined" in e for e in result["errors"])  # it never ran ...
    assert any("Executing inline script violates" in line for line in console)  # ... because the policy blocked it
    assert any("example.com" in e for e in result["errors"])  # blocked by the page's policy, never fetched
    assert console


def test_experiment_headline_is_the_summarys_verdict_and_all_trivial_says_so(folders: dict[str, Path]) -> None:
    # 3 steps per trial: every trial is trivial, so nothing is "best" anywhere, in the same words.
    html = unescape((folders["experiment"] / "report.html").read_text(encoding="utf-8"))
    summary = (folders["experiment"] / "summary.md").read_text(encoding="utf-8")
    verdict = re.search(r'<p class="verdict" id="verdict">([^<]+)</p>', html).group(1)
    assert verdict.startswith("no verdict: every trial is trivial") and "at least 50 training steps" in verdict
    assert f"**{verdict}**" in summary and summary.split("\n\n")[1] == f"**{verdict}**."  # its headline
    assert "best setting" not in html.lower() and 'class="best"' not in html
    assert html.count(verdict) == 2  # the headline and its card, not repeated as the question
    assert "None: every trial completed and learnt something" not in summary


def test_run_page_separates_user_set_settings_from_device_filled_ones(folders: dict[str, Path]) -> None:
    run = folders["run"]
    filled = json.loads((run / "summary.json").read_text())["defaults"]["filled"]
    assert "compile" in filled and "lr" not in filled  # TINY sets lr, leaves compile to the device
    html = unescape(write_report(run).read_text(encoding="utf-8"))
    user = re.search(r'<p class="chips" id="user-set">(.*?)</p>', html).group(1)
    device = re.search(r'<p class="chips" id="device-filled">(.*?)</p>', html).group(1)
    assert "<b>lr</b>" in user and "<b>compile</b>" not in user
    assert "<b>compile</b>" in device and "<b>lr</b>" not in device


def test_benchmark_row_is_highlighted_only_when_its_interval_is_clear(folders: dict[str, Path]) -> None:
    from texseg.report.kinds import _clear_of_others

    html = write_report(folders["benchmark"]).read_text(encoding="utf-8")
    assert '<tr class="best"><td>unet</td>' in html  # 0.91 [0.88, 0.94] against 0.62 [0.55, 0.69]
    rows = [{"miou": "0.61", "miou_low": "0.3", "miou_high": "0.8"}, {"miou": "0.5", "miou_low": "0.4",
                                                                       "miou_high": "0.6"}]
    assert not _clear_of_others(rows, 0, "miou")
    rows[1].update(miou_high="0.29")
    assert _clear_of_others(rows, 0, "miou")


def test_search_and_table_pages_take_their_words_from_result_json(folders: dict[str, Path]) -> None:
    """summary.md is never parsed back: the title and the text of a page come from result.json (issue 21)."""
    from texseg.result_file import read_result

    search = read_result(folders["search"], "search")
    assert search is not None and search["schema_version"] == 1
    assert search["best"] == json.loads((folders["search"] / "best.json").read_text())
    grid = read_result(folders["grid"], "table")
    assert grid is not None and grid["title"] == "Difficulty grid of one saved model" and grid["command"]
    for kind, words in (("search", search["description"][0][:40]), ("grid", "Mean IoU over the two regions")):
        (folders[kind] / "summary.md").write_text("# Something else\n\nnot this\n")  # never read
        html = unescape(write_report(folders[kind]).read_text(encoding="utf-8"))
        assert words in html and "Something else" not in html, kind
