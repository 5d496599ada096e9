"""The texture-agnostic path: procedural collages, the discriminative loss, grouping, train-general, texnet use."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import cores_freed_after_the_start, run_main
from texseg.data.procedural import FAMILIES, CollageSpec, family_texture, generate_collage
from texseg.evaluation.region_metrics import region_metrics
from texseg.inference.embedding import segment_embedded
from texseg.inference.grouping import GABOR_WEIGHT, GroupOptions, cluster_embeddings, reference_mask, with_gabor
from texseg.models.texnet import TextureEmbeddingNet
from texseg.training.general import GeneralCallback, GeneralConfig, discriminative_loss, train_general
from texseg.training.state import Stop

# threads=1: sums split over another number of threads differ in the last bit, and texseg would choose the count
# by the load of the moment (runs below are compared bit for bit)
TINY = {"width": 8, "dilations": (1, 2), "image_size": 32, "batch_size": 2, "val_size": 2, "holdout": None,
        "threads": 1}


# ---------------------------------------------------------------- procedural collages

@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gives_a_finite_standardised_texture_reproducible_by_seed(family):
    a = family_texture(family, 64, torch.Generator().manual_seed(3))
    b = family_texture(family, 64, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()
    assert abs(float(a.mean())) < 1e-4 and abs(float(a.std()) - 1) < 1e-3


def test_collages_are_seed_exact_with_consecutive_labels_and_k_in_range():
    spec = CollageSpec(64, min_regions=2, max_regions=6)
    images, labels = generate_collage(spec, 12, generator=torch.Generator().manual_seed(0))
    again, labels2 = generate_collage(spec, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(images, again) and torch.equal(labels, labels2)
    assert images.shape == labels.shape == (12, 1, 64, 64)
    assert float(images.amin()) == 0.0 and float(images.amax()) == 1.0
    ks = []
    for lab in labels:
        present = torch.unique(lab)
        assert torch.equal(present, torch.arange(len(present)))  # 0..K-1, none missing
        ks.append(len(present))
    assert min(ks) >= 1 and max(ks) <= 6 and len(set(ks)) > 1
    # every region is at least min_area of the image
    for lab in labels:
        assert int(torch.bincount(lab.flatten()).min()) >= int(spec.min_area * 64 * 64)


def test_an_excluded_family_is_never_drawn_and_bad_specs_name_the_field():
    spec = CollageSpec(32, families=("gaussian", "cells"), exclude=("cells",))
    assert spec.drawn_families == ("gaussian",)
    with pytest.raises(ValueError, match="families: unknown 'marble'"):
        CollageSpec(families=("marble",))
    with pytest.raises(ValueError, match="every family is excluded"):
        CollageSpec(families=("cells",), exclude=("cells",))
    with pytest.raises(ValueError, match="max_regions"):
        CollageSpec(min_regions=3, max_regions=9)


# ---------------------------------------------------------------- the loss

def test_discriminative_loss_ignores_label_numbers_and_is_zero_for_separated_tight_clusters():
    torch.manual_seed(0)
    labels = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    labels[:, :, :, 4:] = 1
    labels[1, :, :4, :] = 2
    emb = torch.randn(2, 4, 8, 8, requires_grad=True)
    swapped = torch.where(labels == 0, 1, torch.where(labels == 1, 0, labels))
    a, b = discriminative_loss(emb, labels), discriminative_loss(emb, swapped)
    assert torch.allclose(a, b)
    a.backward()
    assert torch.isfinite(emb.grad).all() and float(emb.grad.abs().sum()) > 0
    # embeddings exactly at well-separated centres: pull and push are 0, only the small norm term is left
    centres = torch.tensor([[0.0, 0, 0, 0], [4, 0, 0, 0], [0, 4, 0, 0]])
    perfect = centres[labels[:, 0]].permute(0, 3, 1, 2)
    assert float(discriminative_loss(perfect, labels, reg_weight=0.0)) < 1e-6
    assert float(discriminative_loss(torch.zeros_like(perfect), labels, reg_weight=0.0)) > 1.0


# ---------------------------------------------------------------- grouping

def _blobs(k: int, n: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Embeddings of a k-region image (stripes, wide enough that boundary pixels are few), plus noise."""
    n = n or 48 * k
    gen = torch.Generator().manual_seed(k)
    truth = np.zeros((n, n), dtype=np.int64)
    for r in range(1, k):
        truth[:, r * n // k:] = r
    centres = torch.randn(k, 6, generator=gen) * 3
    emb = centres[torch.from_numpy(truth)].permute(2, 0, 1) + 0.1 * torch.randn(6, n, n, generator=gen)
    return emb, truth


@pytest.mark.parametrize("k", [2, 3, 5])
def test_grouping_finds_the_regions_with_k_given_and_with_k_estimated(k):
    emb, truth = _blobs(k)
    given = cluster_embeddings(emb, k).numpy()
    assert region_metrics(truth, given, k)["miou"] > 0.95
    estimated = cluster_embeddings(emb, None).numpy()
    assert len(np.unique(estimated)) == k
    assert region_metrics(truth, estimated, k)["miou"] > 0.95



def _two_gaussian_textures(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A left/right image of two stationary textures of different frequency, and its truth."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    truth = np.zeros((n, n), dtype=np.int64)
    truth[:, n // 2:] = 1
    coarse = ndimage.gaussian_filter(rng.standard_normal((n, n)), 3.0)
    fine = ndimage.gaussian_filter(rng.standard_normal((n, n)), 0.7)
    image = np.where(truth == 0, coarse / coarse.std(), fine / fine.std())
    return image, truth


def test_gabor_energies_beside_drifting_embeddings_keep_a_stationary_texture_together():
    # Embeddings whose strongest variation is a drift across the image (top to bottom), with
    # a weak region signal: k-means on them alone splits the drift. The image's Gabor
    # energies tell the two textures apart, so set beside the embeddings they find the regions.
    image, truth = _two_gaussian_textures()
    n = truth.shape[0]
    ramp = torch.linspace(-1.5, 1.5, n)[:, None].expand(n, n)
    emb = torch.stack([ramp, torch.from_numpy(truth).float()])
    alone = cluster_embeddings(emb, 2).numpy()
    assert region_metrics(truth, alone, 2)["miou"] < 0.6
    features = with_gabor(emb, image, 1.0)
    assert features.shape == (2 + 12, n, n) and features.dtype == torch.float32
    both = cluster_embeddings(features, 2).numpy()
    assert region_metrics(truth, both, 2)["miou"] > 0.8
    # weight 0: the standardised embeddings alone, grouped as the embeddings are
    assert with_gabor(emb, image, 0).shape == emb.shape
    assert np.array_equal(cluster_embeddings(with_gabor(emb, image, 0), 2).numpy(), alone)
    with pytest.raises(ValueError, match="gabor_weight"):
        with_gabor(emb, image, -1)
    with pytest.raises(ValueError, match="image must have the embeddings' size"):
        with_gabor(emb, image[:50])


def test_gabor_kmeans_and_the_hybrid_grouping_share_one_filter_bank():
    from texseg.inference.gabor import gabor_energies
    from texseg.segmenters.classical import GaborKMeans

    image, _ = _two_gaussian_textures(64)
    energies = gabor_energies(image)
    assert energies.shape == (12, 64, 64)
    features = GaborKMeans(coordinates=0.0).features(image)
    standardised = (energies.reshape(12, -1).T - energies.reshape(12, -1).mean(1)) / energies.reshape(12, -1).std(1)
    assert np.allclose(features, standardised)
    assert np.allclose(gabor_energies(image, dtype=np.float32), energies, atol=1e-4)


def test_one_shot_sets_the_gabor_energies_of_image_and_reference_strip_beside_the_embeddings():
    from texseg.inference.embedding import embed_with_reference

    net = TextureEmbeddingNet(width=8, dilations=(1, 2), embedding_dim=4)
    image, truth = _two_gaussian_textures(64)
    patch = image[20:44, 40:64]  # inside region 1
    emb, ref = embed_with_reference(net, image, patch)
    assert emb.shape == (4, 64, 64) and ref.shape == (4,)
    feats, ref_feats = embed_with_reference(net, image, patch, gabor_weight=0.5)
    assert feats.shape == (4 + 12, 64, 64) and ref_feats.shape == (16,)
    # the reference strip is the fine texture: its Gabor energies are those of region 1, not region 0
    g = feats[4:].reshape(12, -1)
    right, left = g[:, truth.ravel() == 1].mean(1), g[:, truth.ravel() == 0].mean(1)
    assert (ref_feats[4:] - right).norm() < (ref_feats[4:] - left).norm()
    with pytest.raises(ValueError, match="reference_gabor_weight"):
        GroupOptions(reference_gabor_weight=-0.5)
    with pytest.raises(ValueError, match="seed"):
        GroupOptions(seed=-1)


def test_the_cli_default_gabor_weight_is_the_librarys():
    from texseg.cli.predict import predict

    (option,) = [p for p in predict.params if p.name == "gabor_weight"]
    assert option.default == GABOR_WEIGHT


def test_k_estimated_keeps_a_small_but_valid_region():
    # A region of 4% of the image (above MIN_AREA), well apart from the others, is a region:
    # the K-free rule must count it, not fold it into its neighbour.
    n = 160
    truth = np.zeros((n, n), dtype=np.int64)
    truth[:, 77:] = 1
    truth[:, 154:] = 2  # 6 columns of 160: 3.75%
    gen = torch.Generator().manual_seed(3)
    centres = torch.randn(3, 6, generator=gen) * 3
    emb = centres[torch.from_numpy(truth)].permute(2, 0, 1) + 0.1 * torch.randn(6, n, n, generator=gen)
    estimated = cluster_embeddings(emb, None).numpy()
    assert len(np.unique(estimated)) == 3
    assert region_metrics(truth, estimated, 3)["miou"] > 0.95

def test_reference_mask_marks_where_the_reference_texture_is():
    emb, truth = _blobs(3)
    patch = emb[:, 10:30, 2:14]  # inside region 0
    mask = reference_mask(emb, patch).numpy()
    assert (mask == (truth == 0)).mean() > 0.95
    with pytest.raises(ValueError, match="embedding dimensions"):
        reference_mask(emb, torch.zeros(3))



def test_reference_mask_finds_the_region_when_the_reference_lands_off_its_mean():
    # A patch embedded beside the image lands off its region's mean (on real photos by about as
    # much as two regions' means are apart): here 40% of the way towards region 1, and off the
    # plane of the three means. Otsu on the distance to that point alone puts region 1 with
    # region 0; re-centring on the image's nearest pixels first finds region 0 alone.
    n = 144
    truth = np.zeros((n, n), dtype=np.int64)
    truth[:, n // 3:] = 1
    truth[:, 2 * n // 3:] = 2
    centres = torch.zeros(3, 6)
    centres[1, 0] = 3.0
    centres[2, 0], centres[2, 1] = 1.5, 3.0 * 3 ** 0.5 / 2  # the three means 3 apart
    gen = torch.Generator().manual_seed(0)
    emb = centres[torch.from_numpy(truth)].permute(2, 0, 1) + 0.1 * torch.randn(6, n, n, generator=gen)
    off = centres[0] + 0.4 * (centres[1] - centres[0])
    off[3] = 1.5
    mask = reference_mask(emb, off).numpy()
    assert (mask == (truth == 0)).mean() > 0.95

def test_texnet_maps_any_size_to_embeddings_and_checks_its_input():
    net = TextureEmbeddingNet(width=8, dilations=(1, 2), embedding_dim=4)
    assert net(torch.rand(2, 1, 40, 56)).shape == (2, 4, 40, 56)
    assert net(torch.rand(1, 1, 33, 17)).shape == (1, 4, 33, 17)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="width"):
        TextureEmbeddingNet(width=2)


# ---------------------------------------------------------------- train-general

def test_a_tiny_recipe_learns_writes_its_run_and_resumes_exactly(tmp_path):
    config = GeneralConfig(steps=6, eval_every=3, seed=1, **TINY)
    full = train_general(config, tmp_path / "full")
    assert full.status == "completed" and full.steps == 6
    for name in ("config.json", "model.json", "model.safetensors", "metrics.csv", "summary.json", "resume.pt",
                 "best/model.safetensors"):
        assert (tmp_path / "full" / name).is_file(), name
    rows = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert [r["step"] for r in rows] == [3, 6]
    assert all(0 <= r["collages"] <= 1 for r in rows)
    # stopped after 3 steps, then resumed to 6: the same weights as the uninterrupted run
    half = train_general(GeneralConfig(steps=6, eval_every=3, seed=1, time_budget=1e-9, **TINY), tmp_path / "half")
    assert half.status == "stopped" and half.steps == 1
    resumed = train_general(config, tmp_path / "half", resume=True)
    assert resumed.steps == 6
    from texseg.checkpoint import load_model

    a, b = load_model(tmp_path / "full"), load_model(tmp_path / "half")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


class _Recorder(GeneralCallback):
    """Records the events it is told of; stops the run at its ``stop_at``-th validation."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[tuple] = []
        self.stop_at = stop_at

    def on_start(self, state):
        self.events.append(("start", state.step))

    def on_evaluation(self, state, evaluation):
        self.events.append(("evaluation", evaluation.step, evaluation.improved))
        assert evaluation.row == state.rows[-1] and set(evaluation.metrics) == {"collages", "score"}
        assert evaluation.images == 2
        n = sum(e[0] == "evaluation" for e in self.events)
        return Stop(f"enough after {n}") if n == self.stop_at else None

    def on_end(self, state, result):
        self.events.append(("end", result.status, result.steps))

    def close(self):
        self.events.append(("close",))


def test_train_general_tells_its_callbacks_and_a_callbacks_stop_ends_the_run_checkpointed(tmp_path):
    rec = _Recorder(stop_at=2)
    result = train_general(GeneralConfig(steps=10, eval_every=2, **TINY), tmp_path / "r", callbacks=[rec])
    assert result.status == "completed" and result.steps == 4 and result.message == "enough after 2"
    assert rec.events[0] == ("start", 0) and [e[1] for e in rec.events if e[0] == "evaluation"] == [2, 4]
    assert rec.events[-2:] == [("end", "completed", 4), ("close",)]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["message"] == "enough after 2"
    assert 0 < summary["cpu_share"] <= 1.5
    # resuming the finished run trains nothing: the summary keeps the share it measured
    again = train_general(GeneralConfig(steps=4, eval_every=2, **TINY), tmp_path / "r", resume=True, callbacks=[])
    assert again.steps == 4 and again.cpu_share == summary["cpu_share"]
    # callbacks=[]: nothing besides the run itself -- no best/ (the KeepBestEmbeddings default writes it)
    assert not (tmp_path / "r" / "best").exists() and (tmp_path / "r" / "resume.pt").is_file()
    # close is called also when training raises
    boom = _Recorder()
    boom.on_evaluation = lambda state, evaluation: 1 / 0
    with pytest.raises(ZeroDivisionError):
        train_general(GeneralConfig(steps=2, eval_every=1, **TINY), tmp_path / "b", callbacks=[boom])
    assert boom.events[-1] == ("close",)


def test_early_stop_stops_a_run_whose_validation_score_stops_improving(tmp_path, capsys):
    # a learning rate so small that float32 weights do not change: every validation scores the same
    common = ["--steps", "20", "--eval-every", "1", "--lr", "1e-12", "--width", "8", "--dilations", "1,2",
              "--image-size", "32", "--batch-size", "2", "--val-size", "2", "--holdout", "none"]
    code, out, err = run_main(capsys, "train-general", "--out", str(tmp_path / "r"), "--early-stop", "2", *common)
    assert code == 0, err
    assert "stopped early after step 3: no better validation score in 2 validations" in out
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["steps"] == 3
    assert (tmp_path / "r" / "best" / "model.safetensors").is_file()
    code, _, err = run_main(capsys, "train-general", "--out", str(tmp_path / "s"), "--early-stop", "0", *common)
    assert code == 2 and "--early-stop must be" in err and not (tmp_path / "s").exists()
    for source in ("texseg:nope", str(tmp_path / "r" / "nothing-here")):
        code, _, err = run_main(capsys, "train-general", "--out", str(tmp_path / "s"), "--init-from", source, *common)
        assert code == 2 and err.startswith("texseg: error: --init-from: ") and not (tmp_path / "s").exists(), err


def test_early_stop_counts_only_the_scheduled_validations():
    from types import SimpleNamespace

    from texseg.training.general import GeneralEarlyStopping

    def decide(rows):
        state = SimpleNamespace(config=SimpleNamespace(eval_every=2), rows=rows)
        evaluation = SimpleNamespace(step=rows[-1]["step"])
        return GeneralEarlyStopping(2).on_evaluation(state, evaluation)

    rows = [{"step": 2, "score": 0.5}, {"step": 4, "score": 0.4}]
    assert decide(rows) is None  # one validation without a better score
    # an extra validation taken when a stop interrupted the run (step 5, better) changes nothing
    stop = decide([*rows, {"step": 5, "score": 0.9}, {"step": 6, "score": 0.45}])
    assert stop is not None and stop.reason.endswith("in 2 validations (best 0.5000 at step 2)")
    assert decide([*rows, {"step": 6, "score": 0.5}]) is not None  # equal is not better


def test_train_general_refuses_an_existing_run_and_a_changed_resume(tmp_path):
    train_general(GeneralConfig(steps=1, eval_every=1, **TINY), tmp_path / "r")
    with pytest.raises(ValueError, match="run_dir: .* already holds a run"):
        train_general(GeneralConfig(steps=1, eval_every=1, **TINY), tmp_path / "r")
    with pytest.raises(ValueError, match="resume: lr differ"):
        train_general(GeneralConfig(steps=2, eval_every=1, lr=0.1, **TINY), tmp_path / "r", resume=True)
    with pytest.raises(ValueError, match="holdout must be one of"):
        GeneralConfig(holdout="marble")


def test_a_train_general_run_is_a_segmenter_for_any_k_and_predict_writes_its_masks(tmp_path, capsys):
    from texseg.segmenters import load_segmenter

    train_general(GeneralConfig(steps=2, eval_every=2, **TINY), tmp_path / "run")
    seg = load_segmenter(str(tmp_path / "run"))
    images, _ = generate_collage(CollageSpec(32), 3, generator=torch.Generator().manual_seed(0))
    for k in (2, 4):
        labels = seg.segment(images, k)
        assert labels.shape == images.shape and labels.dtype == torch.long
        assert int(labels.max()) <= k - 1
    assert seg.estimate(images).shape == images.shape
    assert set(torch.unique(seg.find(images, images[:1, :, :8, :8])).tolist()) <= {0, 1}
    assert seg.describe()["model"] == "texnet" and seg.describe()["gabor_weight"] == GABOR_WEIGHT
    # K given: the embeddings alone by default; gabor_weight=1 sets the Gabor energies beside them
    assert GABOR_WEIGHT == 0
    hybrid = load_segmenter(str(tmp_path / "run"), gabor_weight=1)
    emb = seg.embeddings(images)
    assert torch.equal(seg.segment(images, 3)[:, 0], torch.stack([cluster_embeddings(e, 3) for e in emb]))
    assert torch.equal(hybrid.segment(images, 3)[:, 0], torch.stack([cluster_embeddings(with_gabor(e, i[0], 1), 3)
                                                                    for e, i in zip(emb, images)]))
    with pytest.raises(ValueError, match="takes batch_size, gabor_weight, reference_gabor_weight, seed"):
        load_segmenter(str(tmp_path / "run"), window=3)
    # the CLI: predict with K given, refused options, a clear error for a bad K
    from PIL import Image

    Image.fromarray((images[0, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / "a.png")
    code, out, err = run_main(capsys, "predict", str(tmp_path / "run"), str(tmp_path / "a.png"),
                              "--out", str(tmp_path / "out"), "--regions", "3", "--quiet")
    assert code == 0, err
    mask = np.asarray(Image.open(tmp_path / "out" / "a.mask.png"))
    assert mask.shape == (32, 32) and mask.max() <= 2
    assert not (tmp_path / "out" / "a.prob.npy").exists()
    Image.fromarray((images[1, 0, :16, :16].numpy() * 255).astype(np.uint8)).save(tmp_path / "patch.png")
    code, out, err = run_main(capsys, "predict", str(tmp_path / "run"), str(tmp_path / "a.png"),
                              "--out", str(tmp_path / "one"), "--reference", str(tmp_path / "patch.png"), "--quiet")
    assert code == 0, err
    assert set(np.unique(np.asarray(Image.open(tmp_path / "one" / "a.mask.png")))) <= {0, 1}
    code, out, err = run_main(capsys, "predict", str(tmp_path / "run"), str(tmp_path / "a.png"),
                              "--out", str(tmp_path / "o2"), "--regions", "9")
    assert code == 2 and "--regions" in err and "Traceback" not in err
    code, out, err = run_main(capsys, "predict", str(tmp_path / "run"), str(tmp_path / "a.png"),
                              "--out", str(tmp_path / "o3"), "--regions", "3", "--gabor-weight", "-1")
    assert code == 2 and "--gabor-weight" in err and "Traceback" not in err and not (tmp_path / "o3").exists()
    # options that would be silently ignored are refused, before anything is written
    for extra, names in ((["--regions", "3", "--reference", str(tmp_path / "patch.png")], ("--regions", "--reference")),
                         (["--gabor-weight", "1"], ("--gabor-weight", "--regions")),
                         (["--reference", str(tmp_path / "patch.png"), "--gabor-weight", "1"], ("--gabor-weight",))):
        code, out, err = run_main(capsys, "predict", str(tmp_path / "run"), str(tmp_path / "a.png"),
                                  "--out", str(tmp_path / "o5"), *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert all(n in err for n in names) and not (tmp_path / "o5").exists()
    code, out, err = run_main(capsys, "predict", str(tmp_path / "run"), str(tmp_path / "a.png"),
                              "--out", str(tmp_path / "o4"), "--regions", "3", "--gabor-weight", "1", "--quiet")
    assert code == 0, err
    beside = segment_embedded(seg.model, np.asarray(Image.open(tmp_path / "a.png"), dtype=np.float32), regions=3,
                              options=GroupOptions(gabor_weight=1))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o4" / "a.mask.png")), beside)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a.mask.png")),
                          segment_embedded(seg.model, np.asarray(Image.open(tmp_path / "a.png"), dtype=np.float32),
                                           regions=3))


def test_fine_tuning_starts_from_the_given_weights_and_learns_from_a_folder(tmp_path):
    from PIL import Image

    from texseg.checkpoint import load_model

    images, labels = generate_collage(CollageSpec(48, max_regions=3), 4, generator=torch.Generator().manual_seed(2))
    (tmp_path / "own" / "images").mkdir(parents=True)
    (tmp_path / "own" / "labels").mkdir()
    for i in range(4):
        Image.fromarray((images[i, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / "own" / "images" / f"{i}.png")
        Image.fromarray(labels[i, 0].numpy().astype(np.uint8)).save(tmp_path / "own" / "labels" / f"{i}.png")
    train_general(GeneralConfig(steps=2, eval_every=2, seed=3, **TINY), tmp_path / "base")
    tuned = train_general(GeneralConfig(steps=1, eval_every=1, lr=1e-12, data=str(tmp_path / "own"),
                                        init_from=str(tmp_path / "base"), **TINY), tmp_path / "tuned")
    assert "data" in tuned.last_validation
    a, b = load_model(tmp_path / "base"), load_model(tmp_path / "tuned")
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6)
    with pytest.raises(ValueError, match="init_from: .* is not a texnet with the settings"):
        train_general(GeneralConfig(steps=1, init_from=str(tmp_path / "base"), **{**TINY, "width": 16}),
                      tmp_path / "wide")


# ---------------------------------------------------------------- the shipped model

def test_the_shipped_general_model_loads_offline_and_scores_what_its_card_says(capsys):
    import texseg
    from texseg.benchmark.suites import get_suite
    from texseg.models.pretrained import list_pretrained
    from texseg.segmenters import load_segmenter

    assert "general" in list_pretrained()
    model = texseg.load_pretrained("general")
    card = model.run_info["card"]
    assert isinstance(model, TextureEmbeddingNet) and card["architecture"] == "texnet"
    assert card["recipe"].startswith("texseg train-general") and card["training"]["commit"]
    # the card's notebook-suite score, recomputed here on the same 64 images
    seg = load_segmenter("texseg:general")
    images, labels = get_suite("notebook").load("test")
    pred = seg.segment(images, 2)
    miou = np.mean([region_metrics(t[0].numpy(), p[0].numpy(), 2)["miou"] for t, p in zip(labels, pred)])
    assert abs(miou - card["scores"]["notebook"]["texseg:general"]["miou"]) < 0.01
    code, out, _ = run_main(capsys, "models")
    assert code == 0 and "texseg:general" in out


def test_gaussian_scenes_are_the_notebooks_kind_of_scene_inside_the_collage_stream():
    spec = CollageSpec(64, max_regions=3, gaussian_scenes=1.0)
    images, labels = generate_collage(spec, 4, generator=torch.Generator().manual_seed(5))
    again, _ = generate_collage(spec, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(images, again)
    assert float(images.amin()) == 0.0 and float(images.amax()) == 1.0
    # smoothed noise of different widths: the regions differ in local variance, not in mean level
    diffs = images[..., 1:] - images[..., :-1]
    for img, lab in zip(diffs, labels[..., 1:]):
        spreads = [float(img[lab == r].std()) for r in torch.unique(lab)]
        assert max(spreads) > 1.1 * min(spreads)
    with pytest.raises(ValueError, match="gaussian_scenes"):
        CollageSpec(gaussian_scenes=1.5)


def _window_spread(images: torch.Tensor, labels: torch.Tensor, window: int = 16) -> float:
    """Mean over regions of the relative spread of the local deviation across the region's windows."""
    spreads = []
    for img, lab in zip(images[:, 0], labels[:, 0]):
        for r in torch.unique(lab):
            local = [float(img[y:y + window, x:x + window].std())
                     for y in range(0, img.shape[0], window) for x in range(0, img.shape[1], window)
                     if bool((lab[y:y + window, x:x + window] == r).all())]
            if len(local) >= 4:
                spreads.append(np.std(local) / np.mean(local))
    return float(np.mean(spreads))


def test_nonstationary_regions_drift_across_the_image_and_zero_keeps_every_seeds_scenes():
    base = dict(image_size=128, max_regions=2, families=("gaussian",), partitions=("voronoi",), augment=False)
    seeded = [generate_collage(CollageSpec(**base, nonstationary=p), 8, generator=torch.Generator().manual_seed(3))
              for p in (0.0, 1.0)]
    default = generate_collage(CollageSpec(**base), 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(seeded[0][0], default[0]) and torch.equal(seeded[0][1], default[1])
    assert not torch.equal(seeded[1][0], default[0])
    # the draws of texseg 0b41a03 (before nonstationary existed): after 4 collages of each spec,
    # the generator's next number and the sum of the labels
    before = [(647281125, 21335), (485679368, 20163), (220392275, 31199)]
    for kw, (after, label_sum) in zip(({}, {"gaussian_scenes": 0.5}, {"color": True, "max_regions": 8}), before):
        g = torch.Generator().manual_seed(11)
        _, lab = generate_collage(CollageSpec(64, **kw), 4, generator=g)
        assert (int(torch.randint(0, 2**31 - 1, (), generator=g)), int(lab.sum())) == (after, label_sum), kw
    images, labels = seeded[1]
    assert float(images.amin()) == 0.0 and float(images.amax()) == 1.0 and images.isfinite().all()
    # one stationary texture per region: its local contrast is the same everywhere; shaded and in
    # perspective, it varies across the region
    assert _window_spread(*seeded[1]) > 1.5 * _window_spread(*seeded[0])
    with pytest.raises(ValueError, match="nonstationary must be a fraction"):
        CollageSpec(nonstationary=-0.1)
    with pytest.raises(ValueError, match="nonstationary must be a fraction"):
        GeneralConfig(nonstationary=2)


def test_a_reference_patch_that_cannot_be_read_names_the_option(tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "patch.png").write_text("not an image")
    for patch in (tmp_path / "missing.png", tmp_path / "patch.png"):
        code, _, err = run_main(capsys, "predict", "texseg:general", str(tmp_path / "a.png"), "--out",
                                str(tmp_path / "out"), "--reference", str(patch))
        assert code == 2 and err.startswith(f"texseg: error: --reference: {patch}"), err
        assert not (tmp_path / "out").exists()


def test_a_bad_data_folder_names_its_option_and_leaves_no_half_made_run(tmp_path, capsys):
    (tmp_path / "folder" / "images").mkdir(parents=True)
    for option in ("--data", "--val-data"):
        code, _, err = run_main(capsys, "train-general", "--out", str(tmp_path / "run"), option,
                                str(tmp_path / "folder"), "--steps", "1", "--width", "8", "--dilations", "1")
        assert code == 2 and err.startswith(f"texseg: error: {option}: 1 problem(s) in "), err
        assert not (tmp_path / "run").exists()  # so the same command works once the folder is fixed


def test_train_general_follows_the_free_cores_when_texseg_chooses_its_threads(tmp_path, monkeypatch):
    from texseg.training import general
    from texseg.workers import available_cores

    cores_freed_after_the_start(monkeypatch, general)
    before = torch.get_num_threads()
    try:
        result = train_general(GeneralConfig(steps=3, eval_every=3, **{**TINY, "threads": None}), tmp_path / "r",
                               callbacks=[])
        fixed = train_general(GeneralConfig(steps=3, eval_every=3, **TINY), tmp_path / "f", callbacks=[])
    finally:
        torch.set_num_threads(before)
    assert any(n.startswith(f"other programs shared the cores: torch threads 1 at the start, {available_cores()} "
                            "from step 2") for n in result.notes)
    assert not any("shared the cores" in n for n in fixed.notes)  # --threads fixes the count
