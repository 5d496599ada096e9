"""The lab notebook's code, kept verbatim in behaviour as the reference for texseg.

Only for tests and benchmarks: ``generate_data`` is the notebook's O(N^4) direct
convolution (seconds per batch at N=128 on a CPU), so use small sizes in tests.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F


def notebook_generate_data(batch_size, image_size=128, sigma1=1.0, sigma2=0.2, sigma=25, **factory_kwargs):
    xs = torch.linspace(-image_size / 2, image_size / 2, image_size, **factory_kwargs)
    ys = torch.linspace(-image_size / 2, image_size / 2, image_size, **factory_kwargs)
    x, y = torch.meshgrid(xs, ys, indexing="xy")

    def gauss(s):
        g = torch.exp(-(x**2 + y**2) / (2 * s**2))
        return g / torch.sum(g)

    g, g1, g2, g3 = gauss(sigma), gauss(sigma1), gauss(sigma2), gauss(1)
    with warnings.catch_warnings():
        # 'same' padding with even kernels warns; the notebook ran with that warning.
        warnings.simplefilter("ignore", UserWarning)
        b = torch.randn(batch_size, 1, image_size, image_size, **factory_kwargs)
        gp = F.conv2d(b, g[None, None], padding="same")
        omega_1 = gp > 0
        omega_2 = ~omega_1
        b1 = torch.randn(batch_size, 1, image_size, image_size, **factory_kwargs)
        gp1 = F.conv2d(b1, g1[None, None], padding="same")
        b2 = torch.randn(batch_size, 1, image_size, image_size, **factory_kwargs)
        gp2 = F.conv2d(b2, g2[None, None], padding="same")
        image = gp1 * omega_1 + gp2 * omega_2
        image = F.conv2d(image, g3[None, None], padding="same")
    image -= image.amin(dim=(-2, -1), keepdim=True)
    image /= image.amax(dim=(-2, -1), keepdim=True)
    return image, omega_1.to(**factory_kwargs), gp


class MyFirtsCNN(nn.Module):
    """The notebook's CNN (sigmoid output, one BatchNorm shared by three blocks)."""

    def __init__(self, num_channels=16, kernel_size=5, bias=True):
        super().__init__()
        self.activation = nn.ReLU()
        self.bn = nn.BatchNorm2d(num_channels)
        pad = int((kernel_size - 1) / 2)
        self.conv1 = nn.Sequential(nn.Conv2d(1, num_channels, kernel_size, 1, pad, bias=bias), self.activation, self.bn)
        self.conv2 = nn.Sequential(
            nn.Conv2d(num_channels, num_channels, kernel_size, 1, pad, bias=bias), self.activation, self.bn
        )
        self.conv3 = nn.Sequential(
            nn.Conv2d(num_channels, num_channels, kernel_size, 1, pad, bias=bias), self.activation, self.bn
        )
        self.out = nn.Conv2d(num_channels, 1, kernel_size, 1, pad, bias=bias)

    def forward(self, x):
        return torch.sigmoid(self.out(self.conv3(self.conv2(self.conv1(x)))))
