"""texture="mixed": each scene's family drawn at random (seeded) from gaussian/oriented/powerlaw/bandpass."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from texseg.data import SceneSpec, generate
from texseg.data.kernels import gaussian_smooth
from texseg.data.scene import region_texture
from texseg.data.textures import MIXED_FAMILIES
from texseg.training.config import TrainConfig


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_each_scene_is_exactly_one_family_drawn_after_the_partition():
    spec = SceneSpec(48, 10.0, (1.0, 0.3), texture="mixed")
    b = 12
    images, labels = generate(spec, b, generator=gen(5))
    # Rebuild by hand in the documented draw order: partition, family per scene, one noise per region.
    g = gen(5)
    field = gaussian_smooth(torch.randn(b, 1, 48, 48, generator=g), 10.0)
    assert torch.equal(labels, (field <= 0).long())
    families = torch.randint(len(MIXED_FAMILIES), (b,), generator=g)
    assert len(set(families.tolist())) >= 3  # this seed and batch really mix families
    noises = [torch.randn(b, 1, 48, 48, generator=g) for _ in range(2)]
    for i, f in enumerate(families.tolist()):
        one = replace(spec, texture=MIXED_FAMILIES[f])
        image = torch.zeros(1, 1, 48, 48)
        for region in range(2):
            image = torch.where(labels[i:i + 1] == region, region_texture(one, region, noises[region][i:i + 1]), image)
        image = gaussian_smooth(image, 1.0)
        image = (image - image.amin()) / (image - image.amin()).amax()
        torch.testing.assert_close(images[i:i + 1], image, rtol=0, atol=1e-6)


def test_mixed_is_seed_exact_and_normalised_and_other_families_unchanged():
    spec = SceneSpec(32, 8.0, (1.0, 0.3, 0.1), texture="mixed")
    a, la = generate(spec, 4, generator=gen(1))
    b, lb = generate(SceneSpec.from_dict(spec.to_dict()), 4, generator=gen(1))
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert torch.allclose(a.amin((-2, -1)), torch.zeros(4, 1)) and torch.allclose(a.amax((-2, -1)), torch.ones(4, 1))
    # The partitions are those of every other family for the same seed.
    _, lg = generate(replace(spec, texture="gaussian"), 4, generator=gen(1))
    assert torch.equal(la, lg)


def test_mixed_trains_with_matched_labels_by_default():
    config = TrainConfig(texture="mixed").validate()
    assert config.labels == "any"
    assert TrainConfig(texture="mixed", label_mode="fixed").validate().labels == "fixed"
    with pytest.raises(ValueError, match="^texture"):
        SceneSpec(texture="mixture")
