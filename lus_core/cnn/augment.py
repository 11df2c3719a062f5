"""On-the-fly augmentation after Roy et al. (IEEE TMI 2020), applied to whole batches.

Four transforms, each applied to a sample with its own probability (config `train.augment`):
random affine (rotation, translation, scale, shear), multiplication by a random constant,
Gaussian blur with a random sigma, and a horizontal flip.

Design: the random parameters of a batch are drawn on the CPU from a dedicated
`torch.Generator` (always the same number of draws per batch, whatever is applied), then the
transforms run batched on the batch's device (`grid_sample`, grouped convolutions). So the
augmentation is identical on CPU and GPU, independent of the number of DataLoader workers,
cheap on a GPU, and resumable: the generator state goes into the training checkpoint.

Input and output are float tensors (N, C, H, W) with values in [0, 1] (before normalisation,
so the affine fill value 0 is black, like the ultrasound background).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F


def _pair(value, name: str) -> tuple[float, float]:
    if isinstance(value, int | float):
        raise ValueError(f"augment.{name} must be a [low, high] pair, got {value!r}")
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ValueError(f"augment.{name}: low {lo} > high {hi}")
    return lo, hi


@dataclass(frozen=True)
class AugmentConfig:
    """`train.augment` (every key; its defaults live in the config schema only)."""

    p_affine: float
    rotation: float  # degrees, U(-rotation, rotation)
    translate: float  # fraction of width / height, U(-translate, translate)
    scale: tuple[float, float]
    shear: float  # degrees (x shear), U(-shear, shear)
    p_multiply: float
    multiply: tuple[float, float]
    p_blur: float
    blur_sigma: tuple[float, float]  # pixels
    p_hflip: float

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation: every probability 0 (the ranges are then never drawn from)."""
        return cls(p_affine=0.0, rotation=0.0, translate=0.0, scale=(1.0, 1.0), shear=0.0, p_multiply=0.0,
                   multiply=(1.0, 1.0), p_blur=0.0, blur_sigma=(1.0, 1.0), p_hflip=0.0)

    @classmethod
    def from_dict(cls, d: Mapping) -> AugmentConfig:
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown, missing = set(d) - known, known - set(d)
        if unknown:
            raise ValueError(f"unknown train.augment keys: {sorted(unknown)} (known: {sorted(known)})")
        if missing:
            raise ValueError(f"train.augment lacks {sorted(missing)}: pass the validated config's whole section")
        for key in ("scale", "multiply", "blur_sigma"):
            if key in d:
                d[key] = _pair(d[key], key)
        for key in ("p_affine", "p_multiply", "p_blur", "p_hflip"):
            if key in d and not 0.0 <= float(d[key]) <= 1.0:
                raise ValueError(f"augment.{key} must be a probability in [0, 1], got {d[key]}")
        if d["blur_sigma"][0] <= 0:
            raise ValueError("augment.blur_sigma must be > 0")
        return cls(**{k: (v if isinstance(v, tuple) else float(v)) for k, v in d.items()})

    @property
    def active(self) -> bool:
        return any(p > 0 for p in (self.p_affine, self.p_multiply, self.p_blur, self.p_hflip))


