"""Benchmark suites and runner: reproducible suites, leaderboard files, skip on re-run, stop, CLI errors."""

from __future__ import annotations

import csv
import json
import math
import os
import signal

import pytest
import torch

from texseg.benchmark import BenchmarkSettings, get_suite, list_suites, resolve_suite, run_benchmark
from texseg.benchmark.report import leaderboard_markdown
from texseg.benchmark.suites import SuiteError, suite_from_folder
from texseg.checkpoint import save_model
from texseg.cli import main
from texseg.data import SceneSpec, generate
from texseg.data.export import export_dataset
from texseg.models import create_model
from texseg.segmenters.classical import LocalEnergy

NAMED = {"notebook": 2, "medium": 2, "hard": 2, "k4": 4, "fine": 2}

QUIET = BenchmarkSettings(progress=False)


def tiny_suite(tmp_path, name="tiny", count=3, regions=2):
    sigmas = [0.2, 1.2] if regions == 2 else [0.2, 0.8, 2.0, 4.0][:regions]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"scene": {"image_size": 32, "partition_sigma": 6.4, "texture_sigmas": sigmas},
                                "count": count, "seed": 5}))
    return str(path)


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_named_suites_are_bit_for_bit_reproducible_and_splits_disjoint():
    for name, k in NAMED.items():
        suite = get_suite(name)
        assert suite.count == 64 and suite.num_regions == k and suite.spec.image_size == 128
    a_img, a_lab = get_suite("notebook").load("test", 4)
    b_img, b_lab = get_suite("notebook").load("test", 4)
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    tune, _ = get_suite("notebook").load("tune", 4)
    train, _ = get_suite("notebook").load("train", 4)
    assert not torch.equal(a_img, tune) and not torch.equal(a_img, train) and not torch.equal(tune, train)
    spec = get_suite("fine").spec
    assert spec.partition_sigma == pytest.approx(12.8) and spec.texture_sigmas == (0.2, 1.2)


def test_real_suites_are_mosaics_of_the_textures_scikit_image_ships():
    real, varied = get_suite("real"), get_suite("k2to5")
    assert real.num_regions == 2 and real.count == 64 and real.spec.textures == "skimage"
    assert real.spec.image_size == 128 and not real.per_image_regions
    images, labels = real.load("test", 2)
    assert images.shape == (2, 1, 128, 128) and set(labels.unique().tolist()) == {0, 1}
    assert torch.equal(images, get_suite("real").load("test", 2)[0])  # fixed seed
    assert not torch.equal(images, real.load("tune", 2)[0])
    # K = 2..5: 16 images of each, interleaved; each image's K is its own.
    assert varied.per_image_regions and varied.num_regions == 5 and varied.count == 64
    images, labels = varied.load()
    ks = varied.regions_per_image(labels)
    assert images.shape == (64, 1, 128, 128) and ks[:4] == [2, 3, 4, 5]
    assert all(ks.count(k) == 16 for k in (2, 3, 4, 5))  # every region of every image is there
    assert min(int((lab == r).sum()) for lab, k in zip(labels, ks) for r in range(k)) >= 128 * 128 / 4 / 5
    first, first_labels = varied.load("test", 3)
    assert torch.equal(first, images[:3]) and torch.equal(first_labels, labels[:3])  # a prefix of the split
    assert varied.describe()["regions"] == "per image" and len(varied.describe()["parts"]) == 4
    assert "skimage_textures" in real.describe() and "skimage_textures" not in get_suite("notebook").describe()
    assert varied.has_split("train") and "real" in list_suites() and "k2to5" in list_suites()
    with pytest.raises(ValueError, match="^suite must be one of notebook, medium"):
        resolve_suite("nope")


def test_the_skimage_pool_needs_no_download():
    from texseg.data.mosaic import SKIMAGE_TEXTURES, texture_pool

    pool = texture_pool("skimage")
    assert sorted(name for name, _ in pool) == sorted(SKIMAGE_TEXTURES) and len(pool) >= 10
    for name, texture in pool:
        assert min(texture.shape) >= 128, name  # room for a 128 x 128 crop
        assert float(texture.min()) == 0.0 and float(texture.max()) == 1.0, name


