"""Classical texture segmenters built from scikit-image, SciPy and scikit-learn pieces.

- ``local-energy``: energy of a band-pass (difference of Gaussians) response, smoothed,
  log; Otsu's threshold for two regions, k-means for K (unsupervised).
- ``gabor-kmeans``: Jain & Farrokhnia (1991): a Gabor filter bank, a saturating tanh
  non-linearity, the mean absolute value in a Gaussian window proportional to each
  filter's period, per-feature standardisation, optional pixel coordinates, k-means
  (unsupervised).
- ``random-forest``: scikit-image's trainable segmenter -- a random forest on
  ``multiscale_basic_features`` (supervised: it is fitted on labelled training images,
  which the benchmark draws from the suite's scene with another seed).

Unsupervised methods return arbitrary label numbers; score them after matching. Every
method is deterministic (its ``seed`` fixes k-means / the forest). Defaults were chosen on
tuning suites (``texseg.benchmark.suites``, split ``"tune"``), see ``docs/benchmark.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import ndimage
from skimage.feature import multiscale_basic_features
from skimage.filters import difference_of_gaussians, threshold_otsu
from skimage.future import fit_segmenter, predict_segmenter
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier
from threadpoolctl import threadpool_limits
from torch import Tensor

from texseg._validate import check_int, check_positive
from texseg.inference.gabor import DEFAULT_FREQUENCIES, DEFAULT_ORIENTATIONS, gabor_bank, gabor_energies
from texseg.segmenters.base import Segmenter, as_channels, check_images, register_segmenter

__all__ = ["GaborKMeans", "LocalEnergy", "RandomForest"]


def _param(default: Any, help_: str) -> Any:
    return field(default=default, metadata={"help": help_})


def _per_image(images: Tensor, segment_one: Callable[[np.ndarray], np.ndarray]) -> Tensor:
    """Apply ``segment_one`` ((H, W) float64 -> (H, W) int labels) to each image of a batch.

    Colour images are segmented on their luminance (:func:`~texseg.segmenters.base.as_channels`):
    the classical methods are texture-energy methods of one channel.
    """
    arrays = as_channels(images, 1).detach().to("cpu", torch.float64).numpy()[:, 0]
    labels = np.stack([segment_one(a) for a in arrays])[:, None]
    return torch.from_numpy(labels.astype(np.int64)).to(images.device)


def _kmeans(features: np.ndarray, k: int, seed: int, sample: int) -> np.ndarray:
    """K-means labels of (P, F) ``features``, fitted on at most ``sample`` random rows."""
    rng = np.random.default_rng(seed)
    fit_rows = features if len(features) <= sample else features[rng.choice(len(features), sample, replace=False)]
    # One thread: on a few thousand rows OpenMP start-up and contention cost 10x the work.
    with threadpool_limits(1):
        km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(fit_rows)
        return km.predict(features)


def _standardise(features: np.ndarray) -> np.ndarray:
    std = features.std(axis=0)
    return (features - features.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _check_floats(name: str, values: object) -> tuple[float, ...]:
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"{name} must be a non-empty list of numbers > 0, got {values!r}")
    return tuple(check_positive(f"{name}[{i}]", v) for i, v in enumerate(values))


@register_segmenter("local-energy", "energy of a difference-of-Gaussians response, smoothed; Otsu (K=2) or k-means")
@dataclass(eq=False)
class LocalEnergy(Segmenter):
    """Local band-pass energy: ``log(G_window * (DoG_scale(image))^2)``, then Otsu or k-means."""
    name: ClassVar[str] = "local-energy"
    scale: float = _param(0.3, "low sigma of the difference of Gaussians (high sigma = 1.6 x)")
    window: float = _param(4.0, "sigma of the Gaussian window that averages the energy")
    seed: int = _param(0, "seed of k-means (K > 2)")

    def __post_init__(self) -> None:
        self.scale = check_positive("local-energy.scale", self.scale)
        self.window = check_positive("local-energy.window", self.window)
        self.seed = check_int("local-energy.seed", self.seed, minimum=0, maximum=2**32 - 1)

    def feature(self, image: np.ndarray) -> np.ndarray:
        """(H, W) log local energy."""
        response = difference_of_gaussians(image, self.scale, 1.6 * self.scale, mode="reflect")
        return np.log(ndimage.gaussian_filter(response**2, self.window, mode="reflect") + 1e-12)

    def segment(self, images: Tensor, num_regions: int) -> Tensor:
        k = check_images(images, num_regions)

        def one(image: np.ndarray) -> np.ndarray:
            energy = self.feature(image)
            if k == 2:
                return (energy > threshold_otsu(energy)).astype(np.int64)
            return _kmeans(energy.reshape(-1, 1), k, self.seed, 4096).reshape(image.shape)

        return _per_image(images, one)


@register_segmenter("gabor-kmeans", "Jain & Farrokhnia: Gabor bank, tanh, Gaussian windows, k-means")
@dataclass(eq=False)
class GaborKMeans(Segmenter):
    """Gabor filter-bank features clustered with k-means (Jain & Farrokhnia 1991)."""
    name: ClassVar[str] = "gabor-kmeans"
    frequencies: tuple[float, ...] = _param(DEFAULT_FREQUENCIES, "filter frequencies, cycles per pixel")
    orientations: int = _param(DEFAULT_ORIENTATIONS, "orientations per frequency, evenly spaced over 180 degrees")
    bandwidth: float = _param(1.0, "frequency bandwidth of each filter, octaves")
    alpha: float = _param(1.0, "slope of the tanh non-linearity, per standardised response")
    smoothing: float = _param(1.0, "Gaussian window sigma as a multiple of each filter's period 1/f")
    coordinates: float = _param(0.5, "weight of the (standardised) pixel coordinates as features; 0: none")
    seed: int = _param(0, "seed of k-means")

    def __post_init__(self) -> None:
        self.frequencies = _check_floats("gabor-kmeans.frequencies", self.frequencies)
        if max(self.frequencies) > 0.5:
            raise ValueError(f"gabor-kmeans.frequencies must be <= 0.5 cycles per pixel, got {self.frequencies}")
        self.orientations = check_int("gabor-kmeans.orientations", self.orientations, minimum=1, maximum=32)
        self.bandwidth = check_positive("gabor-kmeans.bandwidth", self.bandwidth)
        self.alpha = check_positive("gabor-kmeans.alpha", self.alpha)
        self.smoothing = check_positive("gabor-kmeans.smoothing", self.smoothing)
        self.coordinates = check_positive("gabor-kmeans.coordinates", self.coordinates, allow_zero=True)
        self.seed = check_int("gabor-kmeans.seed", self.seed, minimum=0, maximum=2**32 - 1)

    def kernels(self) -> tuple[tuple[float, np.ndarray], ...]:
        """(frequency, real Gabor kernel) for every filter of the bank."""
        return gabor_bank(self.frequencies, self.orientations, self.bandwidth)

    def features(self, image: np.ndarray) -> np.ndarray:
        """(H * W, F) standardised features of one (H, W) image."""
        h, w = image.shape
        energies = gabor_energies(image, self.kernels(), alpha=self.alpha, smoothing=self.smoothing)
        feats = list(energies.reshape(len(energies), -1))
        if self.coordinates > 0:
            yy, xx = np.mgrid[0:h, 0:w]
            feats += [yy.ravel().astype(np.float64), xx.ravel().astype(np.float64)]
        out = _standardise(np.stack(feats, axis=1))
        if self.coordinates > 0:
            out[:, -2:] *= self.coordinates
        return out

    def segment(self, images: Tensor, num_regions: int) -> Tensor:
        k = check_images(images, num_regions)
        return _per_image(images, lambda im: _kmeans(self.features(im), k, self.seed, 4096).reshape(im.shape))


@register_segmenter("random-forest", "SUPERVISED: scikit-image trainable segmenter, random forest on "
                                     "multiscale_basic_features; fitted on training images of the suite's scene")
@dataclass(eq=False)
class RandomForest(Segmenter):
    """scikit-image's trainable segmenter: a random forest on multiscale basic features.

    Supervised: :meth:`fit` must see labelled images of the kind it will segment (the
    benchmark draws ``train_images`` from the suite's scene with a seed of its own).
    """
    name: ClassVar[str] = "random-forest"
    supervised: ClassVar[bool] = True
    sigma_min: float = _param(0.5, "smallest feature scale, pixels")
    sigma_max: float = _param(8.0, "largest feature scale, pixels")
    train_images: int = _param(8, "training images drawn for fitting")
    pixels_per_image: int = _param(2000, "labelled pixels sampled per training image")
    trees: int = _param(50, "number of trees")
    max_depth: int = _param(12, "maximum depth of each tree")
    seed: int = _param(0, "seed of the pixel sampling and the forest")

    def __post_init__(self) -> None:
        self.sigma_min = check_positive("random-forest.sigma_min", self.sigma_min)
        self.sigma_max = check_positive("random-forest.sigma_max", self.sigma_max)
        if self.sigma_max < self.sigma_min:
            raise ValueError(f"random-forest.sigma_max must be >= sigma_min ({self.sigma_min}), got {self.sigma_max}")
        self.train_images = check_int("random-forest.train_images", self.train_images, minimum=1, maximum=10_000)
        self.pixels_per_image = check_int("random-forest.pixels_per_image", self.pixels_per_image, minimum=10)
        self.trees = check_int("random-forest.trees", self.trees, minimum=1, maximum=10_000)
        self.max_depth = check_int("random-forest.max_depth", self.max_depth, minimum=1, maximum=100)
        self.seed = check_int("random-forest.seed", self.seed, minimum=0, maximum=2**32 - 1)
        self._clf: Any = None
        self._num_regions = 0

    def features(self, image: np.ndarray) -> np.ndarray:
        """(H, W, F) multiscale intensity, edge and texture features."""
        return multiscale_basic_features(image, sigma_min=self.sigma_min, sigma_max=self.sigma_max)

    def fit(self, images: Tensor, labels: Tensor) -> None:
        """Fit the forest on ``pixels_per_image`` random labelled pixels of each image.

        Args:
            images: (B, 1, H, W) float; labels: (B, 1, H, W) int64 in 0..K-1.
        """
        check_images(images, 2)
        rng = np.random.default_rng(self.seed)
        feats, sparse = [], []
        for image, lab in zip(as_channels(images, 1)[:, 0].double().cpu().numpy(), labels[:, 0].cpu().numpy()):
            keep = np.zeros(lab.size, dtype=bool)
            keep[rng.choice(lab.size, min(self.pixels_per_image, lab.size), replace=False)] = True
            # fit_segmenter's convention: 0 = unlabelled, class c is c + 1
            sparse.append(np.where(keep.reshape(lab.shape), lab + 1, 0))
            feats.append(self.features(image))
        clf = RandomForestClassifier(n_estimators=self.trees, max_depth=self.max_depth, random_state=self.seed,
                                     n_jobs=1)
        self._clf = fit_segmenter(np.concatenate(sparse), np.concatenate(feats), clf)
        self._num_regions = int(labels.max()) + 1

    def segment(self, images: Tensor, num_regions: int) -> Tensor:
        k = check_images(images, num_regions)
        if self._clf is None:
            raise ValueError("random-forest is supervised: call fit(images, labels) before segment")
        if k != self._num_regions:
            raise ValueError(f"num_regions must be {self._num_regions}, the number it was fitted on; got {k}")
        return _per_image(images, lambda im: predict_segmenter(self.features(im), self._clf) - 1)

