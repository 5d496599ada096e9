"""Texture families beyond the notebook's isotropic Gaussian, as spectral filters of white noise.

Each family turns one standard-normal noise field (B, 1, N, N) into a stationary texture
by multiplying its 2-D Fourier transform with an amplitude filter A(f) (periodic
boundary), so the texture's power spectrum is |A(f)|^2:

=========  ====================================================================
family     amplitude A(f), f = (f_y, f_x) in cycles per pixel
=========  ====================================================================
oriented   anisotropic Gaussian kernel: exp(-2 pi^2 (s_u^2 f_u^2 + s_v^2 f_v^2)) with
           u along ``angle`` (width s_u = anisotropy * sigma) and v across it (s_v = sigma):
           streaks elongated along ``angle`` (degrees, counter-clockwise from the x axis)
powerlaw   |f|^(-beta/2) (power 1/f^beta), 0 at f = 0: fractal, scale-free noise
bandpass   exp(-(|f| - f0)^2 / (2 (bandwidth f0)^2)): a ring of radius f0; with an
           ``angle`` also exp(-d^2 / (2 (pi/8)^2)), d the angular distance to the
           orientation (mod pi): Gabor-like oriented noise
=========  ====================================================================

Those textures are standardised per image (mean 0, standard deviation 1) so that only
their spectrum tells regions apart. :func:`intensity_transform` then applies the
per-region intensity changes: an optional monotone remap ``u = Phi(t) ** gamma``
(Phi the normal CDF; the marginal is then skewed, not Gaussian, gamma = 1 gives a
uniform marginal), standardised again, then ``mean + contrast * t``.
"""

from __future__ import annotations

import itertools
import math

import torch

__all__ = [
    "FAMILIES",
    "MIXED_FAMILIES",
    "bandpass_amplitude",
    "filter_noise",
    "frequency_grid",
    "intensity_transform",
    "oriented_amplitude",
    "powerlaw_amplitude",
    "radial_power",
    "spectral_orientation",
    "standardize",
]

FAMILIES = ("gaussian", "oriented", "powerlaw", "bandpass", "mosaic", "mixed")
#: The families ``texture="mixed"`` draws from, one per scene.
MIXED_FAMILIES = ("gaussian", "oriented", "powerlaw", "bandpass")