class OnlyTwoRegions(LocalEnergy):
    """local-energy that refuses K != 2, and records the K and images of each call."""

    name = "only-two"

    def __init__(self):
        super().__init__()
        self.calls = []

    def supports(self, num_regions):
        return num_regions == 2

    def segment(self, images, num_regions):
        self.calls.append((num_regions, images.shape[0]))
        return super().segment(images, num_regions)


def test_a_suite_with_k_varying_per_image_is_segmented_per_k(tmp_path):
    from texseg.benchmark.suites import Suite
    from texseg.evaluation.region_metrics import region_metrics

    parts = tuple((SceneSpec(32, 6.4, sigmas, 1.0), 3) for sigmas in ((0.2, 1.2), (0.2, 1.0, 3.0)))
    suite = Suite("varied", "K = 2 or 3", 3, 6, seed=3, parts=parts, per_image_regions=True)
    images, labels = suite.load()
    assert suite.regions_per_image(labels) == [2, 3, 2, 3, 2, 3]

    class Recording(OnlyTwoRegions):
        def supports(self, num_regions):
            return True

    every = Recording()
    result = run_benchmark([every], [suite], tmp_path / "a", BenchmarkSettings(batch_size=2, progress=False),
                           report=False)
    assert sorted(every.calls) == [(2, 1), (2, 2), (3, 1), (3, 2)]  # one K per call, batches of at most 2
    cell = result.cells[0]
    expected = LocalEnergy().segment(images[1:2], 3)[0]
    assert cell.per_image["miou"][1] == pytest.approx(region_metrics(labels[1], expected, 3)["miou"])
    assert len(cell.per_image["iou_2"]) == 6 and math.isnan(cell.per_image["iou_2"][0])  # K = 2 image: no region 2

    two = OnlyTwoRegions()
    result = run_benchmark([two], [suite], tmp_path / "b", QUIET, report=True)
    cell = result.cells[0]
    assert cell.status == "done" and two.calls == [(2, 3)]
    assert "skipped (K = 3, 3 images)" in cell.note
    assert [math.isnan(v) for v in cell.per_image["miou"]] == [False, True] * 3  # in the suite's image order
    assert cell.images == 3 and cell.pixels == 3 * 32 * 32  # its speed counts the images it segmented
    assert "skipped (K = 3" in (tmp_path / "b" / "leaderboard.md").read_text()


def test_supervised_methods_fit_on_a_folder_suites_train_part(tmp_path):
    spec = SceneSpec(24, 5.0, (0.2, 1.2), 1.0)
    export_dataset(spec, tmp_path / "data", 3, seed=4)
    no_train = run_benchmark(["random-forest"], [str(tmp_path / "data")], tmp_path / "a", QUIET,
                             report=False)
    assert no_train.cells[0].status == "skipped" and "no training images" in no_train.cells[0].note
    export_dataset(spec, tmp_path / "data" / "train", 4, seed=5)
    suite = suite_from_folder(tmp_path / "data")
    assert suite.has_split("train") and not suite.has_split("tune") and "train_fingerprint" in suite.describe()
    train_images, _ = suite.load("train")
    assert train_images.shape == (4, 1, 24, 24)
    fitted = run_benchmark(["random-forest"], [suite], tmp_path / "a", QUIET, report=False)
    cell = fitted.cells[0]
    assert cell.status == "done" and cell.fit_seconds > 0 and cell.images == 3
    assert "fitted on 4 images of the suite's training split" in cell.note
    (tmp_path / "data" / "train" / "labels").rename(tmp_path / "data" / "train" / "other")
    with pytest.raises(SuiteError, match="train: a suite folder needs images/ and masks/"):
        suite_from_folder(tmp_path / "data")