class Augment:
    """Callable: `augment(x, generator) -> x'` for a float batch in [0, 1]."""

    N_DRAWS = 11  # uniform draws per sample, fixed so the generator advances the same every batch

    def __init__(self, cfg: AugmentConfig | Mapping):
        self.cfg = cfg if isinstance(cfg, AugmentConfig) else AugmentConfig.from_dict(cfg)

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        c = self.cfg
        u = torch.rand(n, self.N_DRAWS, generator=generator, dtype=torch.float64)

        def span(col, lo, hi):
            return lo + (hi - lo) * u[:, col]

        return {
            "affine": u[:, 0] < c.p_affine,
            "angle": span(1, -c.rotation, c.rotation),
            "tx": span(2, -c.translate, c.translate),
            "ty": span(3, -c.translate, c.translate),
            "scale": span(4, *c.scale),
            "shear": span(5, -c.shear, c.shear),
            "multiply": u[:, 6] < c.p_multiply,
            "factor": span(7, *c.multiply),
            "blur": u[:, 8] < c.p_blur,
            "sigma": span(9, *c.blur_sigma),
            "hflip": u[:, 10] < c.p_hflip,
        }

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, self.sample_params(len(x), generator))

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        if not x.is_floating_point() or x.ndim != 4:
            raise ValueError(f"augment expects a float (N, C, H, W) batch, got {x.dtype} {tuple(x.shape)}")
        # the parameters stay on the CPU (matrices and kernels are built there); only the
        # per-sample masks and the final small tensors travel to the batch's device
        p = params

        def select(mask, new, old):
            return torch.where(mask.to(x.device).view(-1, 1, 1, 1), new, old)

        if bool(p["affine"].any()):
            x = select(p["affine"], affine(x, p["angle"], p["tx"], p["ty"], p["scale"], p["shear"]), x)
        if bool(p["multiply"].any()):
            factor = p["factor"].to(x.device, x.dtype).view(-1, 1, 1, 1)
            x = select(p["multiply"], (x * factor).clamp(0.0, 1.0), x)
        if bool(p["blur"].any()):
            x = select(p["blur"], gaussian_blur(x, p["sigma"], sigma_max=self.cfg.blur_sigma[1]), x)
        if bool(p["hflip"].any()):
            x = select(p["hflip"], x.flip(-1), x)
        return x


def affine(
    x: torch.Tensor,
    angle: torch.Tensor,
    tx: torch.Tensor,
    ty: torch.Tensor,
    scale: torch.Tensor,
    shear: torch.Tensor,
) -> torch.Tensor:
    """Per-sample affine about the image centre: rotation and x-shear in degrees, translation as
    a fraction of the size, isotropic scale; bilinear, zero fill."""
    n, _, h, w = x.shape
    dt = torch.float64
    angle, tx, ty, scale, shear = (t.detach().to("cpu", dt) for t in (angle, tx, ty, scale, shear))
    a = torch.deg2rad(angle.to(dt))
    sh = torch.deg2rad(shear.to(dt))
    cos, sin = torch.cos(a), torch.sin(a)
    s = scale.to(dt)
    # forward map in centred pixel units: A = R(angle) @ Shear_x(shear) @ diag(s, s)
    A = torch.stack(
        [
            torch.stack([cos * s, (cos * torch.tan(sh) - sin) * s], -1),
            torch.stack([sin * s, (sin * torch.tan(sh) + cos) * s], -1),
        ],
        -2,
    )
    A_inv = torch.linalg.inv(A)
    t = torch.stack([tx.to(dt) * w, ty.to(dt) * h], -1)
    # affine_grid maps output to input in normalised coordinates: pixel = D @ normalised
    D = torch.tensor([w / 2.0, h / 2.0], dtype=dt)
    lin = A_inv * D.view(1, 1, 2) / D.view(1, 2, 1)  # D^-1 A^-1 D
    off = -(A_inv @ t.unsqueeze(-1)).squeeze(-1) / D
    theta = torch.cat([lin, off.unsqueeze(-1)], -1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, sigma_max: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (pixels), reflect padding."""
    n, c, h, w = x.shape
    smax = float(sigma.max()) if sigma_max is None else float(sigma_max)
    radius = max(1, min(math.ceil(3.0 * smax), (min(h, w) - 1) // 2))
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(r.view(1, -1) ** 2) / (2.0 * sigma.detach().to("cpu", torch.float64).view(-1, 1) ** 2))
    k = (k / k.sum(1, keepdim=True)).to(x.device, x.dtype)  # (N, K)
    k = k.repeat_interleave(c, 0)  # (N*C, K): one kernel per channel of each sample
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(n * c, 1, -1, 1), groups=n * c)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(n * c, 1, 1, -1), groups=n * c)
    return y.view(n, c, h, w)