def frequency_grid(n: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_y, f_x) of ``rfft2`` of an N x N field, each (N, N // 2 + 1), cycles per pixel."""
    fy = torch.fft.fftfreq(n, device=device, dtype=dtype)[:, None]
    fx = torch.fft.rfftfreq(n, device=device, dtype=dtype)[None, :]
    return fy.expand(n, n // 2 + 1), fx.expand(n, n // 2 + 1)


def oriented_amplitude(n: int, sigma: float, anisotropy: float, angle: float, **kw) -> torch.Tensor:
    """Fourier transform of an anisotropic Gaussian kernel; see the module docstring."""
    fy, fx = frequency_grid(n, **kw)
    a = math.radians(angle)
    # Image rows grow downwards: an angle counter-clockwise on screen has direction (cos a, -sin a) in (x, y).
    fu = fx * math.cos(a) - fy * math.sin(a)
    fv = fx * math.sin(a) + fy * math.cos(a)
    return torch.exp(-2 * math.pi**2 * ((anisotropy * sigma) ** 2 * fu**2 + sigma**2 * fv**2))


def powerlaw_amplitude(n: int, beta: float, **kw) -> torch.Tensor:
    """|f|^(-beta/2), zero at f = 0."""
    fy, fx = frequency_grid(n, **kw)
    f = torch.sqrt(fy**2 + fx**2)
    return torch.where(f > 0, f.clamp(min=1e-12) ** (-beta / 2), torch.zeros_like(f))


def bandpass_amplitude(n: int, frequency: float, bandwidth: float, angle: float | None = None, **kw) -> torch.Tensor:
    """A Gaussian ring at radius ``frequency`` (relative width ``bandwidth``), optionally oriented."""
    fy, fx = frequency_grid(n, **kw)
    f = torch.sqrt(fy**2 + fx**2)
    amp = torch.exp(-((f - frequency) ** 2) / (2 * (bandwidth * frequency) ** 2))
    if angle is not None:
        # The spectrum of stripes along ``angle`` lies along the perpendicular direction.
        theta = torch.atan2(-fy, fx)
        d = torch.remainder(theta - math.radians(angle + 90) + math.pi / 2, math.pi) - math.pi / 2
        amp = amp * torch.exp(-(d**2) / (2 * (math.pi / 8) ** 2))
    return amp


def filter_noise(noise: torch.Tensor, amplitude: torch.Tensor) -> torch.Tensor:
    """Real (..., N, N) field whose spectrum is that of ``noise`` times ``amplitude``."""
    n = noise.shape[-1]
    spectrum = torch.fft.rfft2(noise.to(torch.float64) if noise.dtype == torch.float64 else noise.float())
    out = torch.fft.irfft2(spectrum * amplitude.to(spectrum.real.dtype), s=(n, n))
    return out.to(noise.dtype)


def standardize(t: torch.Tensor) -> torch.Tensor:
    """Per image mean 0, standard deviation 1 (a constant image stays 0)."""
    t = t - t.mean(dim=(-2, -1), keepdim=True)
    return t / t.std(dim=(-2, -1), keepdim=True).clamp(min=1e-12)


def intensity_transform(t: torch.Tensor, mean: float = 0.0, contrast: float = 1.0,
                        gamma: float | None = None) -> torch.Tensor:
    """Per-region intensity change of a standardised texture: remap, then mean + contrast * t.

    Args:
        t: standardised texture (mean 0, std 1).
        mean, contrast: the region's intensity mean and standard deviation.
        gamma: if given, monotone remap ``Phi(t) ** gamma`` (then standardised): the marginal
            becomes non-Gaussian (skewed for gamma != 1) while the order of pixel values is kept.
    """
    if gamma is not None:
        u = 0.5 * (1 + torch.erf(t / math.sqrt(2)))
        t = standardize(u.clamp(min=0) ** gamma)
    return mean + contrast * t


def radial_power(image: torch.Tensor, bins: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum of (..., N, N) images: (frequencies, power) per bin.

    Used to check the families' statistics (slope for powerlaw, peak for bandpass).
    """
    n = image.shape[-1]
    power = torch.fft.rfft2(image.double() - image.double().mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    power = power.reshape(-1, n, n // 2 + 1).mean(0)
    fy, fx = frequency_grid(n, dtype=torch.float64)
    f = torch.sqrt(fy**2 + fx**2)
    edges = torch.linspace(1 / n, 0.5, bins + 1, dtype=torch.float64)
    centres, values = [], []
    for lo, hi in itertools.pairwise(edges):
        sel = (f >= lo) & (f < hi)
        if bool(sel.any()):
            centres.append(float(f[sel].mean()))
            values.append(float(power[sel].mean()))
    return torch.tensor(centres), torch.tensor(values)


def spectral_orientation(image: torch.Tensor) -> float:
    """Orientation (degrees in [0, 180)) of the spatial streaks of (..., N, N) images.

    From the second moments of the power spectrum: the spectrum is narrowest along the
    streaks' direction.
    """
    n = image.shape[-1]
    power = (torch.fft.fft2(image.double()).abs() ** 2).reshape(-1, n, n).mean(0)
    fy = torch.fft.fftfreq(n, dtype=torch.float64)[:, None].expand(n, n)
    fx = torch.fft.fftfreq(n, dtype=torch.float64)[None, :].expand(n, n)
    fy = -fy  # y up, so that angles are counter-clockwise on screen
    m_xx, m_yy, m_xy = (power * fx * fx).sum(), (power * fy * fy).sum(), (power * fx * fy).sum()
    # Principal axis of the largest spread, then the perpendicular one: the streak direction.
    major = 0.5 * math.atan2(2 * float(m_xy), float(m_xx - m_yy))
    return math.degrees(major + math.pi / 2) % 180