def test_a_folder_whose_masks_hold_different_numbers_of_regions_varies_per_image(tmp_path):
    export_dataset(SceneSpec(24, 5.0, (0.2, 1.2), 1.0), tmp_path / "two", 2, seed=1)
    export_dataset(SceneSpec(24, 5.0, (0.2, 1.0, 3.0), 1.0), tmp_path / "three", 2, seed=2)
    mixed = tmp_path / "mixed"
    for sub in ("images", "labels"):
        (mixed / sub).mkdir(parents=True)
        for source in ("two", "three"):
            for f in sorted((tmp_path / source / sub).iterdir()):
                (mixed / sub / f"{source}-{f.name}").write_bytes(f.read_bytes())
    suite = suite_from_folder(mixed)
    _, labels = suite.load()
    assert suite.per_image_regions and suite.num_regions == 3
    assert suite.regions_per_image(labels) == [3, 3, 2, 2]  # files in name order: three-*, two-*
    assert not suite_from_folder(tmp_path / "two").per_image_regions


def test_folder_suite_reads_an_export(tmp_path):
    spec = SceneSpec(24, 5.0, (0.2, 1.0, 3.0), 1.0)
    export_dataset(spec, tmp_path / "data", 3, seed=4)
    suite = suite_from_folder(tmp_path / "data")
    images, labels = suite.load()
    assert suite.num_regions == 3 and suite.count == 3 and images.shape == (3, 1, 24, 24)
    truth_images, truth_labels = generate(spec, 3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(labels, truth_labels)
    assert (images - truth_images).abs().max() <= 1 / 255 + 1e-6  # 8-bit PNG
    assert not suite.has_split("train")


def test_benchmark_writes_the_leaderboard_and_skips_done_cells(tmp_path):
    run_dir = tmp_path / "model"
    run_dir.mkdir()
    save_model(create_model("cnn", num_channels=4), run_dir, name="cnn", kwargs={"num_channels": 4},
               num_regions=2)
    suites = [tiny_suite(tmp_path), tiny_suite(tmp_path, "four", regions=4)]
    out = tmp_path / "out"
    first = run_benchmark(["local-energy", str(run_dir)], suites, out, QUIET)
    status = {(c.segmenter, c.suite): c.status for c in first.cells}
    assert status == {("local-energy", "tiny"): "done", ("local-energy", "four"): "done",
                      ("model", "tiny"): "done", ("model", "four"): "skipped"}
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert len(rows) == 6 and {"miou", "miou_low", "miou_high", "images_per_s", "s_per_megapixel", "vi_split",
                               "are", "bf", "gce", "iou_3"} <= set(rows[0])
    skipped = next(r for r in rows if r["status"] == "skipped")
    assert skipped["note"] == "model segments 2 regions, suite has 4" and skipped["miou"] == ""
    done = next(r for r in rows if r["segmenter"] == "local-energy" and r["suite"] == "tiny")
    assert 0 <= float(done["miou_low"]) <= float(done["miou"]) <= float(done["miou_high"])
    assert float(done["images_per_s"]) > 0 and done["images"] == "3"
    md = (out / "leaderboard.md").read_text()
    assert "## four" in md and "model segments 2 regions" in md and "Hungarian" in md
    for name in ("bars-tiny.png", "panel-tiny.png", "bars-four.png", "panel-four.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    cell_files = sorted((out / "cells").rglob("*.json"))
    mtimes = [p.stat().st_mtime_ns for p in cell_files]

    again = run_benchmark(["local-energy", str(run_dir)], suites, out, QUIET, report=False)
    assert [c.cached for c in again.cells if c.status == "done"] == [True, True, True]
    assert [p.stat().st_mtime_ns for p in cell_files] == mtimes
    assert again.cells[0].per_image == first.cells[0].per_image

    # another parameter is another cell; the old one stays
    third = run_benchmark(["local-energy"], suites[:1], out,
                          BenchmarkSettings({"local-energy": {"window": 2.0}}, progress=False), report=False)
    assert not third.cells[0].cached and len(list((out / "cells").rglob("*.json"))) == len(cell_files) + 1


class InterruptingSegmenter(LocalEnergy):
    """Sends this process SIGINT (as Ctrl-C does) from inside its first call."""

    name = "interrupting"
    calls = 0

    def segment(self, images, num_regions):
        InterruptingSegmenter.calls += 1
        if InterruptingSegmenter.calls == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return super().segment(images, num_regions)


def test_ctrl_c_keeps_finished_cells_and_a_rerun_completes(tmp_path):
    suites = [tiny_suite(tmp_path, "a", count=2), tiny_suite(tmp_path, "b", count=2)]
    out = tmp_path / "out"
    first = run_benchmark(["local-energy"], suites[:1], out, QUIET, report=False)
    assert first.cells[0].status == "done"
    seg = InterruptingSegmenter()
    stopped = run_benchmark([seg], suites, out, BenchmarkSettings(batch_size=1, progress=False), report=False)
    assert stopped.interrupted
    assert [c.status for c in stopped.cells] == ["pending", "pending"]
    assert "was stopped" in leaderboard_markdown(stopped)
    resumed = run_benchmark([seg, "local-energy"], suites, out, QUIET, report=False)
    assert not resumed.interrupted and all(c.status == "done" for c in resumed.cells)
    assert resumed.cells[2].cached  # local-energy on suite a, from the first run


@pytest.mark.parametrize(("args", "message"), [
    (["--segmenters", "nope"], "segmenter must be one of"),
    (["--segmenters", "local-energy", "--suites", "zzz"], "suite must be one of"),
    (["--segmenters", "local-energy", "--method-arg", "local-energy.window=abc"], "must be a number"),
    (["--segmenters", "local-energy", "--method-arg", "local-energy.nope=1"], "has no parameter 'nope'"),
    (["--segmenters", "local-energy", "--method-arg", "gabor-kmeans.alpha=1"], "not among the segmenters"),
    (["--segmenters", "local-energy", "--method-arg", "window=1"], "expected NAME.KEY=VALUE"),
])
def test_cli_bad_segmenter_suite_or_method_arg_is_one_line(capsys, tmp_path, args, message):
    code, out, err = run(capsys, "benchmark", *args, "--out", str(tmp_path / "out"), "--quiet")
    assert code == 2 and out == ""
    assert err.startswith("texseg: error: ") and message in err and err.count("\n") == 1


def test_cli_benchmark_segmenters_and_suites(capsys, tmp_path):
    suite = tiny_suite(tmp_path, count=2)
    code, out, _ = run(capsys, "benchmark", "--segmenters", "local-energy", "--suites", suite,
                       "--method-arg", "local-energy.window=3", "--out", str(tmp_path / "out"), "--quiet")
    assert code == 0 and "1 cells scored" in out and (tmp_path / "out" / "leaderboard.csv").is_file()
    code, out, _ = run(capsys, "segmenters")
    assert code == 0 and "gabor-kmeans" in out and "orientations" in out and "run directory" in out
    code, out, _ = run(capsys, "suites")
    assert code == 0 and "k4" in out and "real-texture mosaics" in out and "k2to5" in out


def test_registering_a_planned_suite_replaces_the_not_available_message(monkeypatch):
    from texseg.benchmark import suites as suites_module

    monkeypatch.setattr(suites_module, "_REGISTRY", dict(suites_module._REGISTRY))
    monkeypatch.setattr(suites_module, "_PLANNED", {"later": "not built yet"})
    with pytest.raises(ValueError, match="^suite 'later': not built yet"):
        resolve_suite("later")
    spec = SceneSpec(16, 4.0, (0.2, 1.0), 1.0)
    suites_module.register_suite("later", lambda: suites_module.Suite("later", "mosaics", 2, 2, spec, 9))
    assert resolve_suite("later").count == 2 and list_suites()["later"] == "mosaics"
    with pytest.raises(ValueError, match="^name must be a new non-empty suite name"):
        suites_module.register_suite("notebook", lambda: get_suite("notebook"))


def test_the_families_suite_is_leave_one_family_out_collages_with_k_per_image():
    from texseg.benchmark.suites import get_suite

    suite = get_suite("families")
    images, labels = suite.load("test")
    again, _ = suite.load("test")
    tune, _ = suite.load("tune", 4)
    assert images.shape == (64, 1, 128, 128) and torch.equal(images, again)
    assert not torch.equal(tune, images[:4])
    ks = suite.regions_per_image(labels)
    assert set(ks) <= {2, 3, 4} and len(set(ks)) > 1
    assert suite.describe()["collage"]["families"] == ["cells"]


def test_every_leaderboard_has_the_constant_baseline_bounded_intervals_and_one_vocabulary(capsys, tmp_path):
    from texseg.report import write_report

    out = tmp_path / "out"
    code, _, err = run(capsys, "benchmark", "--segmenters", "local-energy", "--suites", tiny_suite(tmp_path, count=4),
                       "--out", str(out))
    assert code == 0, err
    # Off a terminal: plain progress lines, never carriage-return bars.
    assert "\r" not in err and "image 4  100%" in err
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    floor = next(r for r in rows if r["segmenter"] == "one label everywhere")
    assert floor["suite"] == "tiny" and float(floor["accuracy"]) > 0 and float(floor["bf"]) == 0
    for r in rows:  # bounded metrics keep their intervals inside [0, 1], as the experiments do
        for m in ("miou", "accuracy", "bf", "are", "gce", "iou_0", "iou_1"):
            if r[f"{m}_low"]:
                assert 0 <= float(r[f"{m}_low"]) <= float(r[m]) <= float(r[f"{m}_high"]) <= 1, (r["segmenter"], m)
    md = (out / "leaderboard.md").read_text()
    assert "| **one label everywhere** |" in md and "boundary F ↑" in md and "inside [0, 1]" in md
    # The CLI wrote the one page, rendered from result.json: the leaderboard's rows, typed, with a schema version.
    assert (out / "report.html").is_file()
    data = json.loads((out / "result.json").read_text())
    assert data["schema_version"] == 1 and data["kind"] == "benchmark" and data["suites"][0]["name"] == "tiny"
    assert [r["segmenter"] for r in data["rows"]] == [r["segmenter"] for r in rows]
    assert data["rows"][0]["miou"] == rows[0]["miou"]
    html = (write_report(out)).read_text(encoding="utf-8")
    for name in ("mIoU ↑", "boundary F ↑", "adapted Rand err ↓", "VI ↓"):
        assert f"<th>{name}</th>" in html
    assert "<th>bf</th>" not in html and "<th>are</th>" not in html and "<th>note</th>" not in html
    assert "<td>one label everywhere</td>" in html


def test_run_benchmark_takes_settings_and_the_runner_writes_no_outputs(tmp_path):
    from texseg.benchmark import BenchmarkResult, score_benchmark

    suite = tiny_suite(tmp_path, count=2)
    scored = score_benchmark(["local-energy"], [suite], tmp_path / "a", QUIET)
    assert isinstance(scored, BenchmarkResult) and scored.cells[0].status == "done" and scored.baselines
    assert not (tmp_path / "a" / "leaderboard.csv").exists() and not (tmp_path / "a" / "result.json").exists()
    written = run_benchmark(["local-energy"], [suite], tmp_path / "a", QUIET)
    assert written.cells[0].cached and (tmp_path / "a" / "result.json").is_file()
    assert not (tmp_path / "a" / "report.html").exists()  # the page is the caller's (the CLI writes it)


def test_intervals_over_images_are_bootstrap_intervals_of_the_mean():
    """Skewed per-image scores: the logit t-interval (right for a few seeds) misses the mean; the bootstrap holds it."""
    from texseg.evaluation.stats import bootstrap_mean_ci, mean_ci

    scores = [0.99] * 60 + [0.2] * 4  # 60 images segmented, 4 failures
    mean = sum(scores) / len(scores)
    logit = mean_ci(scores, bounded=True)
    assert logit.low == pytest.approx(mean)  # its interval lies above the mean, widened only to reach it
    boot = bootstrap_mean_ci(scores, bounded=True)
    assert boot.mean == pytest.approx(mean) and boot.low < mean - 0.02 and mean < boot.high <= 0.99
    assert boot == bootstrap_mean_ci(scores, bounded=True)  # seeded: the same values, the same interval
    assert bootstrap_mean_ci([0.5] * 20).low == bootstrap_mean_ci([0.5] * 20).high == 0.5
    assert bootstrap_mean_ci([0.4, 0.6], bounded=True) == mean_ci([0.4, 0.6], bounded=True)  # too few: mean_ci
    assert bootstrap_mean_ci([]).n == 0
